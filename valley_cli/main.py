"""Entry point of the ``valley`` console script.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``; this
table is the only place that lists them, and modules are imported only when their subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "info": ("valley_cli.info", "versions, which backends import, whether a GPU is visible"),
    "demo": ("valley_cli.demo", "the main job: ALTO vs Lamb vs AdamW vs SGD at large batch on digits"),
    "proofs": ("proofs_check.cli", "numerical checks of the paper's convergence and behaviour claims"),
    "bench": ("valley_cli.bench", "benchmarks and studies (generalization, landscapes)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valley", description="ALTO and the E adaptor, on every framework.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # a subcommand whose module is not there yet or lacks a dependency
            sub_parser.set_defaults(_import_error=str(error))
            continue
        module.add_arguments(sub_parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "_import_error", None):
        print(f"valley {args.command}: unavailable ({args._import_error})", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
