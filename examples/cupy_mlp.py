"""A raw CuPy MLP on scikit-learn's digits, trained with ``backends.cupy.ALTO``.

Forward and backward passes are written by hand in CuPy (no autograd framework): a 64-128-10 network with a
ReLU and a softmax cross-entropy, mini-batches of 64, a held-out test split. Run on a CUDA machine::

    python examples/cupy_mlp.py --epochs 30

Without CUDA it stops with the backend's RuntimeError ("CUDA is not available ..."). ``--array-module numpy``
runs the very same script with NumPy arrays and the optimizer's CPU mode: a check of the script's logic on a
machine without a GPU, not a GPU result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def load_digits_split(seed: int):
    """Digits scaled to [0, 1], split 75/25 (stratified), as float32 NumPy arrays."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    return train_test_split(x, data.target.astype(np.int64), test_size=0.25, random_state=seed, stratify=data.target)


def init_params(xp, rng, sizes):
    """He-initialised weights and zero biases, as arrays of ``xp``."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append(xp.asarray(rng.normal(0.0, (2.0 / fan_in) ** 0.5, (fan_in, fan_out)).astype("float32")))
        params.append(xp.zeros((fan_out,), dtype=xp.float32))
    return params


def forward_backward(xp, params, x, y):
    """Loss and gradients of a 2-layer ReLU MLP with softmax cross-entropy (mean over the batch)."""
    w1, b1, w2, b2 = params
    hidden_pre = x @ w1 + b1
    hidden = xp.maximum(hidden_pre, 0)
    logits = hidden @ w2 + b2
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = xp.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -xp.log(probabilities[xp.arange(n), y] + 1e-12).mean()
    d_logits = probabilities
    d_logits[xp.arange(n), y] -= 1
    d_logits /= n
    d_w2 = hidden.T @ d_logits
    d_b2 = d_logits.sum(axis=0)
    d_hidden = (d_logits @ w2.T) * (hidden_pre > 0)
    d_w1 = x.T @ d_hidden
    d_b1 = d_hidden.sum(axis=0)
    return loss, [d_w1, d_b1, d_w2, d_b2]


def accuracy(xp, params, x, y) -> float:
    w1, b1, w2, b2 = params
    predictions = (xp.maximum(x @ w1 + b1, 0) @ w2 + b2).argmax(axis=1)
    return float((predictions == y).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--array-module",
        choices=("cupy", "numpy"),
        default="cupy",
        help="numpy: run the same script on the CPU (a logic check, not a GPU result)",
    )
    args = parser.parse_args(argv)

    import numpy as np

    from backends.cupy import ALTO
    from valley_core import defaults_for_batch_size

    if args.array_module == "cupy":
        try:
            from backends.cupy import import_cupy

            xp = import_cupy()
        except RuntimeError as error:
            print(f"cupy_mlp: {error}", file=sys.stderr)
            return 1
    else:
        xp = np
        print("cupy_mlp: --array-module numpy: CPU check of the script, NOT a GPU run")

    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    x_train, x_test, y_train, y_test = (xp.asarray(a) for a in (x_train, x_test, y_train, y_test))
    rng = np.random.default_rng(args.seed)
    params = init_params(xp, rng, (64, 128, 10))
    hyperparameters = defaults_for_batch_size(args.batch_size)  # the paper's small-batch ALTO defaults
    # Biases start at zero: keep them out of the trust ratio and the decay (see valley_core.reductions).
    is_matrix = [p.ndim > 1 for p in params]
    optimizer = ALTO(
        params,
        lr=args.lr,
        weight_decay_mask=is_matrix,
        trust_ratio_mask=is_matrix,
        array_module=args.array_module,
        **hyperparameters,
    )
    start = time.perf_counter()
    n = x_train.shape[0]
    for epoch in range(1, args.epochs + 1):
        order = xp.asarray(rng.permutation(n))
        total = xp.zeros((), dtype=xp.float32)  # summed on the device: no host sync per batch
        for first in range(0, n, args.batch_size):
            batch = order[first : first + args.batch_size]
            loss, grads = forward_backward(xp, params, x_train[batch], y_train[batch])
            optimizer.step(grads)
            total += loss * batch.shape[0]
        if epoch == 1 or epoch % 5 == 0 or epoch == args.epochs:
            print(
                f"epoch {epoch:3d}  train loss {float(total) / n:.4f}  test accuracy "
                f"{accuracy(xp, params, x_test, y_test):.4f}"
            )
    print(
        f"final test accuracy {accuracy(xp, params, x_test, y_test):.4f} "
        f"({args.array_module}, {time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
