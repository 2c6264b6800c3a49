"""Run by test_jax_sharding.py in a subprocess with two CPU devices (XLA_FLAGS set by the parent).

Trains the same problem with parameters sharded over a 2-device mesh and unsharded, under jit, and prints
one JSON line: the largest relative difference per optimizer, whether the results stayed sharded, and how
many times each sharded step compiled.
"""

import json

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from backends import jax as bj  # noqa: E402

compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: compiles.append(event) if event.endswith("backend_compile_duration") else None
)


def problem(steps):
    rng = np.random.default_rng(0)
    # Rows of very different scale per shard: a per-shard norm would give each half its own trust ratio.
    scale = np.concatenate([np.full((4, 1), 10.0), np.full((4, 1), 0.1)])
    params = {"w": rng.normal(size=(8, 6)) * scale, "b": rng.normal(size=(6,)), "v": rng.normal(size=(4,))}
    grads = [{k: rng.normal(size=v.shape) * (1 + 0.1 * i) for k, v in params.items()} for i in range(steps)]
    return params, grads


def train(transformation, params, grads, place):
    params = place(params)
    state = transformation.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = transformation.update(g, state, params)
        return optax.apply_updates(params, updates), state

    compiles.clear()
    for g in grads:
        params, state = step(params, state, place(g))
    return params, len(compiles)


def main():
    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    specs = {"w": P("data", None), "b": P("data"), "v": P()}

    def sharded(tree):
        return {k: jax.device_put(jnp.asarray(v), NamedSharding(mesh, specs[k])) for k, v in tree.items()}

    def single(tree):
        return {k: jnp.asarray(v) for k, v in tree.items()}

    params, grads = problem(30)
    report = {}
    for name, make in {
        "alto": lambda: bj.alto(1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3),
        "lamb": lambda: bj.lamb(1e-2),
        "eadamw": lambda: bj.eadamw(1e-2),
        "adam_cm": lambda: bj.adam_cm(1e-2, top_c=2),
    }.items():
        a, a_compiles = train(make(), params, grads, sharded)
        b, _ = train(make(), params, grads, single)
        difference = max(
            float(np.linalg.norm(np.asarray(a[k]) - np.asarray(b[k])) / np.linalg.norm(np.asarray(b[k]))) for k in a
        )
        moved = min(float(np.linalg.norm(np.asarray(b[k]) - params[k]) / np.linalg.norm(params[k])) for k in b)
        report[name] = {
            "relative_difference": difference,
            "moved": moved,
            "w_devices": len(a["w"].sharding.device_set),
            "w_spec": str(a["w"].sharding.spec),
            "compiles": a_compiles,
        }
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()
