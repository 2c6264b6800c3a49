"""Run by test_jax_mesh.py in a subprocess with 8 CPU devices (XLA_FLAGS set by the parent).

A small MLP whose kernels are sharded over a 2x4 ("data", "model") mesh trains with ``bj.alto`` and
``bj.lamb``: (1) under ``jax.jit`` with explicit in/out shardings, the state's shardings derived from the
parameters' by ``optax.tree_utils.tree_map_params``; (2) under ``flax.nnx.Optimizer``, whose state takes its
shardings from the parameters' metadata; (3) saved at step 4 by orbax and restored into fresh shardings.
Each is compared with the same run unsharded. Prints one JSON line (``RESULT {...}``).
"""

from __future__ import annotations

import json
import sys
import tempfile

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from backends import jax as bj  # noqa: E402

STEPS = 8
#: Kernels split over both mesh axes; biases start at zero (the trust ratio's zero-norm branch) and are split.
SPECS = {
    "dense1": {"kernel": P("data", "model"), "bias": P("model")},
    "dense2": {"kernel": P("model", "data"), "bias": P("data")},
    "scale": P(),
}
OPTIMIZERS = {"alto": lambda: bj.alto(1e-2, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=1e-3)}


def initial_params(dtype):
    rng = np.random.default_rng(0)
    return {
        "dense1": {"kernel": jnp.asarray(rng.normal(size=(8, 16)) / 3, dtype), "bias": jnp.zeros(16, dtype)},
        "dense2": {"kernel": jnp.asarray(rng.normal(size=(16, 4)) / 4, dtype), "bias": jnp.zeros(4, dtype)},
        "scale": jnp.ones(16, dtype),
    }


def batches(dtype):
    rng = np.random.default_rng(1)
    return [
        (jnp.asarray(rng.normal(size=(32, 8)), dtype), jnp.asarray(rng.normal(size=(32, 4)), dtype))
        for _ in range(STEPS)
    ]


def loss(params, x, y):
    hidden = jnp.tanh(x @ params["dense1"]["kernel"] + params["dense1"]["bias"]) * params["scale"]
    return jnp.mean((hidden @ params["dense2"]["kernel"] + params["dense2"]["bias"] - y) ** 2)


def relative_difference(a, b):
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        scale = np.linalg.norm(y)
        worst = max(worst, float(np.linalg.norm(x - y) / scale) if scale > 0 else float(np.linalg.norm(x)))
    return worst


def state_matches_params(transformation, state, params):
    """For every state leaf at a parameter's position (tree_map_params): is its sharding the parameter's?"""
    flags = optax.tree_utils.tree_map_params(
        transformation,
        lambda s, p: bool(s.sharding.is_equivalent_to(p.sharding, p.ndim)),
        state,
        params,
        transform_non_params=lambda _: None,
    )
    flags = [flag for flag in jax.tree_util.tree_leaves(flags) if flag is not None]
    return {"compared": len(flags), "equal": sum(flags)}


def explicit_shardings(mesh, transformation, params):
    """The recipe of docs/jax.md: the state's shardings from the parameters' by tree_map_params."""
    param_shardings = jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), SPECS)
    abstract_state = jax.eval_shape(transformation.init, params)
    state_shardings = optax.tree_utils.tree_map_params(
        transformation,
        lambda _, sharding: sharding,
        abstract_state,
        param_shardings,
        transform_non_params=lambda _: NamedSharding(mesh, P()),
    )
    return param_shardings, state_shardings


def jit_run(mesh, make, dtype, checkpoint_at=None):
    """Trains STEPS steps (sharded when ``mesh``). With ``checkpoint_at``, also saves params and state there
    with orbax, restores them into fresh shardings and trains the remaining steps from the restored copy
    with the same compiled step. Returns (params, state, report)."""
    transformation = make()
    params = initial_params(dtype)
    data = batches(dtype)
    traces = []

    def step(params, state, x, y):
        traces.append(1)  # runs only while JAX traces (and then compiles) the step
        updates, state = transformation.update(jax.grad(loss)(params, x, y), state, params)
        return optax.apply_updates(params, updates), state

    report = {}
    if mesh is None:
        init, jitted = jax.jit(transformation.init), jax.jit(step)
        place_data = lambda batch: batch  # noqa: E731
    else:
        param_shardings, state_shardings = explicit_shardings(mesh, transformation, params)
        data_sharding = NamedSharding(mesh, P("data", None))
        params = jax.device_put(params, param_shardings)
        report["eager_init"] = state_matches_params(transformation, transformation.init(params), params)
        init = jax.jit(transformation.init, out_shardings=state_shardings)
        jitted = jax.jit(
            step,
            in_shardings=(param_shardings, state_shardings, data_sharding, data_sharding),
            out_shardings=(param_shardings, state_shardings),
        )
        place_data = lambda batch: jax.device_put(batch, data_sharding)  # noqa: E731
    state = init(params)
    restored = None
    for index, batch in enumerate(data):
        if index == checkpoint_at:
            restored, report["restored"] = orbax_round_trip(mesh, transformation, params, state)
        params, state = jitted(params, state, *place_data(batch))
        if restored is not None:
            restored = jitted(*restored, *place_data(batch))
    report["traces"] = len(traces)
    if mesh is not None:
        report["after_training"] = state_matches_params(transformation, state, params)
        report["kernel_devices"] = len(params["dense1"]["kernel"].sharding.device_set)
    if restored is not None:
        report["resumed_versus_uninterrupted"] = relative_difference(restored, (params, state))
    return params, state, report


def orbax_round_trip(mesh, transformation, params, state):
    """Saves params and state with orbax, restores them into the shardings of a fresh setup."""
    import orbax.checkpoint as ocp

    param_shardings, state_shardings = explicit_shardings(mesh, transformation, params)
    fresh_params = jax.device_put(initial_params(params["scale"].dtype), param_shardings)
    fresh_state = jax.jit(transformation.init, out_shardings=state_shardings)(fresh_params)
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, {"params": fresh_params, "state": fresh_state})
    with tempfile.TemporaryDirectory() as directory:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(f"{directory}/step4", {"params": params, "state": state})
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(f"{directory}/step4", target)
        checkpointer.close()
    same_values = all(
        bool(np.array_equal(np.asarray(a), np.asarray(b)))
        for a, b in zip(jax.tree_util.tree_leaves((params, state)), jax.tree_util.tree_leaves(restored))
    )
    same_structure = jax.tree_util.tree_structure(restored["state"]) == jax.tree_util.tree_structure(state)
    report = {
        "same_values": same_values,
        "same_structure": same_structure,
        "shardings": state_matches_params(transformation, restored["state"], restored["params"]),
    }
    return (restored["params"], restored["state"]), report


def nnx_run(mesh, make, dtype):
    """The same model and data as flax.nnx modules under nnx.Optimizer (sharded through the metadata)."""
    import contextlib

    from flax import nnx

    start = initial_params(dtype)

    def param(value, names):
        if mesh is None:
            return nnx.Param(value)
        # Placed as nnx places an initializer's output under jax.set_mesh, and annotated for the optimizer.
        return nnx.Param(jax.device_put(value, NamedSharding(mesh, P(*names))), sharding_names=names)

    class Model(nnx.Module):
        def __init__(self):
            self.kernel1 = param(start["dense1"]["kernel"], ("data", "model"))
            self.bias1 = param(start["dense1"]["bias"], ("model",))
            self.kernel2 = param(start["dense2"]["kernel"], ("model", "data"))
            self.bias2 = param(start["dense2"]["bias"], ("data",))
            self.scale = param(start["scale"], (None,))

        def __call__(self, x):
            hidden = jnp.tanh(x @ self.kernel1[...] + self.bias1[...]) * self.scale[...]
            return hidden @ self.kernel2[...] + self.bias2[...]

    context = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
    with context:
        model = Model()
        optimizer = nnx.Optimizer(model, make(), wrt=nnx.Param)

        traces = []

        @nnx.jit
        def train_step(model, optimizer, x, y):
            traces.append(1)
            grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
            optimizer.update(model, grads)

        for x, y in batches(dtype):
            train_step(model, optimizer, x, y)
        report = {"traces": len(traces)}
        params = nnx.state(model, nnx.Param)
        param_leaves = {
            jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        }
        compared = equal = 0
        for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(optimizer.opt_state))[0]:
            text = jax.tree_util.keystr(path)
            matches = [name for name in param_leaves if text.endswith(name)]
            if matches and mesh is not None:
                compared += 1
                param = param_leaves[matches[0]]
                equal += bool(leaf.sharding.is_equivalent_to(param.sharding, param.ndim))
        report["state_leaves"] = {"compared": compared, "equal": equal}
        values = {name: np.asarray(leaf) for name, leaf in param_leaves.items()}
        report["kernel_devices"] = len(param_leaves["['kernel1'].value"].sharding.device_set)
    return values, report


def main():
    assert len(jax.devices()) == 8, jax.devices()
    auto = jax.sharding.AxisType.Auto  # the compiler propagates shardings (GSPMD), as sharding rules assume
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(auto, auto))
    make = OPTIMIZERS["alto"]
    report = {}
    single = {}
    for dtype in (jnp.float64, jnp.float32):
        label = jnp.dtype(dtype).name
        sharded, sharded_state, entry = jit_run(mesh, make, dtype, checkpoint_at=4 if dtype == jnp.float64 else None)
        single[label], single_state, _ = jit_run(None, make, dtype)
        entry["relative_difference"] = relative_difference((sharded, sharded_state), (single[label], single_state))
        start = initial_params(dtype)
        entry["moved"] = min(
            relative_difference(single[label][k]["kernel"], start[k]["kernel"]) for k in ("dense1", "dense2")
        )
        report[f"jit/{label}"] = entry
    values, entry = nnx_run(mesh, make, jnp.float64)
    reference = single["float64"]
    entry["relative_difference"] = relative_difference(
        [values[f"['{k}'].value"] for k in ("bias1", "bias2", "kernel1", "kernel2", "scale")],
        [reference["dense1"]["bias"], reference["dense2"]["bias"], reference["dense1"]["kernel"]]
        + [reference["dense2"]["kernel"], reference["scale"]],
    )
    report["nnx/float64"] = entry
    print("RESULT " + json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
