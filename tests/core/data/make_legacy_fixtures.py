"""Writes the old-layout fixtures (valley 0.1.0 state layouts) that the load tests read.

Run ONCE against the code of commit d24396a (before the state became shaped like the parameters and the
adapters' own step counters went), from a checkout of that commit::

    .venv/bin/python tests/core/data/make_legacy_fixtures.py OUT_ROOT

It writes ``OUT_ROOT/tests/jax/data/legacy_jax_states_0.1.0.pkl`` and
``OUT_ROOT/tests/core/data/legacy_state_dicts_0.1.0.pkl``: for each case the parameters and the optimizer's
checkpoint after 5 steps, the 6th step's gradients, and the parameters after the 6th step as that code computed
them. The tests load the checkpoint with today's code, take the 6th step and compare. Kept for the record; it
cannot regenerate the files with later code (that would test nothing).
"""

import pickle
import sys
from pathlib import Path

import numpy as np

STEPS = 5


def _numpy_like_cases():
    from backends import cupy as bc
    from backends import numpy as bn

    rng = np.random.default_rng(11)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    start = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(STEPS + 1)]
    cases = {}
    for name, make in {
        "numpy.ALTO": lambda p: bn.ALTO(p, lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3),
        "numpy.AdamCM": lambda p: bn.AdamCM(p, lr=1e-2, top_c=2),
        "numpy.ESGD": lambda p: bn.ESGD(p, lr=1e-2, alpha=0.5, betas=(0.01, 0.9)),
        "cupy.ALTO": lambda p: bc.ALTO(
            p, lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3, array_module="numpy"
        ),
        "cupy.EAdamW": lambda p: bc.EAdamW(p, lr=1e-2, alpha=0.5, array_module="numpy"),
    }.items():
        params = [p.copy() for p in start]
        opt = make(params)
        for g in grads[:STEPS]:
            opt.step(g)
        checkpoint = opt.state_dict()
        saved = [p.copy() for p in params]
        opt.step(grads[STEPS])
        cases[name] = {
            "params": saved,
            "state_dict": checkpoint,
            "next_grads": grads[STEPS],
            "next_params": [p.copy() for p in params],
        }
    return cases


def _jax_cases():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    from backends import jax as bj

    rng = np.random.default_rng(12)
    shapes = {"dense": {"w": (3, 4), "b": (5,)}, "norm": {"scale": (4,)}, "conv": (2, 2, 3)}
    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731

    def draw():
        return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s)), shapes, is_leaf=is_shape)

    start = draw()
    grads = [draw() for _ in range(STEPS + 1)]
    cases = {}
    for name, make in {
        "alto": lambda: bj.alto(1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3),
        "lamb": lambda: bj.lamb(1e-2),
        "eadam_cm": lambda: bj.eadam_cm(1e-2, alpha=-0.5, betas=(0.5, 0.9, 0.999), top_c=2),
        "inject_alto": lambda: optax.inject_hyperparams(bj.alto)(
            learning_rate=1e-2, alpha=-1.0, betas=(0.9, 0.9, 0.99)
        ),
        "e_adaptor_chain": lambda: optax.chain(bj.e_adaptor(-0.5, 0.5), optax.adamw(1e-2)),
    }.items():
        transformation = make()

        @jax.jit
        def step(params, state, g, transformation=transformation):
            updates, state = transformation.update(g, state, params)
            return optax.apply_updates(params, updates), state

        params, state = start, transformation.init(start)
        for g in grads[:STEPS]:
            params, state = step(params, state, g)
        next_params, _ = step(params, state, grads[STEPS])
        cases[name] = {"params": params, "state": state, "next_grads": grads[STEPS], "next_params": next_params}
    return cases


def main(out_root: str) -> None:
    root = Path(out_root)
    with open(root / "tests/core/data/legacy_state_dicts_0.1.0.pkl", "wb") as f:
        pickle.dump(_numpy_like_cases(), f, protocol=4)
    with open(root / "tests/jax/data/legacy_jax_states_0.1.0.pkl", "wb") as f:
        pickle.dump(_jax_cases(), f, protocol=4)


if __name__ == "__main__":
    main(sys.argv[1])
