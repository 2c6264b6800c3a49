"""Entry point of the ``valley`` console script.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``; this
table is the only place that lists them (``valley bench`` keeps its own table of studies the same way).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Tuple

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "info": ("valley_cli.info", "versions, whether each backend can run here (and why not), fused kernels, GPU"),
    "demo": ("valley_cli.demo", "the main job: the study's decisive comparison, reduced (ALTO vs Lamb, paired seeds)"),
    "proofs": ("proofs_check.cli", "numerical checks of the paper's convergence and behaviour claims"),
    "bench": ("valley_cli.bench", "benchmarks and studies (study, landscapes)"),
}


def add_module_subcommands(subparsers: argparse._SubParsersAction, table: Dict[str, Tuple[str, str]], key: str) -> None:
    """Adds one subparser per table entry; each module contributes its own arguments.

    The chosen module's name is stored in ``args.<key>``; a module that cannot be imported (a missing
    optional dependency) stores the error in ``args.<key>_error`` instead of breaking the whole CLI.
    """
    for name, (module_name, help_text) in table.items():
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(**{key: module_name})
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            parser.set_defaults(**{f"{key}_error": str(error)})
            continue
        module.add_arguments(parser)


def run_module(args: argparse.Namespace, key: str, label: str) -> int:
    """Runs the module stored in ``args.<key>`` (or reports why it is unavailable)."""
    error = getattr(args, f"{key}_error", None)
    if error:
        print(f"valley {label}: unavailable ({error})", file=sys.stderr)
        return 2
    return int(importlib.import_module(getattr(args, key)).run(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valley", description="ALTO and the E adaptor, on every framework.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_module_subcommands(subparsers, SUBCOMMANDS, "_module")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_module(args, "_module", args.command)


if __name__ == "__main__":
    raise SystemExit(main())
