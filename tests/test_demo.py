"""Smoke tests of ``valley demo`` (tiny configurations, seconds): NumPy and torch paths."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("sklearn")

from valley_cli import demo  # noqa: E402
from valley_cli.main import main  # noqa: E402


def _check_rows(rows, config):
    assert len(rows) == len(config.batch_sizes) * len(config.optimizers)
    assert [row["optimizer"] for row in rows[: len(config.optimizers)]] == list(config.optimizers)
    for row in rows:
        assert set(demo.DEMO_COLUMNS) <= set(row)
        assert row["test accuracy"].endswith("%") and "±" in row["test accuracy"]
        assert row["diverged"] == 0
        # every optimizer trained: the training loss went down
        assert row["final_train_loss_mean"] < row["initial_train_loss_mean"], row
        assert 0.0 <= row["test_accuracy_mean"] <= 1.0


def test_digits_split_is_fixed_and_disjoint():
    a, b = demo.load_digits_split(), demo.load_digits_split()
    assert [len(a.y_train), len(a.y_val), len(a.y_test)] == [1197, demo.VALIDATION_SIZE, demo.TEST_SIZE]
    for x, y in zip(a, b):
        assert (x == y).all()


def test_batch_indices_drop_the_last_partial_batch():
    batches = list(demo.batch_indices(10, 4, 5, seed=0))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4]
    assert sorted(list(batches[0]) + list(batches[1])) != list(range(10))  # 2 of the 10 left out per epoch
    assert all(len(b) == 10 for b in demo.batch_indices(10, 10, 3, seed=0))


def test_alto_uses_the_papers_large_batch_defaults():
    from valley_core import defaults_for_batch_size

    hp = demo.optimizer_hyperparameters("ALTO", 1197)
    for key, value in defaults_for_batch_size(1197).items():
        assert hp[key] == value
    assert hp["alpha"] == -5.0 and hp["betas"][0] == 0.99


def test_numpy_backend_trains_every_optimizer():
    config = demo.DemoConfig(backend="numpy", batch_sizes=(0, 256), seeds=(0, 1), steps=12, progress=False)
    rows, runs = demo.run_demo(config)
    _check_rows(rows, config)
    assert len(runs) == 2 * 4 * 2
    assert all(len(run.batch_losses) == 12 and len(run.curve) == 12 for run in runs)


def test_numpy_mlp_gradient_matches_finite_differences():
    import numpy as np

    data = demo.load_digits_split()
    model = demo.NumpyMLP((64, 8, 10), seed=0)
    model.params = [p.astype(np.float64) for p in model.params]
    x, y = data.x_train[:16].astype(np.float64), data.y_train[:16]
    _, grads = model.loss_and_grads(x, y)
    rng = np.random.default_rng(0)
    for index in range(len(model.params)):
        flat = model.params[index].reshape(-1)
        k = int(rng.integers(flat.size))
        old = flat[k]
        flat[k] = old + 1e-5
        up = model.loss(x, y)
        flat[k] = old - 1e-5
        down = model.loss(x, y)
        flat[k] = old
        assert abs((up - down) / 2e-5 - grads[index].reshape(-1)[k]) < 1e-4


def test_cli_numpy_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--quick",
                "--backend",
                "numpy",
                "--seeds",
                "1",
                "--steps",
                "6",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    header = "| " + " | ".join(demo.DEMO_COLUMNS)
    assert any(line.startswith("| batch") and "test accuracy" in line for line in text.splitlines()), text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + 2 * 4  # header + 2 batch sizes x 4 optimizers
    assert header.split(" | ")[0] in table[0]
    for name in demo.DEMO_OPTIMIZERS:
        assert sum(f"| {name} " in line for line in table) == 2
    assert os.path.getsize(out / "demo.png") > 1000
    assert (out / "demo.md").read_text().startswith("# valley demo")


def test_torch_backend_trains_every_optimizer(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("backends.torch")
    config = demo.DemoConfig(backend="torch", batch_sizes=(0, 256), seeds=(0, 1), steps=12, progress=False, threads=1)
    rows, runs = demo.run_demo(config)
    _check_rows(rows, config)
    assert (
        main(
            [
                "demo",
                "--quick",
                "--backend",
                "torch",
                "--seeds",
                "1",
                "--steps",
                "4",
                "--no-progress",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "backend torch" in capsys.readouterr().out
    assert (tmp_path / "demo.png").exists()


def test_auto_backend_falls_back_to_numpy_without_torch(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    monkeypatch.setitem(sys.modules, "backends.torch", None)
    assert not demo.torch_available()
    assert demo.resolve_backend("auto") == "numpy"
    assert main(["demo", "--quick", "--seeds", "1", "--steps", "3", "--no-progress", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "running on the NumPy backend" in text and "backend numpy" in text
    assert main(["demo", "--backend", "torch", "--out", str(tmp_path)]) == 2
