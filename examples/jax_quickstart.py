"""JAX quick start: a plain-JAX MLP on scikit-learn's digits with valley's ALTO as an optax transformation.

Run from a checkout::

    .venv/bin/python examples/jax_quickstart.py
    .venv/bin/python examples/jax_quickstart.py --epochs 20 --batch-size 256

It trains the same 64-128-10 MLP (same initial weights) with ``backends.jax.alto`` (no weight decay and no
trust ratio for the biases, through optax-style masks), with ``optax.chain(backends.jax.e_adaptor(...),
optax.adamw(...))`` (the E adaptor in front of optax's AdamW) and with plain ``optax.adamw``; the whole
train step is one ``jax.jit``. It prints the test accuracy of each, then pickles ALTO's parameters and
optimizer state, loads them and trains one more epoch from where it stopped.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from backends import jax as bj  # noqa: E402


def init_mlp(key: jax.Array, sizes=(64, 128, 10)) -> dict:
    """He-initialised weights, zero biases: ``{"layer0": {"w", "b"}, "layer1": {...}}``."""
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        params[f"layer{i}"] = {
            "w": jax.random.normal(sub, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in),
            "b": jnp.zeros((fan_out,)),
        }
    return params


def logits(params: dict, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(x @ params["layer0"]["w"] + params["layer0"]["b"])
    return h @ params["layer1"]["w"] + params["layer1"]["b"]


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()


def is_matrix(params: dict) -> dict:
    """The optax-style mask: True for weight matrices, False for biases (no decay, no trust ratio)."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_step(optimizer: optax.GradientTransformation):
    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step


def train(optimizer, params, state, data, epochs, batch_size, seed):
    x_train, y_train = data
    step = make_step(optimizer)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order) - batch_size + 1, batch_size):  # full batches: one compiled shape
            index = order[start : start + batch_size]
            params, state, _ = step(params, state, x_train[index], y_train[index])
    return params, state


def accuracy(params, x, y) -> float:
    return float(jnp.mean(jnp.argmax(logits(params, x), axis=-1) == y))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    data = (jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train))
    test = (jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test))
    start = init_mlp(jax.random.PRNGKey(0))

    optimizers = {
        "valley ALTO": bj.alto(
            learning_rate=1e-2,
            alpha=-1.0,
            betas=(0.9, 0.9, 0.99),
            weight_decay=1e-4,
            weight_decay_mask=is_matrix,
            trust_ratio_mask=is_matrix,
        ),
        "E(optax.adamw)": optax.chain(bj.e_adaptor(alpha=0.5, beta1=0.01), optax.adamw(3e-3, weight_decay=1e-4)),
        "optax.adamw": optax.adamw(3e-3, weight_decay=1e-4),
    }
    for name, optimizer in optimizers.items():
        params, state = train(optimizer, start, optimizer.init(start), data, args.epochs, args.batch_size, seed=0)
        print(f"{name:>15}: test accuracy {accuracy(params, *test):.4f} after {args.epochs} epochs")
        if name == "valley ALTO":
            alto_params, alto_state = params, state

    # Checkpoint: the optimizer state is a pytree of arrays; pickle (or orbax / flax.serialization) stores it.
    blob = pickle.dumps({"params": alto_params, "opt_state": alto_state})
    restored = pickle.loads(blob)
    params, _ = train(
        optimizers["valley ALTO"], restored["params"], restored["opt_state"], data, 1, args.batch_size, seed=1
    )
    print(f"{'ALTO resumed':>15}: test accuracy {accuracy(params, *test):.4f} after one more epoch ({len(blob)} bytes)")


if __name__ == "__main__":
    main()
