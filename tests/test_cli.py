"""The `valley` command line: the subcommand table and `valley info`."""

import subprocess
import sys

from valley_cli.main import SUBCOMMANDS, build_parser, main


def test_info_reports_versions_backends_and_gpu(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("valley_core 0.1.0")
    for name in ("numpy", "torch", "backends.numpy", "backends.torch", "backends.keras", "backends.cupy", "GPU"):
        assert f"  {name}" in out
    assert "backends.numpy     imports" in out
    assert "  fused CPU kernels  ok (" in out and "valley-kernels-" in out  # g++ is on every machine we run on


def test_every_subcommand_is_listed_in_help():
    help_text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in help_text


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "valley_cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
