"""The one GPU verification script: parity of every GPU backend with the float64 core, and ALTO step timing.

Run on a CUDA machine, from the repository root::

    python benchmarks/gpu_check.py --out results/gpu          # or with $OUT set: python benchmarks/gpu_check.py

It writes ``gpu_check.json`` and ``gpu_check.md`` into the output folder (``--out``, default ``$OUT``, else
``gpu_check_out``). Every section runs in its own ``try``/``except``: an error is recorded in the output and
the script goes on. A time budget (``--budget-s``, default 270 s) skips what would not fit.

Sections:

1. environment: device, driver, library versions, git commit;
2. copy bandwidth: device-to-device copies (CuPy ``cudaMemcpyAsync`` and torch ``copy_``), counted as
   read + write bytes;
3. parity: ``backends.cupy`` (float64 and float32) and every path of ``backends.torch`` on CUDA, for
   ALTO, ALTO vanilla, Lamb, EAdam, EAdamW and ESGD, against the float64 NumPy core: relative error of the
   parameters and of every state buffer after ``--parity-steps`` steps;
4. timing: one ALTO step on ``--params`` float32 parameters in ``--tensors`` tensors (default 50M in 200)
   for ``backends.cupy``, each ``backends.torch`` path, the authors' ALTO (PyPI ``e-optimizer-adaptor``)
   and ``torch.optim.AdamW(fused=True)``; effective bandwidth = the algorithm's minimum bytes / step time.

Installing on the GPU machine (no network; it may lack ``array-api-compat`` and ``e-optimizer-adaptor``):
carry their wheels, then ``pip install --no-index --no-deps <wheels>`` and, optionally,
``pip install --no-index --find-links <wheels> --no-deps -e .`` (the script also runs from the checkout
without it). The exact commands are in ``docs/results/gpu.md``.

``--cpu-dry-run`` runs the same code with NumPy (``backends.cupy`` in its CPU mode) and torch on the CPU at
tiny sizes, to test this script without a GPU. Its output is labelled as NOT a GPU result.
"""

from __future__ import annotations

import argparse
import datetime as _datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

DRY_RUN_LABEL = (
    "CPU DRY RUN - NOT A GPU RESULT: NumPy and torch on the CPU at tiny sizes, to test this "
    "script; its numbers say nothing about any GPU"
)

#: Parity configurations: core name -> hyperparameters (names of the valley_core factories).
PARITY_CONFIGS: Dict[str, Dict[str, Any]] = {
    "alto": dict(lr=1e-2, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2),
    "alto_vanilla": dict(lr=1e-2, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2),
    "lamb": dict(lr=1e-2, betas=(0.9, 0.999), weight_decay=1e-2),
    "eadam": dict(lr=5e-3, alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=1e-3),
    "eadamw": dict(lr=5e-3, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2),
    "esgd": dict(lr=1e-3, alpha=0.5, betas=(0.01, 0.9), weight_decay=1e-3),
}
PARITY_SHAPES = [(64, 33), (33,), (), (7, 5, 3), (1000,)]
#: Relative-error tolerances (per tensor, after the parity steps) against the float64 core.
TOLERANCE = {"float64": 1e-9, "float32": 1e-3}
#: ALTO's minimum traffic per parameter: read theta, g, b, m, v and write theta, b, m, v (float32).
ALTO_MIN_BYTES_PER_PARAM = 9 * 4
#: AdamW's minimum traffic per parameter: read theta, g, m, v and write theta, m, v (float32).
ADAMW_MIN_BYTES_PER_PARAM = 7 * 4
#: What backends.cupy's ALTO step moves per parameter (its plan's two passes; ``multi_tensor`` no longer changes
#: the kernels): first pass (read g, theta, b, m, v; write b, m, v), second pass (read m, v, theta; write theta).
CUPY_ALTO_BYTES_PER_PARAM = 12 * 4
CUPY_MULTI_TENSOR_BYTES_PER_PARAM = 12 * 4
#: Optimizers with backends.cupy's multi_tensor path.
MULTI_TENSOR_OPTIMIZERS = ("alto", "alto_vanilla", "lamb")
TARGET_FRACTION = 0.70
#: Share of the time budget parity may use (torch.compile can be slow); timing gets the rest.
PARITY_SHARE = 0.5


# -- small helpers ---------------------------------------------------------------------------------------


def relative_error(actual: Any, expected: Any) -> float:
    """``||actual - expected|| / ||expected||`` in float64 (the absolute difference when ``expected`` is 0)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    scale = float(np.linalg.norm(expected))
    difference = float(np.linalg.norm(actual - expected))
    return difference / scale if scale > 0 else difference


def parity_problem(steps: int, seed: int = 0):
    """Float64 parameters and a drifting gradient sequence (NumPy) for the parity runs."""
    rng = np.random.default_rng(seed)
    params = [np.asarray(rng.normal(size=shape)) for shape in PARITY_SHAPES]
    base = [np.asarray(rng.normal(size=shape)) for shape in PARITY_SHAPES]
    grads = []
    for k in range(steps):
        grads.append([np.asarray(b * np.cos(0.3 * k) + 0.5 * rng.normal(size=b.shape)) for b in base])
    return params, grads


def core_reference(name: str, hyperparameters: Dict[str, Any], params, grads):
    """The float64 NumPy core's final parameters and named state after the gradient sequence."""
    import valley_core as vc

    try:
        import array_api_compat.numpy as xp
    except ImportError:  # NumPy >= 2 is an array-API namespace itself
        xp = np
    transform = vc.OPTIMIZERS[name](**hyperparameters)
    params = tuple(np.array(p, dtype=np.float64) for p in params)
    state = transform.init(params, xp=xp)
    for step in grads:
        updates, state = transform.update(tuple(step), state, params, xp=xp)
        params = vc.apply_updates(params, updates)
    return [np.asarray(p) for p in params], {k: np.asarray(v) for k, v in vc.state_to_dict(state).items()}


def compare(params: Sequence[Any], state: Dict[str, Any], reference, dtype: str) -> Dict[str, Any]:
    """Worst relative errors of parameters and state buffers against the reference, and pass/fail."""
    ref_params, ref_state = reference
    param_error = max(relative_error(a, b) for a, b in zip(params, ref_params))
    buffers = {k: v for k, v in ref_state.items() if not k.endswith(".count")}
    state_errors = {k: relative_error(state[k], v) for k, v in buffers.items() if k in state}
    missing = sorted(set(buffers) - set(state))
    state_error = max(state_errors.values()) if state_errors else None
    tolerance = TOLERANCE[dtype]
    passed = param_error <= tolerance and not missing and state_error is not None and state_error <= tolerance
    return {
        "param_rel_err": param_error,
        "state_rel_err": state_error,
        "state_missing": missing,
        "tolerance": tolerance,
        "passed": bool(passed),
    }


def match_torch_state(optimizer: Any, params: Sequence[Any], ref_state: Dict[str, Any]) -> Dict[str, Any]:
    """The torch optimizer's state under the core's names (``"AdamState.first.3"``).

    ``backends.torch`` keeps, in ``optimizer.state[p]``, the core's per-tensor buffers under their core names
    without the index (``"AdamState.first"``). A buffer it does not have under that name is left out (and
    reported as missing by ``compare``).
    """
    found: Dict[str, Any] = {}
    for key in ref_state:
        base, _, index = key.rpartition(".")
        if key.endswith(".count") or not index.isdigit():
            continue
        entry = optimizer.state.get(params[int(index)], {})
        if base in entry and hasattr(entry[base], "shape"):
            found[key] = _to_numpy(entry[base])
    return found


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if type(value).__module__.startswith("cupy"):
        return value.get()
    return np.asarray(value)


class Section:
    """Runs one section with timing; an exception is recorded (with its traceback), never raised."""

    def __init__(self, report: Dict[str, Any], name: str, deadline: float) -> None:
        self.report, self.name, self.deadline = report, name, deadline

    def run(self, function: Callable[[], Any]) -> Any:
        entry = {"status": "ok"}
        self.report["sections"][self.name] = entry
        if time.perf_counter() > self.deadline:
            entry["status"] = "skipped: time budget spent"
            return None
        start = time.perf_counter()
        try:
            return function()
        except Exception as error:  # noqa: BLE001 - recorded, the script goes on
            entry["status"] = "error"
            entry["error"] = f"{type(error).__name__}: {error}"
            self.report["errors"].append(
                {"section": self.name, "error": entry["error"], "traceback": traceback.format_exc(limit=6)}
            )
            return None
        finally:
            entry["elapsed_s"] = round(time.perf_counter() - start, 3)


# -- devices -----------------------------------------------------------------------------------------------


class Device:
    """What differs between the GPU run and the CPU dry run: array creation, synchronisation, names."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.cupy = None
        self.torch = None
        self.cupy_error: Optional[str] = None
        self.torch_error: Optional[str] = None
        if not dry_run:
            try:
                from backends.cupy import import_cupy

                self.cupy = import_cupy()
            except Exception as error:  # noqa: BLE001
                self.cupy_error = f"{type(error).__name__}: {error}"
        try:
            import torch

            if not dry_run and not torch.cuda.is_available():
                self.torch_error = "torch.cuda.is_available() is False"
            else:
                self.torch = torch
        except Exception as error:  # noqa: BLE001
            self.torch_error = f"{type(error).__name__}: {error}"
        self.torch_device = "cpu" if dry_run else "cuda"
        self.cupy_module = "numpy" if dry_run else "cupy"

    # CuPy backend side (NumPy in the dry run)
    @property
    def array_xp(self) -> Any:
        if self.dry_run:
            return np
        if self.cupy is None:
            raise RuntimeError(f"CuPy unavailable: {self.cupy_error}")
        return self.cupy

    def sync(self) -> None:
        if self.dry_run:
            return
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()
        if self.torch is not None:
            self.torch.cuda.synchronize()

    def require_torch(self) -> Any:
        if self.torch is None:
            raise RuntimeError(f"torch unavailable: {self.torch_error}")
        return self.torch


# -- sections ----------------------------------------------------------------------------------------------


def environment(device: Device) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "dry_run": device.dry_run,
    }
    try:
        info["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except Exception:  # noqa: BLE001
        info["git_commit"] = None
    from importlib import metadata

    for key, distributions in (
        ("array_api_compat", ("array-api-compat",)),
        ("ALTO", ("e-optimizer-adaptor",)),
        ("cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy")),
        ("torch", ("torch",)),
        ("jax", ("jax",)),
    ):
        found = None
        for distribution in distributions:  # metadata only: nothing is imported (JAX stays off the GPU)
            try:
                found = f"{metadata.version(distribution)} ({distribution})"
                break
            except metadata.PackageNotFoundError:
                continue
        info[f"{key}_version"] = found or "not available"
    if "not available" in str(info["array_api_compat_version"]):
        info["hint"] = (
            "array-api-compat is missing: pip install --no-deps --no-index <carried wheel> (see docs/results/gpu.md)"
        )
    if device.cupy is not None:
        cupy = device.cupy
        properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info["device"] = properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    elif device.cupy_error:
        info["cupy_error"] = device.cupy_error
    if device.torch is not None and not device.dry_run:
        info["torch_device"] = device.torch.cuda.get_device_name()
        info["torch_cuda"] = device.torch.version.cuda
    if device.dry_run:
        info["device"] = f"CPU ({platform.processor() or platform.machine()}) - dry run"
    return info


def copy_bandwidth(device: Device, nbytes: int, repeats: int) -> Dict[str, Any]:
    """Device-to-device copy bandwidth in GB/s (read + write bytes), best of ``repeats``."""
    results: Dict[str, Any] = {"bytes_per_copy": nbytes}

    def best(copy: Callable[[], None]) -> Dict[str, float]:
        copy()
        device.sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            copy()
            device.sync()
            times.append(time.perf_counter() - start)
        return {"best_ms": 1e3 * min(times), "GB_s": 2 * nbytes / min(times) / 1e9}

    n = nbytes // 4
    if device.dry_run:
        src, dst = np.ones(n, dtype=np.float32), np.empty(n, dtype=np.float32)
        results["numpy_copyto"] = best(lambda: np.copyto(dst, src))
    else:
        if device.cupy is not None:
            cupy = device.cupy
            src, dst = cupy.ones(n, dtype=cupy.float32), cupy.empty(n, dtype=cupy.float32)
            results["cupy_memcpy"] = best(lambda: dst.data.copy_from_device_async(src.data, n * 4))
            results["cupy_elementwise_copy"] = best(lambda: cupy.copyto(dst, src))
            del src, dst
            cupy.get_default_memory_pool().free_all_blocks()
        if device.torch is not None:
            torch = device.torch
            src = torch.ones(n, dtype=torch.float32, device="cuda")
            dst = torch.empty_like(src)
            results["torch_copy"] = best(lambda: dst.copy_(src))
            del src, dst
            torch.cuda.empty_cache()
    measured = [v["GB_s"] for v in results.values() if isinstance(v, dict)]
    if not measured:
        raise RuntimeError("no copy could be measured (neither CuPy nor torch CUDA is usable)")
    results["copy_GB_s"] = max(measured)
    return results


def torch_paths(wanted: Sequence[str]) -> List[Dict[str, Any]]:
    """The ``backends.torch`` paths to exercise: ``implementation=`` values it offers, among ``wanted``."""
    import backends.torch as bt  # raises ImportError when the backend is not there

    offered = getattr(bt, "IMPLEMENTATIONS", None)
    if offered is None:
        return [{}]
    return [{"implementation": name} for name in wanted if name in offered]


#: backends.torch's "compiled" path exists for these (its docs); elsewhere it is not run.
COMPILED_PATH_OPTIMIZERS = ("alto", "alto_vanilla", "lamb", "eadam", "eadamw", "esgd")


def path_applies(name: str, options: Dict[str, Any]) -> bool:
    return options.get("implementation") != "compiled" or name in COMPILED_PATH_OPTIMIZERS


def reset_torch_compile(device: Device, options: Dict[str, Any]) -> None:
    """Clears torch.compile's caches before a compiled run, so that each run is measured on its own (the
    process compiles many shapes, dtypes and configurations; dynamo's recompile limit is per process)."""
    if options.get("implementation") in ("compiled", "auto") and device.torch is not None:
        try:
            device.torch._dynamo.reset()
        except Exception:  # noqa: BLE001 - best effort
            pass


def path_label(options: Dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items()) or "default"


def run_cupy_backend(device: Device, name: str, hyperparameters, params, grads, dtype: str, multi_tensor: bool = False):
    from backends import cupy as vcp

    xp = device.array_xp
    device_params = [xp.array(np.array(p, dtype=dtype)) for p in params]  # copies: params are shared
    optimizer = vcp.OPTIMIZERS[name](
        device_params, array_module=device.cupy_module, multi_tensor=multi_tensor, **hyperparameters
    )
    for step in grads:
        optimizer.step([xp.array(np.array(g, dtype=dtype)) for g in step])
    device.sync()
    return [_to_numpy(p) for p in device_params], optimizer.state_dict()["state"]


def run_torch_backend(device: Device, name: str, options, hyperparameters, params, grads, dtype: str, ref_state):
    torch = device.require_torch()
    import backends.torch as bt
    import valley_core as vc

    torch_dtype = getattr(torch, dtype)
    reset_torch_compile(device, options)
    tensors = [
        torch.nn.Parameter(torch.tensor(np.asarray(p), dtype=torch_dtype, device=device.torch_device)) for p in params
    ]
    optimizer = getattr(bt, vc.info_for(name).class_name)(tensors, **hyperparameters, **options)
    for step in grads:
        for t, g in zip(tensors, step):
            t.grad = torch.tensor(np.asarray(g), dtype=torch_dtype, device=device.torch_device)
        optimizer.step()
    device.sync()
    return [_to_numpy(t) for t in tensors], match_torch_state(optimizer, tensors, ref_state)


def parity(
    device: Device,
    steps: int,
    backends: Sequence[str],
    torch_implementations: Sequence[str],
    deadline: float,
    optimizers: Sequence[str] = tuple(PARITY_CONFIGS),
) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    params, grads = parity_problem(steps)
    try:
        paths = torch_paths(torch_implementations) if "torch" in backends else []
        torch_problem = None
    except Exception as error:  # noqa: BLE001
        paths, torch_problem = [], f"{type(error).__name__}: {error}"
    if torch_problem:
        rows.append(
            {
                "backend": "backends.torch",
                "optimizer": "all",
                "dtype": "-",
                "passed": None,
                "error": f"not run: {torch_problem}",
            }
        )
    for name in optimizers:
        hyperparameters = PARITY_CONFIGS[name]
        reference = core_reference(name, hyperparameters, params, grads)
        runs: List[Any] = [
            ("backends.cupy" + (" (CPU mode)" if device.dry_run else ""), None, dtype)
            for dtype in ("float64", "float32")
            if "cupy" in backends
        ]
        if "cupy" in backends and not device.dry_run and name in MULTI_TENSOR_OPTIMIZERS:
            runs += [("backends.cupy [multi_tensor]", "multi_tensor", dtype) for dtype in ("float64", "float32")]
        runs += [
            (f"backends.torch [{path_label(options)}]", options, dtype)
            for options in paths
            if path_applies(name, options)
            for dtype in ("float64", "float32")
        ]
        for backend, options, dtype in runs:
            row: Dict[str, Any] = {"backend": backend, "optimizer": name, "dtype": dtype, "steps": steps}
            if time.perf_counter() > deadline:
                row.update(passed=None, error="skipped: time budget spent")
                rows.append(row)
                continue
            try:
                if options is None or options == "multi_tensor":
                    out_params, out_state = run_cupy_backend(
                        device, name, hyperparameters, params, grads, dtype, multi_tensor=options == "multi_tensor"
                    )
                else:
                    out_params, out_state = run_torch_backend(
                        device, name, options, hyperparameters, params, grads, dtype, reference[1]
                    )
                row.update(compare(out_params, out_state, reference, dtype))
            except Exception as error:  # noqa: BLE001
                row.update(passed=False, error=f"{type(error).__name__}: {error}")
            rows.append(row)
    return rows


def _timing_shapes(total: int, tensors: int):
    per = max(total // tensors, 1)
    side = int(round(per**0.5))
    if side * side == per:
        return [(side, side)] * tensors
    return [(per,)] * tensors


def time_steps(device: Device, step: Callable[[], Any], warmup: int, steps: int, repeats: int = 3):
    for _ in range(warmup):
        step()
    device.sync()
    per_step, issue = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        issued = time.perf_counter()  # the host is done launching; the device may still be working
        device.sync()
        per_step.append((time.perf_counter() - start) / steps)
        issue.append((issued - start) / steps)
    # host_issue_ms close to step_ms: the step is bound by the host (launch overhead), not by the device.
    return {
        "step_ms_best": 1e3 * min(per_step),
        "step_ms_median": 1e3 * sorted(per_step)[len(per_step) // 2],
        "host_issue_ms_best": 1e3 * min(issue),
    }


def timing(
    device: Device,
    total: int,
    tensors: int,
    warmup: int,
    steps: int,
    copy_gb_s: Optional[float],
    deadline: float,
    backends: Sequence[str],
    torch_implementations: Sequence[str],
    extra_tensor_counts: Sequence[int] = (),
) -> List[Dict[str, Any]]:
    """ALTO step time for each implementation; AdamW fused as the yardstick of a tuned optimizer."""
    rows: List[Dict[str, Any]] = []
    alto_hp = dict(lr=1e-3, alpha=-5.0, betas=(0.99, 0.9, 0.99), eps=1e-6, weight_decay=1e-4)

    def cupy_alto(count, multi_tensor=False):
        def setup():
            from backends import cupy as vcp

            xp = device.array_xp
            rng = xp.random if not device.dry_run else np.random
            shapes = _timing_shapes(total, count)
            params = [rng.standard_normal(shape).astype("float32") for shape in shapes]
            grads = [rng.standard_normal(shape).astype("float32") for shape in shapes]
            optimizer = vcp.ALTO(params, array_module=device.cupy_module, multi_tensor=multi_tensor, **alto_hp)
            moved = CUPY_MULTI_TENSOR_BYTES_PER_PARAM if multi_tensor else CUPY_ALTO_BYTES_PER_PARAM
            return lambda: optimizer.step(grads), moved

        return setup

    def torch_setup(make_optimizer, bytes_per_param, count):
        def setup():
            torch = device.require_torch()
            shapes = _timing_shapes(total, count)
            params = [torch.nn.Parameter(torch.randn(shape, device=device.torch_device)) for shape in shapes]
            for p in params:
                p.grad = torch.randn_like(p)
            optimizer = make_optimizer(params)
            return optimizer.step, bytes_per_param

        return setup

    def backend_torch(options):
        def make(params):
            import backends.torch as bt

            reset_torch_compile(device, options)
            return bt.ALTO(params, **alto_hp, **options)

        return make

    def authors(params):
        import ALTO as authors_module

        return authors_module.ALTO(params, lr=1e-3, betas=(0.99, 0.9, 0.99), alp=-5, eps=1e-6, weight_decay=1e-4)

    def adamw_fused(params):
        return device.require_torch().optim.AdamW(params, lr=1e-3, weight_decay=1e-2, fused=True)

    candidates = []
    if "cupy" in backends:
        candidates.append(
            (
                f"backends.cupy ALTO{' (CPU mode)' if device.dry_run else ''}",
                tensors,
                ALTO_MIN_BYTES_PER_PARAM,
                cupy_alto(tensors),
                True,
            )
        )
        if not device.dry_run:
            candidates.append(
                (
                    "backends.cupy ALTO [multi_tensor]",
                    tensors,
                    ALTO_MIN_BYTES_PER_PARAM,
                    cupy_alto(tensors, multi_tensor=True),
                    True,
                )
            )
    paths: List[Dict[str, Any]] = []
    if "torch" in backends:
        try:
            paths = torch_paths(torch_implementations)
        except Exception as error:  # noqa: BLE001
            rows.append({"implementation": "backends.torch ALTO", "error": f"not run: {type(error).__name__}: {error}"})
    if "adamw" in backends:
        candidates.append(
            (
                "torch.optim.AdamW(fused=True)",
                tensors,
                ADAMW_MIN_BYTES_PER_PARAM,
                torch_setup(adamw_fused, None, tensors),
                False,
            )
        )
    if "authors" in backends:
        candidates.append(
            (
                "authors' ALTO (e-optimizer-adaptor 0.1.0)",
                tensors,
                ALTO_MIN_BYTES_PER_PARAM,
                torch_setup(authors, None, tensors),
                False,
            )
        )
    for options in paths:
        candidates.append(
            (
                f"backends.torch ALTO [{path_label(options)}]",
                tensors,
                ALTO_MIN_BYTES_PER_PARAM,
                torch_setup(backend_torch(options), None, tensors),
                True,
            )
        )
    for count in extra_tensor_counts:
        if "cupy" in backends:
            candidates.append(
                (
                    f"backends.cupy ALTO, {count} tensors (launch-overhead check)",
                    count,
                    ALTO_MIN_BYTES_PER_PARAM,
                    cupy_alto(count),
                    True,
                )
            )
            candidates.append(
                (
                    f"backends.cupy ALTO [multi_tensor], {count} tensors",
                    count,
                    ALTO_MIN_BYTES_PER_PARAM,
                    cupy_alto(count, multi_tensor=True),
                    True,
                )
            )
        for options in paths[-1:]:
            candidates.append(
                (
                    f"backends.torch ALTO [{path_label(options)}], {count} tensors",
                    count,
                    ALTO_MIN_BYTES_PER_PARAM,
                    torch_setup(backend_torch(options), None, count),
                    True,
                )
            )

    for label, count, min_bytes, setup, is_valley in candidates:
        row: Dict[str, Any] = {
            "implementation": label,
            "params": total,
            "tensors": count,
            "dtype": "float32",
            "min_bytes_per_param": min_bytes,
            "valley_fused_path": is_valley,
        }
        if time.perf_counter() > deadline:
            row["error"] = "skipped: time budget spent"
            rows.append(row)
            continue
        try:
            step, moved_bytes_per_param = setup()
            row.update(time_steps(device, step, warmup, steps))
            seconds = row["step_ms_best"] / 1e3
            row["effective_GB_s"] = min_bytes * total / seconds / 1e9
            if moved_bytes_per_param:
                row["moved_bytes_per_param"] = moved_bytes_per_param
                row["moved_GB_s"] = moved_bytes_per_param * total / seconds / 1e9
            if copy_gb_s:
                row["fraction_of_copy"] = row["effective_GB_s"] / copy_gb_s
                if is_valley and not device.dry_run:
                    row["meets_70_percent_target"] = bool(row["fraction_of_copy"] >= TARGET_FRACTION)
        except Exception as error:  # noqa: BLE001
            row["error"] = f"{type(error).__name__}: {error}"
        finally:
            step = setup = None  # noqa: F841 - free the buffers before the next implementation
            _free(device)
        rows.append(row)
        print(f"gpu_check: timed {label}: {row.get('step_ms_best', row.get('error'))}", flush=True)
    return rows


def _free(device: Device) -> None:
    import gc

    gc.collect()
    if device.cupy is not None:
        device.cupy.get_default_memory_pool().free_all_blocks()
    if device.torch is not None and not device.dry_run:
        device.torch.cuda.empty_cache()


# -- output ------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def markdown(report: Dict[str, Any]) -> str:
    """The report as a markdown page (the JSON has everything; this is the readable summary)."""
    lines = [f"# GPU check ({'CPU DRY RUN' if report['dry_run'] else 'GPU run'})", ""]
    if report["dry_run"]:
        lines += [f"**{DRY_RUN_LABEL}.**", ""]
    env = report.get("environment") or {}
    lines += [
        f"- date (UTC): {report['started']}",
        f"- device: {env.get('device', 'unknown')}",
        f"- git commit: {env.get('git_commit')}",
        f"- total time: {_fmt(report.get('elapsed_s'))} s",
        "",
    ]
    lines += ["| library | version |", "|---|---|"]
    lines += [f"| {k[:-8]} | {v} |" for k, v in env.items() if k.endswith("_version")]
    lines.append("")
    copy = report.get("copy_bandwidth")
    lines += ["## Copy bandwidth", ""]
    if copy:
        lines += ["| method | best ms | GB/s (read + write) |", "|---|---|---|"]
        lines += [
            f"| {k} | {_fmt(v['best_ms'])} | {_fmt(v['GB_s'], 4)} |" for k, v in copy.items() if isinstance(v, dict)
        ]
        lines += ["", f"Device copy bandwidth used below: **{_fmt(copy['copy_GB_s'], 4)} GB/s**.", ""]
    else:
        lines += ["not measured (see errors)", ""]
    lines += [
        "## Parity with the float64 NumPy core",
        "",
        f"Relative error per tensor (worst tensor) after the parity steps; tolerance {TOLERANCE}.",
        "",
        "| backend | optimizer | dtype | params rel. err | state rel. err | pass | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report.get("parity") or []:
        lines.append(
            f"| {row['backend']} | {row['optimizer']} | {row['dtype']} | {_fmt(row.get('param_rel_err'))} "
            f"| {_fmt(row.get('state_rel_err'))} | {_fmt(row.get('passed'))} | {row.get('error', '')} |"
        )
    lines += [
        "",
        "## ALTO step time",
        "",
        "Effective bandwidth = minimum bytes of the algorithm (ALTO: read theta, g, b, m, v and write "
        "theta, b, m, v = 36 B/param in float32; AdamW: 28 B/param) / best step time. The authors' ALTO is "
        "given ALTO's minimum although it moves more. 'moved' counts what backends.cupy's kernels "
        "actually read and write (48 B/param).",
        "",
        "'host ms' is the time the host spends issuing a step (close to the step time: launch-bound).",
        "",
        "| implementation | params | tensors | step ms (best) | step ms (median) | host ms | effective GB/s | "
        "% of copy | >= 70% target | moved GB/s | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.get("timing") or []:
        fraction = row.get("fraction_of_copy")
        lines.append(
            f"| {row['implementation']} | {_fmt(row.get('params'))} | {_fmt(row.get('tensors'))} | "
            f"{_fmt(row.get('step_ms_best'))} | {_fmt(row.get('step_ms_median'))} | "
            f"{_fmt(row.get('host_issue_ms_best'))} | "
            f"{_fmt(row.get('effective_GB_s'), 4)} | "
            f"{_fmt(100 * fraction if fraction is not None else None)} | "
            f"{_fmt(row.get('meets_70_percent_target'))} | {_fmt(row.get('moved_GB_s'), 4)} | "
            f"{row.get('error', '')} |"
        )
    lines += ["", "## Sections", "", "| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {k} | {v['status']} | {_fmt(v.get('elapsed_s'))} |" for k, v in report["sections"].items()]
    if report["errors"]:
        lines += ["", "## Errors", ""]
        lines += [f"- {e['section']}: {e['error']}" for e in report["errors"]]
    return "\n".join(lines) + "\n"


def write_outputs(report: Dict[str, Any], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gpu_check.json"), "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    with open(os.path.join(out, "gpu_check.md"), "w") as handle:
        handle.write(markdown(report))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="valley GPU check: parity with the core and ALTO step timing")
    parser.add_argument(
        "--out",
        default=os.environ.get("OUT") or "gpu_check_out",
        help="output folder (default: $OUT, else ./gpu_check_out)",
    )
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="NumPy/torch-CPU at tiny sizes: tests the script, NOT a GPU result"
    )
    parser.add_argument("--params", type=int, default=None, help="timing: parameters (default 50M; dry run 200k)")
    parser.add_argument("--tensors", type=int, default=None, help="timing: tensors (default 200; dry run 20)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 20; dry run 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5; dry run 1)")
    parser.add_argument("--parity-steps", type=int, default=None, help="parity steps (default 30; dry run 5)")
    parser.add_argument("--copy-mib", type=int, default=None, help="copy buffer MiB (default 1024; dry run 8)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop starting new work after this")
    parser.add_argument(
        "--skip", action="append", default=[], choices=("copy", "parity", "timing"), help="skip a section (repeatable)"
    )
    parser.add_argument(
        "--backends",
        default="cupy,torch,authors,adamw",
        help="comma-separated subset of cupy,torch,authors,adamw (authors/adamw: timing only)",
    )
    parser.add_argument(
        "--optimizers",
        default=",".join(PARITY_CONFIGS),
        help=f"parity: comma-separated subset of {','.join(PARITY_CONFIGS)}",
    )
    parser.add_argument(
        "--torch-implementations",
        default="core,compiled",
        help="backends.torch implementation= values to run (default core,compiled)",
    )
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    for name, gpu_default, dry_default in (
        ("params", 50_000_000, 200_000),
        ("tensors", 200, 20),
        ("steps", 20, 2),
        ("warmup", 5, 1),
        ("parity_steps", 30, 5),
        ("copy_mib", 1024, 8),
    ):
        if getattr(args, name) is None:
            setattr(args, name, dry_default if dry else gpu_default)
    for name in ("params", "tensors", "steps", "parity_steps", "copy_mib"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(args.backends) - {"cupy", "torch", "authors", "adamw"})
    if unknown:
        parser.error(f"--backends: unknown {unknown}; choose from cupy, torch, authors, adamw")
    args.torch_implementations = [i for i in args.torch_implementations.split(",") if i]
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    unknown = sorted(set(args.optimizers) - set(PARITY_CONFIGS))
    if unknown:
        parser.error(f"--optimizers: unknown {unknown}; choose from {', '.join(PARITY_CONFIGS)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.budget_s
    report: Dict[str, Any] = {
        "dry_run": bool(args.cpu_dry_run),
        "label": DRY_RUN_LABEL if args.cpu_dry_run else "GPU run",
        "started": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
        "arguments": vars(args),
        "sections": {},
        "errors": [],
    }
    device = Device(args.cpu_dry_run)

    def checkpoint(section: str) -> None:  # partial results survive a kill
        report["elapsed_s"] = round(time.perf_counter() - start, 2)
        write_outputs(report, args.out)
        print(f"gpu_check: {section} done at {report['elapsed_s']} s", flush=True)

    report["environment"] = Section(report, "environment", deadline).run(lambda: environment(device))
    checkpoint("environment")
    copy = None
    if "copy" not in args.skip:
        copy = Section(report, "copy_bandwidth", deadline).run(
            lambda: copy_bandwidth(device, args.copy_mib * 2**20, repeats=5)
        )
    report["copy_bandwidth"] = copy
    checkpoint("copy bandwidth")
    if "parity" not in args.skip:
        parity_deadline = start + PARITY_SHARE * args.budget_s  # leaves the rest of the budget to timing
        report["parity"] = Section(report, "parity", deadline).run(
            lambda: parity(
                device, args.parity_steps, args.backends, args.torch_implementations, parity_deadline, args.optimizers
            )
        )
        checkpoint("parity")
    if "timing" not in args.skip:
        extra = () if args.cpu_dry_run else (8,)
        report["timing"] = Section(report, "timing", deadline).run(
            lambda: timing(
                device,
                args.params,
                args.tensors,
                args.warmup,
                args.steps,
                copy["copy_GB_s"] if copy else None,
                deadline,
                args.backends,
                args.torch_implementations,
                extra,
            )
        )
    report["elapsed_s"] = round(time.perf_counter() - start, 2)
    write_outputs(report, args.out)
    print(markdown(report))
    print(f"gpu_check: wrote {os.path.join(args.out, 'gpu_check.json')} and gpu_check.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
