"""``valley bench STUDY``: the studies that are not part of the test suite.

Each study is a module with ``add_arguments(parser)`` and ``run(args) -> int``, listed in ``STUDIES``.
"""

from __future__ import annotations

import argparse
import importlib

#: study -> (module, one-line help)
STUDIES = {
    "generalization": ("valley_cli.bench_generalization",
                       "large-batch study: SGD/Adam/AdamW/Lamb/ALTO/EAdam on digits and a char-level LM"),
    "landscapes": ("valley_cli.bench_landscapes",
                   "toy landscapes (Goldstein-Price, Ackley, sharp/flat 1-D): Adam, Adam+CM, EAdam, ALTO"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="study", required=True, metavar="STUDY")
    for name, (module_name, help_text) in STUDIES.items():
        study_parser = sub.add_parser(name, help=help_text, description=help_text)
        study_parser.set_defaults(_study_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            study_parser.set_defaults(_study_error=str(error))
            continue
        module.add_arguments(study_parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_study_error", None):
        print(f"valley bench {args.study}: unavailable ({args._study_error})")
        return 2
    return int(importlib.import_module(args._study_module).run(args) or 0)
