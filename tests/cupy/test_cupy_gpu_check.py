"""benchmarks/gpu_check.py without a GPU: argument parsing, the parity helpers, the markdown writer, and a
tiny ``--cpu-dry-run`` (NumPy and torch on the CPU; labelled as not a GPU result)."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments_defaults_out_folder_and_errors(gpu_check, monkeypatch, capsys):
    monkeypatch.setenv("OUT", "/tmp/somewhere")
    args = gpu_check.parse_args([])
    assert (args.out, args.params, args.tensors, args.parity_steps, args.cpu_dry_run) == (
        "/tmp/somewhere",
        50_000_000,
        200,
        30,
        False,
    )
    assert args.backends == ["cupy", "torch", "authors", "adamw"]
    assert args.torch_implementations == ["core", "compiled"]
    monkeypatch.delenv("OUT")
    assert args.optimizers == ["alto", "alto_vanilla", "lamb", "eadam", "eadamw", "esgd"]
    dry = gpu_check.parse_args(["--cpu-dry-run", "--tensors", "3"])
    assert (dry.out, dry.params, dry.tensors, dry.steps) == ("gpu_check_out", 200_000, 3, 2)
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--backends", "cupy,tensorflow"])
    assert "unknown ['tensorflow']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--params", "0"])


def test_relative_error_and_compare(gpu_check):
    assert gpu_check.relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert gpu_check.relative_error(np.zeros(2), np.zeros(2)) == 0.0
    assert gpu_check.relative_error(np.ones(3), np.ones(2)) == float("inf")
    assert gpu_check.relative_error(np.array([3.0, 4.0 + 5e-6]), np.array([3.0, 4.0])) == pytest.approx(1e-6)
    reference = ([np.ones(3)], {"AdamState.first.0": np.ones(3), "AdamState.count": np.asarray(2)})
    good = gpu_check.compare([np.ones(3)], {"AdamState.first.0": np.ones(3) * (1 + 1e-12)}, reference, "float64")
    assert good["passed"] and good["state_missing"] == []
    bad = gpu_check.compare([np.ones(3) * 1.1], {"AdamState.first.0": np.ones(3)}, reference, "float64")
    assert not bad["passed"] and bad["param_rel_err"] == pytest.approx(0.1)
    missing = gpu_check.compare([np.ones(3)], {}, reference, "float32")
    assert not missing["passed"] and missing["state_missing"] == ["AdamState.first.0"]


def test_markdown_writer_labels_dry_runs_and_shows_failures(gpu_check, tmp_path):
    report = {
        "dry_run": True,
        "started": "2026-01-01T00:00:00+00:00",
        "elapsed_s": 1.0,
        "environment": {"device": "CPU", "git_commit": "abc", "numpy_version": "2"},
        "copy_bandwidth": {"numpy_copyto": {"best_ms": 1.0, "GB_s": 10.0}, "copy_GB_s": 10.0},
        "parity": [
            {
                "backend": "backends.cupy",
                "optimizer": "alto",
                "dtype": "float64",
                "param_rel_err": 1e-16,
                "state_rel_err": 0.0,
                "passed": True,
            },
            {
                "backend": "backends.torch [x]",
                "optimizer": "lamb",
                "dtype": "float32",
                "passed": False,
                "error": "Boom: it broke",
            },
        ],
        "timing": [
            {
                "implementation": "backends.cupy ALTO",
                "params": 10,
                "tensors": 2,
                "step_ms_best": 1.5,
                "step_ms_median": 2.0,
                "effective_GB_s": 5.0,
                "fraction_of_copy": 0.5,
            }
        ],
        "sections": {"parity": {"status": "ok", "elapsed_s": 0.1}},
        "errors": [{"section": "timing", "error": "RuntimeError: no GPU"}],
    }
    text = gpu_check.markdown(report)
    assert gpu_check.DRY_RUN_LABEL in text and "NOT A GPU RESULT" in text
    assert "| backends.torch [x] | lamb | float32 | - | - | NO | Boom: it broke |" in text
    assert "| backends.cupy ALTO | 10 | 2 | 1.500 | 2.000 | - | 5.0000 | 50.000 | - | - |  |" in text
    assert "- timing: RuntimeError: no GPU" in text
    gpu_check.write_outputs(report, str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text())["dry_run"] is True
    assert (tmp_path / "out" / "gpu_check.md").read_text() == text


def test_tiny_cpu_dry_run_end_to_end(gpu_check, tmp_path, capsys):
    out = tmp_path / "dry"
    code = gpu_check.main(
        [
            "--cpu-dry-run",
            "--out",
            str(out),
            "--torch-implementations",
            "core",
            "--parity-steps",
            "2",
            "--params",
            "4000",
            "--tensors",
            "2",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--copy-mib",
            "1",
            "--optimizers",
            "alto,eadamw",
        ]
    )
    assert code == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True and "NOT A GPU RESULT" in report["label"]
    assert all(v["status"] == "ok" for v in report["sections"].values()), report["sections"]
    cupy_rows = [r for r in report["parity"] if r["backend"].startswith("backends.cupy")]
    assert len(cupy_rows) == 4 and all(r["passed"] for r in cupy_rows), cupy_rows
    torch_rows = [r for r in report["parity"] if r["backend"].startswith("backends.torch")]
    assert torch_rows and all(r["passed"] for r in torch_rows if "error" not in r), torch_rows
    labels = [r["implementation"] for r in report["timing"]]
    assert labels[0] == "backends.cupy ALTO (CPU mode)" and "step_ms_best" in report["timing"][0]
    assert report["timing"][0]["host_issue_ms_best"] <= report["timing"][0]["step_ms_best"] * 1.5
    assert any(label.startswith("authors' ALTO") for label in labels)
    assert "meets_70_percent_target" not in report["timing"][0]  # no target verdict from a CPU run
    assert "CPU DRY RUN" in (out / "gpu_check.md").read_text()


def test_gpu_mode_code_path_with_a_stand_in_cupy(gpu_check, tmp_path, monkeypatch):
    """The script's GPU branches (CuPy copies, device properties, kernels, timing) against the stand-in cupy
    of tests/cupy/fake_cupy.py; torch reports no CUDA here, so its rows must be recorded errors."""
    import sys
    import types

    from backends.cupy import _engine
    from tests.cupy import fake_cupy as fake

    class Array(fake.FakeDeviceArray):
        @property
        def data(self):  # cupy's MemoryPointer, as far as the copy benchmark uses it
            return types.SimpleNamespace(
                owner=self,
                copy_from_device_async=lambda src, nbytes, _dst=self: np.copyto(
                    np.asarray(_dst), np.asarray(src.owner)
                ),
            )

    def on_device(value, dtype=None):
        return np.array(value, dtype=dtype, copy=True).view(Array)

    module = fake._fake_cupy()
    module.ndarray = Array
    module.zeros = lambda shape, dtype=None: on_device(np.zeros(shape, dtype=dtype))
    module.ones = lambda n, dtype=None: on_device(np.ones(n, dtype=dtype))
    module.empty = lambda n, dtype=None: on_device(np.empty(n, dtype=dtype))
    module.array = module.asarray = lambda value, dtype=None, copy=True: on_device(np.asarray(value), dtype)
    module.copyto = lambda dst, src: np.copyto(np.asarray(dst), np.asarray(src))
    module.float32, module.float64 = np.float32, np.float64
    module.RawKernel = fake.FakeRawKernel  # the multi-tensor kernels, compiled for the host
    module.random = types.SimpleNamespace(standard_normal=lambda shape: on_device(np.random.standard_normal(shape)))
    module.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)
    device = types.SimpleNamespace(synchronize=lambda: None, id=0)
    module.cuda = types.SimpleNamespace(
        Device=lambda *args: device,
        runtime=types.SimpleNamespace(
            getDeviceCount=lambda: 1,
            getDeviceProperties=lambda index: {"name": b"stand-in"},
            runtimeGetVersion=lambda: 0,
            driverGetVersion=lambda: 0,
        ),
    )
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(_engine, "_KERNELS", {})
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a CUDA machine
    monkeypatch.setattr(fake, "_on_device", on_device)

    out = tmp_path / "stand_in"
    assert (
        gpu_check.main(
            [
                "--out",
                str(out),
                "--params",
                "4000",
                "--tensors",
                "2",
                "--parity-steps",
                "2",
                "--copy-mib",
                "1",
                "--steps",
                "1",
                "--warmup",
                "1",
                "--torch-implementations",
                "core",
                "--optimizers",
                "lamb,esgd",
            ]
        )
        == 0
    )
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["device"] == "stand-in"
    assert {"cupy_memcpy", "cupy_elementwise_copy"} <= set(report["copy_bandwidth"])
    cupy_rows = [r for r in report["parity"] if r["backend"] == "backends.cupy"]
    assert len(cupy_rows) == 4 and all(r["passed"] for r in cupy_rows), cupy_rows
    multi_rows = [r for r in report["parity"] if r["backend"] == "backends.cupy [multi_tensor]"]
    assert len(multi_rows) == 2 and all(r["passed"] for r in multi_rows), multi_rows
    timing = {r["implementation"]: r for r in report["timing"]}
    assert "step_ms_best" in timing["backends.cupy ALTO"]
    assert "meets_70_percent_target" in timing["backends.cupy ALTO"]
    assert "step_ms_best" in timing["backends.cupy ALTO, 8 tensors (launch-overhead check)"]
    assert timing["backends.cupy ALTO [multi_tensor]"]["moved_bytes_per_param"] == 48
    assert "torch unavailable" in timing["torch.optim.AdamW(fused=True)"]["error"]
