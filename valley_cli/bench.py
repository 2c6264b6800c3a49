"""``valley bench STUDY``: the studies that are not part of the test suite.

Each study is a module with ``add_arguments(parser)`` and ``run(args) -> int``, listed in ``STUDIES``.
"""

from __future__ import annotations

import argparse

from valley_cli.main import add_module_subcommands, run_module

#: study -> (module, one-line help)
STUDIES = {
    "study": (
        "valley_cli.study.cli",
        "where ALTO helps or hurts vs Lamb: fixed-epoch gap (1-D CNN, MNIST-1D), few steps at batch 16384, a char LM",
    ),
    "landscapes": (
        "valley_cli.bench_landscapes",
        "toy landscapes (Goldstein-Price, Ackley, sharp/flat 1-D): Adam, Adam+CM, EAdam, ALTO",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_module_subcommands(
        parser.add_subparsers(dest="study", required=True, metavar="STUDY"), STUDIES, "_study_module"
    )


def run(args: argparse.Namespace) -> int:
    return run_module(args, "_study_module", f"bench {args.study}")
