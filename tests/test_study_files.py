"""Issue 26, items 5-12: ``valley bench study``'s files and options.

No traceback for a bad option or a corrupt file in the study's folders: exit 2 with one line naming the option
or file, and nothing the user wrote deleted or overwritten by a failed run. Every test here failed on the
code before the fix (commit d24396a).
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("mnist1d")

from valley_cli.main import main  # noqa: E402
from valley_cli.study import data, report, runner  # noqa: E402


def study(*argv: str) -> int:
    return main(["bench", "study", "--no-progress", *argv])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def good_outputs(folder) -> dict:
    """A finished study's outputs that a failed run must leave alone."""
    folder.mkdir(exist_ok=True)
    files = {folder / "study.json": '{"complete": true}', folder / "study.md": "# GOOD REPORT\n"}
    for path, text in files.items():
        path.write_text(text)
    return files


def unchanged(files: dict) -> bool:
    return all(path.read_text() == text for path, text in files.items())


# ---------------------------------------------------------------------------------------------- item 5


def test_a_corrupt_cached_run_is_retrained_with_a_warning_naming_its_file(tmp_path, capsys):
    cache = runner.RunCache(str(tmp_path / "runs"))
    with open(cache.path("mnist1d-b128-s10-ALTO-0123456789abcdef"), "w") as handle:
        handle.write('{"key": "mnist1d-b128-s10-ALTO-0123456789abcdef", "test_acc')  # truncated by a crash
    assert cache.get("mnist1d-b128-s10-ALTO-0123456789abcdef") is None
    assert cache.path("mnist1d-b128-s10-ALTO-0123456789abcdef") in capsys.readouterr().err
    for text in ('{"key": "mnist1d-b128-s10-ALTO-0123456789abcdef"}', "[1, 2]", "\x00\xff"):  # valid JSON, not a run
        with open(cache.path("mnist1d-b128-s10-ALTO-0123456789abcdef"), "w") as handle:
            handle.write(text)
        assert cache.get("mnist1d-b128-s10-ALTO-0123456789abcdef") is None
        assert cache.path("mnist1d-b128-s10-ALTO-0123456789abcdef") in capsys.readouterr().err


def test_a_corrupt_mnist1d_cache_is_regenerated_with_a_warning_naming_its_file(tmp_path, capsys):
    first = data.load_mnist1d(100, 50, 50, cache=str(tmp_path))
    (path,) = tmp_path.glob("mnist1d-*.npz")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    second = data.load_mnist1d(100, 50, 50, cache=str(tmp_path))
    assert str(path) in capsys.readouterr().err
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    third = data.load_mnist1d(100, 50, 50, cache=str(tmp_path))  # the file was replaced by a good one
    assert capsys.readouterr().err == "" and np.array_equal(third.x_train, first.x_train)


# ---------------------------------------------------------------------------------------------- item 6


def test_a_cache_folder_holding_user_files_is_refused_and_left_alone(tmp_path, capsys):
    cache = tmp_path / "mine"
    cache.mkdir()
    (cache / "notes.json").write_text('{"mine": 1}')
    (cache / "log.jsonl").write_text("{}\n")
    code = study("--quick", "--out", str(tmp_path / "out"), "--cache", str(cache), "--stop-after", "0.0001")
    assert code == 2
    line = one_line(capsys)
    assert "--cache" in line and str(cache) in line
    assert (cache / "notes.json").read_text() == '{"mine": 1}' and (cache / "log.jsonl").exists()


# ---------------------------------------------------------------------------------------------- item 7


def test_report_naming_a_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "rep").mkdir()
    code = study("--quick", "--out", str(out), "--report", str(tmp_path / "rep"), "--stop-after", "0.0001")
    assert code == 2
    assert "--report" in one_line(capsys)
    assert not (out / "study.json").exists() and not list(tmp_path.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------- item 8


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_stop_after_must_be_a_positive_finite_number(value, tmp_path, capsys):
    files = good_outputs(tmp_path / "out")
    code = study("--quick", "--out", str(tmp_path / "out"), "--stop-after", value)
    assert code == 2
    assert "--stop-after" in one_line(capsys)
    assert unchanged(files) and not (tmp_path / "out" / "runs").exists()


# ---------------------------------------------------------------------------------------------- item 9


def test_report_only_with_a_misspelled_cache_writes_nothing(tmp_path, capsys):
    files = good_outputs(tmp_path / "out")
    missing = tmp_path / "out" / "rnus"
    code = study("--report-only", "--out", str(tmp_path / "out"), "--cache", str(missing))
    assert code == 2
    line = one_line(capsys)
    assert "no runs" in line and str(missing) in line
    assert unchanged(files) and not missing.exists()


# --------------------------------------------------------------------------------------------- item 10


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    path = str(tmp_path / "study.json")
    payload = {"runs": [{"key": str(i), "values": list(range(200))} for i in range(50)]}
    errors = []

    def writer() -> None:
        try:
            for _ in range(40):
                report.write_json(payload, path)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open(path) as handle:
        assert json.load(handle) == payload
    assert os.listdir(tmp_path) == ["study.json"]  # no temporary file left behind


# --------------------------------------------------------------------------------------------- item 11


def test_cache_naming_a_regular_file_names_the_cache_option(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code = study("--quick", "--out", str(tmp_path / "out"), "--cache", str(afile), "--stop-after", "0.0001")
    assert code == 2
    line = one_line(capsys)
    assert line.startswith("valley bench study: --cache ") and str(afile) in line
    assert afile.read_text() == "mine"


def test_out_naming_a_regular_file_names_the_out_option(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert study("--quick", "--out", str(afile)) == 2
    assert "--out" in one_line(capsys) and afile.read_text() == "mine"


# --------------------------------------------------------------------------------------------- item 12


def test_the_run_key_covers_model_and_data_sizes():
    from valley_cli.study import protocol

    base = protocol.Setting(1, "mnist1d", ("cnn", 16), (2000, 2000, 4000), 128, 100, (("ALTO", 0.01), ("Lamb", 0.01)))
    variants = [
        base,
        protocol.Setting(1, "mnist1d", ("cnn", 8), (2000, 2000, 4000), 128, 100, base.priors),
        protocol.Setting(1, "mnist1d", ("mlp", 64, 64), (2000, 2000, 4000), 128, 100, base.priors),
        protocol.Setting(1, "mnist1d", ("cnn", 16), (4000, 2000, 4000), 128, 100, base.priors),
        protocol.Setting(1, "mnist1d", ("cnn", 16), (2000, 1000, 4000), 128, 100, base.priors),
        protocol.Setting(1, "mnist1d", ("cnn", 16), (2000, 2000, 4000), 256, 100, base.priors),
        protocol.Setting(1, "mnist1d", ("cnn", 16), (2000, 2000, 4000), 128, 101, base.priors),
    ]
    keys = {protocol.run_key(protocol.spec(s, "ALTO", 0.01, 0)) for s in variants}
    assert len(keys) == len(variants)
    one = protocol.spec(base, "ALTO", 0.01, 0)
    for field, value in (
        ("lr", 0.02),
        ("seed", 1),
        ("optimizer", "Lamb"),
        ("overrides", {"alpha": -1.0}),
        ("schedule", "constant"),
        ("protocol", 1),
    ):
        assert protocol.run_key({**one, field: value}) != protocol.run_key(one), field
    assert protocol.run_key({**one, "arm": "dose"}) == protocol.run_key(one)  # the label is not a setting


def test_a_resumed_study_never_reuses_runs_of_another_model(tmp_path):
    from valley_cli.study import protocol

    def config(channels: int) -> protocol.StudyConfig:
        setting = protocol.Setting(
            1, "mnist1d", ("cnn", channels), (100, 100, 100), 100, 2, (("ALTO", 0.05), ("Lamb", 0.05))
        )
        return protocol.StudyConfig(
            settings=(setting,), final_seeds=2, tuning_seeds=(1000,), max_points=5, jobs=1, progress=False
        )

    first = runner.run_study(config(2), str(tmp_path / "runs"), log=lambda line: None)
    assert first.computed > 0 and first.reused == 0
    second = runner.run_study(config(3), str(tmp_path / "runs"), resume=True, log=lambda line: None)
    assert second.reused == 0 and second.computed == first.computed
    third = runner.run_study(config(2), str(tmp_path / "runs"), resume=True, log=lambda line: None)
    assert third.computed == 0 and third.reused == first.computed
