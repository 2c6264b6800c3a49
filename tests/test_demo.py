"""Tests of ``valley demo`` (tiny configurations, seconds): NumPy and torch paths, MNIST-1D and digits, CLI errors."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("sklearn")

from valley_cli import demo  # noqa: E402
from valley_cli.main import main  # noqa: E402


def _check_rows(rows, optimizers, batch_sizes):
    assert len(rows) == len(batch_sizes) * len(optimizers)
    assert [row["optimizer"] for row in rows[: len(optimizers)]] == list(optimizers)
    for row in rows:
        assert set(demo.DEMO_COLUMNS) <= set(row)
        assert row["test accuracy"].endswith("%") and "±" in row["test accuracy"]
        assert row["diverged"] == 0
        # every optimizer trained: the training loss went down
        assert row["final_train_loss_mean"] < row["initial_train_loss_mean"], row
        assert 0.0 <= row["test_accuracy_mean"] <= 1.0


@pytest.fixture
def small_mnist1d(monkeypatch, tmp_path):
    """The demo's MNIST-1D path on a small generated set (the default is 60k signals, ~30 s to generate once)."""
    pytest.importorskip("mnist1d")
    split = demo.load_mnist1d(5000, 500, 500, cache=str(tmp_path))
    monkeypatch.setattr(demo, "load_mnist1d", lambda: split)
    return split


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

    hp = demo.optimizer_hyperparameters("ALTO", 4096)
    for key, value in defaults_for_batch_size(4096).items():
        assert hp[key] == value
    assert hp["alpha"] == -5.0 and hp["betas"][0] == 0.99 and hp["lr"] == demo.DEMO_LRS["mnist1d"]["ALTO"]
    lamb = demo.optimizer_hyperparameters("Lamb", 4096)
    assert "alpha" not in lamb and lamb["lr"] == hp["lr"] and lamb["betas"] == hp["betas"][1:]


def test_default_demo_is_mnist1d_at_batch_4096():
    config = demo.DemoConfig()
    assert config.data == "mnist1d" and demo.DATASETS["mnist1d"][0] == (4096,)


def test_numpy_backend_trains_every_optimizer():
    config = demo.DemoConfig(
        data="digits", backend="numpy", batch_sizes=(0, 256), seeds=(0, 1), steps=12, progress=False
    )
    rows, runs = demo.run_demo(config)
    _check_rows(rows, config.optimizers, config.batch_sizes)
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


def test_warmup_cosine_table_matches_the_torch_schedule():
    from valley_cli.study.training import warmup_cosine_factor, warmup_steps

    schedule = demo.warmup_cosine_table(0.5, 20)
    warmup = warmup_steps(20)
    assert [schedule(k) for k in range(1, 21)] == [0.5 * warmup_cosine_factor(k, 20, warmup) for k in range(1, 21)]
    assert schedule(1) == pytest.approx(0.25) and schedule(3) == pytest.approx(0.5)  # warmup 2 steps, then peak


def test_cli_numpy_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--data", "digits", "--quick", "--backend", "numpy", "--seeds", "1", "--steps", "6"]
    assert main(argv + ["--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert any(line.startswith("| batch") and "test accuracy" in line for line in text.splitlines()), text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + 2 * 4  # header + 2 batch sizes x 4 optimizers
    for name in demo.DEMO_OPTIMIZERS:
        assert sum(f"| {name} " in line for line in table) == 2
    assert os.path.getsize(out / "demo.png") > 1000
    assert (out / "demo.md").read_text().startswith("# valley demo")
    assert [p for p in os.listdir(tmp_path) if p.startswith(".valley-demo-")] == []  # staging folder removed


def test_torch_backend_trains_every_optimizer_on_mnist1d(small_mnist1d, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("backends.torch")
    config = demo.DemoConfig(backend="torch", batch_sizes=(512,), seeds=(0, 1), steps=12, progress=False, threads=1)
    rows, runs = demo.run_demo(config)
    _check_rows(rows, config.optimizers, (512,))
    assert all(len(run.curve) == 12 and run.hyperparameters["lr"] > 0 for run in runs)
    argv = ["demo", "--quick", "--backend", "torch", "--seeds", "1", "--steps", "4", "--no-progress"]
    assert main(argv + ["--threads", "1", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "MNIST-1D" in text and "backend torch" in text and "| 4096 " in text
    assert (tmp_path / "demo.png").exists()


def test_auto_backend_falls_back_to_numpy_without_torch(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    monkeypatch.setitem(sys.modules, "backends.torch", None)
    assert not demo.torch_available()
    assert demo.resolve_backend("auto") == "numpy"
    argv = ["demo", "--data", "digits", "--quick", "--seeds", "1", "--steps", "3", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "running on the NumPy backend" in text and "backend numpy" in text
    assert main(["demo", "--backend", "torch", "--out", str(tmp_path)]) == 2


# ---- issue 13.12: bad arguments are found before any training, one line, exit code 2; divergence exits 1


@pytest.mark.parametrize(
    "option", [["--seeds", "0"], ["--steps", "-5"], ["--threads", "0"], ["--out", "FILE"], ["--out", "FILE/sub"]]
)
def test_bad_arguments_exit_2_with_one_line_before_training(option, monkeypatch, tmp_path, capsys):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    option = [str(existing) if part == "FILE" else part.replace("FILE", str(existing)) for part in option]

    def no_training(config):
        raise AssertionError("trained despite a bad argument")

    monkeypatch.setattr(demo, "run_demo", no_training)
    assert main(["demo", "--data", "digits", "--no-progress", *option]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("valley demo: "), captured.err
    assert "Traceback" not in captured.err
    assert existing.read_text() == "keep me"


def test_a_diverged_run_exits_1(monkeypatch, tmp_path, capsys):
    original = demo.optimizer_hyperparameters

    def exploding(name, batch_size, lr=None, **options):
        return original(name, batch_size, 1e12 if name == "SGD" else lr, **options)

    monkeypatch.setattr(demo, "optimizer_hyperparameters", exploding)
    argv = ["demo", "--data", "digits", "--backend", "numpy", "--seeds", "1", "--steps", "5", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 1
    assert "diverged" in capsys.readouterr().err


def test_an_interrupted_run_leaves_the_previous_outputs(monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "demo.md").write_text("previous report")
    (out / "demo.png").write_bytes(b"previous plot")

    real_plot = demo.plot_demo

    def interrupted_plot(runs, path, *args):
        real_plot(runs, path, *args)  # the new plot is written, then the run is interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "plot_demo", interrupted_plot)
    argv = ["demo", "--data", "digits", "--backend", "numpy", "--seeds", "1", "--steps", "3", "--no-progress"]
    with pytest.raises(KeyboardInterrupt):
        main(argv + ["--out", str(out)])
    assert (out / "demo.md").read_text() == "previous report"
    assert (out / "demo.png").read_bytes() == b"previous plot"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folder left behind
