"""PyTorch quick start: train a small network on scikit-learn's digits with valley's ALTO.

Run from a checkout::

    .venv/bin/python examples/torch_quickstart.py
    .venv/bin/python examples/torch_quickstart.py --epochs 5 --implementation compiled

It trains the same 64-128-10 MLP (same initial weights) with ``backends.torch.ALTO`` (param groups from
``lamb_param_groups``: no weight decay and no trust ratio for biases), with ``E(torch.optim.AdamW)`` (the E
adaptor in front of torch's AdamW) and with plain ``torch.optim.AdamW``, prints the test accuracy of each,
then saves the ALTO checkpoint, loads it into a fresh model and optimizer, and trains one more epoch from where
it stopped.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import valley_core as vc  # noqa: E402
from backends.torch import ALTO, E, lamb_param_groups  # noqa: E402


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights for every optimizer
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def train_epoch(model, optimizer, x, y, batch_size, generator) -> float:
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
    return total / len(x)


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--implementation",
        choices=["auto", "core", "compiled"],
        default="core",
        help="valley's implementation path ('compiled' spends a while compiling first)",
    )
    args = parser.parse_args(argv)

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)

    # The paper's defaults for this batch size (alpha > 0 below batch 1024, alpha < 0 from 1024 on).
    defaults = vc.defaults_for_batch_size(args.batch_size)
    print(f"paper defaults for batch {args.batch_size}: alpha={defaults['alpha']}, betas={defaults['betas']}")

    def make_alto(model):
        groups = lamb_param_groups(model, weight_decay=defaults["weight_decay"])
        return ALTO(
            groups,
            lr=1e-2,
            alpha=defaults["alpha"],
            betas=defaults["betas"],
            eps=defaults["eps"],
            trust_eps=defaults["trust_eps"],
            norm_eps=defaults["norm_eps"],
            implementation=args.implementation,
        )

    runs = {
        "valley ALTO": make_alto,
        "valley E(AdamW)": lambda model: E(torch.optim.AdamW(model.parameters(), lr=1e-3), alpha=0.5, e_beta=0.01),
        "torch AdamW": lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3),
    }
    for name, make in runs.items():
        model = make_model()
        optimizer = make(model)
        generator = torch.Generator().manual_seed(1)
        for _ in range(args.epochs):
            loss = train_epoch(model, optimizer, x_train, y_train, args.batch_size, generator)
        print(f"{name:>16}: train loss {loss:.4f}, test accuracy {accuracy(model, x_test, y_test):.3f}")
        if name == "valley ALTO":
            alto_model, alto_optimizer = model, optimizer

    # Checkpoint: model and optimizer state (every ALTO buffer, the step counters, the hyperparameters).
    buffer = io.BytesIO()
    torch.save({"model": alto_model.state_dict(), "optimizer": alto_optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    model = make_model()
    model.load_state_dict(checkpoint["model"])
    optimizer = make_alto(model)
    optimizer.load_state_dict(checkpoint["optimizer"])
    steps = int(next(iter(optimizer.state.values()))["step"])
    loss = train_epoch(model, optimizer, x_train, y_train, args.batch_size, torch.Generator().manual_seed(2))
    print(
        f"resumed ALTO from step {steps}: one more epoch, train loss {loss:.4f}, "
        f"test accuracy {accuracy(model, x_test, y_test):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
