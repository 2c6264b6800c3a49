"""Smoke tests of ``valley bench generalization`` (a tiny configuration, seconds)."""

from __future__ import annotations

import argparse
import json
import os

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("torch")
pytest.importorskip("backends.torch")

from valley_cli import bench_generalization as bg  # noqa: E402


def _tiny(**overrides) -> bg.StudyConfig:
    config = bg.StudyConfig(
        digits_models=("mlp", "cnn"),
        batch_sizes=(256, 0),
        epochs=2,
        grid=2,
        seeds=2,
        lm_steps=8,
        lm_batch=4,
        lm_context=8,
        lm_grid=2,
        lm_seeds=2,
        lm_eval_windows=4,
        lm_size=(8, 2, 1, 16),
        threads=1,
        progress=False,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("generalization")
    config = _tiny()
    results = bg.run_study(config, cache_path=str(out / "runs.json"), log=lambda line: None)
    path = bg.write_report(results, config, str(out), "valley bench generalization (test)", 1.0)
    return config, results, out, path


def test_every_optimizer_trained(tiny_study):
    config, results, _, _ = tiny_study
    names, missing = bg.available_optimizers(config)
    assert set(names) | set(missing) == set(bg.STUDY_OPTIMIZERS)
    assert {"SGD", "Adam", "AdamW", "Lamb", "ALTO", "EAdam"} <= set(names)
    expected = []
    for model in config.digits_models:
        expected += [(model, 256, n) for n in names] + [(model, 1197, n) for n in names if n != "EAdam"]
    assert [(e["model"], e["batch_size"], e["optimizer"]) for e in results["digits"]] == expected
    for entry in results["digits"] + results["lm"]:
        assert len(entry["grid"]) == len(entry["trial_val"]) == 2  # the equal tuning budget
        assert [r["seed"] for r in entry["finals"]] == [0, 1]
        for record in entry["finals"]:
            assert not record["diverged"]
            assert record["final_train_loss"] < record["initial_train_loss"], (entry["optimizer"], record)
    assert [e["optimizer"] for e in results["lm"]] == list(bg.LM_OPTIMIZERS)
    # the diagnostic: ALTO at Lamb's selected learning rate, one entry per setting, same seeds
    assert len(results["matched"]) == 4 and len(results["lm_matched"]) == 1
    for entry in results["matched"] + results["lm_matched"]:
        lamb = next(
            e
            for e in results["digits"] + results["lm"]
            if e["optimizer"] == "Lamb" and (e["model"], e["batch_size"]) == (entry["model"], entry["batch_size"])
        )
        assert entry["hyperparameters"]["lr"] == lamb["hyperparameters"]["lr"]
        assert [r["seed"] for r in entry["finals"]] == [0, 1]
        assert all(r["final_train_loss"] < r["initial_train_loss"] for r in entry["finals"])


def test_tables_and_report(tiny_study):
    config, results, out, path = tiny_study
    rows, columns = bg.digits_table(results)
    assert columns[:3] == ["model", "batch", "optimizer"]
    assert len(rows) == len(results["digits"])
    assert all("±" in row["test accuracy (%)"] for row in rows)
    lm_rows, lm_columns = bg.lm_table(results)
    assert [row["optimizer"] for row in lm_rows] == list(bg.LM_OPTIMIZERS) and lm_columns[0] == "optimizer"
    tta_rows, tta_columns = bg.time_to_accuracy(results)
    assert len(tta_rows) == 4 and "ALTO steps" in tta_columns
    text = open(path, encoding="utf-8").read()
    for heading in (
        "## Verdict",
        "## Protocol",
        "## Digits: test accuracy after tuning",
        "## Time to accuracy: ALTO vs Lamb",
        "## Diagnostic: ALTO at Lamb's learning rate",
        "## Character-level language model",
        "## Reproduce",
    ):
        assert heading in text
    assert "valley bench generalization (test)" in text and "results/landscapes.md" in text
    assert "| model | batch" in text.replace("  ", " ")
    for name in ("generalization_digits.png", "generalization_time_to_accuracy.png", "generalization_lm.png"):
        assert os.path.getsize(out / "results" / name) > 1000
    assert len(json.loads((out / "runs.json").read_text())) > 0


def test_resume_skips_finished_runs(tiny_study):
    config, results, out, _ = tiny_study
    again = bg.run_study(config, cache_path=str(out / "runs.json"), resume=True, log=lambda line: None)
    assert [e["finals"] for e in again["digits"]] == [e["finals"] for e in results["digits"]]


def test_equal_budget_grids():
    for batch_size in (32, 4096):
        grids = {name: bg.tuning_grid(name, batch_size, 4) for name in bg.STUDY_OPTIMIZERS}
        assert {len(g) for g in grids.values()} == {4}
        alto = grids["ALTO"]
        varied = {key for key in alto[0] if any(trial[key] != alto[0][key] for trial in alto)}
        assert varied == {"lr", "betas"}
        assert {trial["betas"][1:] for trial in alto} == {(0.9, 0.99)}
        assert {trial["alpha"] for trial in alto} == {-5.0 if batch_size >= 1024 else 0.5}
        assert {trial["lr"] for trial in alto} <= {trial["lr"] for trial in grids["Lamb"]}
    with pytest.raises(ValueError, match="grid=3"):
        bg.tuning_grid("ALTO", 32, 3)


def test_keras_backend_is_skipped_with_a_message_when_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(bg, "keras_available", lambda: (False, "ImportError: hidden by the test"))
    lines = []
    results = bg.run_study(_tiny(backend="keras", lm=False), log=lines.append)
    assert results["digits"] == [] and "backends.keras is not available" in results["keras_skipped"]
    assert any("skipping the digits part" in line for line in lines)


def test_cli_quick_options():
    parser = argparse.ArgumentParser()
    bg.add_arguments(parser)
    config = bg.config_from_args(parser.parse_args(["--quick", "--seeds", "3", "--no-lm", "--models", "mlp"]))
    assert config.seeds == 3 and not config.lm and config.digits_models == ("mlp",)
    assert config.epochs == bg.quick_config().epochs
    full = bg.config_from_args(parser.parse_args([]))
    assert full.seeds == 5 and full.batch_sizes[0] == 32 and full.batch_sizes[-1] == 0


@pytest.mark.slow
def test_keras_backend_trains(monkeypatch):
    pytest.importorskip("keras")
    pytest.importorskip("backends.keras")
    config = _tiny(
        backend="keras",
        lm=False,
        digits_models=("mlp",),
        batch_sizes=(0,),
        optimizers=("SGD", "AdamW", "Lamb", "ALTO"),
        seeds=1,
        jobs=1,
    )
    results = bg.run_study(config, log=lambda line: None)
    assert [e["optimizer"] for e in results["digits"]] == ["SGD", "AdamW", "Lamb", "ALTO"]
    for entry in results["digits"]:
        record = entry["finals"][0]
        assert not record["diverged"] and record["final_train_loss"] < record["initial_train_loss"]
