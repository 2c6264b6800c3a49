"""Optimizer step time of ``backends.jax`` (ALTO, Lamb) against ``optax.lamb`` and ``optax.adamw`` (not a test).

Usage::

    .venv/bin/python benchmarks/jax_step.py                        # ~4.2M float32 parameters in 26 tensors
    .venv/bin/python benchmarks/jax_step.py --width 1024 --layers 8 --rounds 15

What is measured, in one process, on the same parameters and gradients for every optimizer: one jitted
``update`` + ``apply_updates`` (parameters and state donated, as in a training loop), called ``--calls``
times per timing, wall time per call after ``block_until_ready``. The optimizers are timed round-robin (one
timing each per round) so that other load on the machine affects them alike; the first round (compilation)
is discarded. The table gives, per optimizer, the median time per step and the median over rounds of the
ratio to ``optax.lamb`` in the same round. CPU only (``JAX_PLATFORMS=cpu``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from backends import jax as bj  # noqa: E402


def make_parameters(width: int, layers: int) -> Dict[str, Dict[str, jax.Array]]:
    """An MLP-like pytree: ``layers`` blocks of a (width, 4 width) and a (4 width, width) matrix, biases, norms."""
    rng = np.random.default_rng(0)
    tree: Dict[str, Dict[str, jax.Array]] = {}
    for i in range(layers):
        tree[f"block{i}"] = {
            "up": jnp.asarray(rng.normal(size=(width, 4 * width)) * 0.02, dtype=jnp.float32),
            "down": jnp.asarray(rng.normal(size=(4 * width, width)) * 0.02, dtype=jnp.float32),
            "bias": jnp.zeros((width,), dtype=jnp.float32),
        }
    tree["norm"] = {"scale": jnp.ones((width,), dtype=jnp.float32)}
    tree["head"] = {"w": jnp.asarray(rng.normal(size=(width, 10)) * 0.02, dtype=jnp.float32)}
    return tree


def optimizers() -> Dict[str, Callable[[], optax.GradientTransformation]]:
    """Lamb's usual settings for every Lamb; ALTO with the paper's large-batch alpha and betas."""
    return {
        "optax.lamb": lambda: optax.lamb(1e-3, b1=0.9, b2=0.99, eps=1e-6, weight_decay=1e-4),
        "valley lamb": lambda: bj.lamb(1e-3, betas=(0.9, 0.99), eps=1e-6, weight_decay=1e-4),
        "valley alto": lambda: bj.alto(1e-3, alpha=-5.0, betas=(0.99, 0.9, 0.99), eps=1e-6, weight_decay=1e-4),
        "optax.adamw": lambda: optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
    }


def timer(transformation: optax.GradientTransformation, params, grads, calls: int) -> Callable[[], float]:
    """A function returning the mean wall time of one jitted step over ``calls`` calls (state kept between)."""

    def step(params, state, grads):
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": jax.tree_util.tree_map(jnp.copy, params), "state": transformation.init(params)}

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            box["params"], box["state"] = jitted(box["params"], box["state"], grads)
        jax.block_until_ready(box["params"])
        return (time.perf_counter() - start) / calls

    return measure


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)

    params = make_parameters(args.width, args.layers)
    rng = np.random.default_rng(1)
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), dtype=p.dtype), params)
    count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    tensors = len(jax.tree_util.tree_leaves(params))
    timers = {name: timer(make(), params, grads, args.calls) for name, make in optimizers().items()}
    times: Dict[str, List[float]] = {name: [] for name in timers}
    load_before = os.getloadavg()
    for round_index in range(args.rounds + 1):
        for name, measure in timers.items():
            seconds = measure()
            if round_index > 0:  # round 0 compiles
                times[name].append(seconds)
    load_after = os.getloadavg()

    print(f"# backends.jax step time: {count / 1e6:.2f}M float32 parameters in {tensors} tensors")
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.rounds} rounds x {args.calls} calls; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print()
    print("| optimizer | median ms / step | ratio to optax.lamb (median over rounds) |")
    print("|---|---|---|")
    baseline = times["optax.lamb"]
    for name, values in times.items():
        ratios = [value / base for value, base in zip(values, baseline)]
        print(f"| {name} | {statistics.median(values) * 1e3:.2f} | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
