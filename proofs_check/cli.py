"""``python -m proofs_check`` and ``valley proofs``: run the checks, write the reports, exit 1 on any FAIL
(PASS and NOT TESTABLE HERE exit 0).

Example:
    python -m proofs_check --quick --out proofs_report
    valley proofs --backend torch --quick --out proofs_torch
"""

from __future__ import annotations

import argparse
import importlib
import platform
import signal
import sys
import threading
import time
from typing import Any, Dict, List

from proofs_check.common import FAIL, ClaimResult, Context
from proofs_check.output import OutputError, prepare
from proofs_check.report import overall, write_reports
from proofs_check.runners import BACKENDS, BackendUnavailable, check_backend

#: claim name -> module (one module per claim, run in this order).
CLAIMS = {
    "stability_rule": "proofs_check.stability",
    "convex_regret": "proofs_check.convex_regret",
    "nonconvex_stationarity": "proofs_check.nonconvex",
    "hessian_link": "proofs_check.hessian_link",
    "flatness_and_speed": "proofs_check.flatness",
    "valley_travel": "proofs_check.valley_travel",
}


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (NumPy seeds cannot be negative)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} violates seed >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``valley proofs`` / ``python -m proofs_check`` to ``parser``."""
    parser.add_argument(
        "--quick", action="store_true", help="every claim and control at small sizes (< 3 min on 2 cores)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="numpy", help="which backend runs the optimizers (default numpy)"
    )
    parser.add_argument("--out", default="proofs_report", help="output folder (report.md, report.json, plots)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="base seed, >= 0 (default 0)")
    parser.add_argument("--claims", default=",".join(CLAIMS), help=f"comma-separated subset of: {', '.join(CLAIMS)}")
    parser.add_argument(
        "--docs-md", default=None, help="also write this Markdown page with plot links relative to it (docs/proofs.md)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for module in ("numpy", "scipy", "torch", "valley_core"):
        try:
            versions[module] = importlib.import_module(module).__version__
        except Exception:  # noqa: BLE001 - a missing optional dependency is reported as such
            versions[module] = "not installed"
    return versions


def _command(args: argparse.Namespace) -> str:
    parts = ["python -m proofs_check"]
    if args.quick:
        parts.append("--quick")
    parts += [f"--backend {args.backend}", f"--out {args.out}", f"--seed {args.seed}"]
    if args.claims != ",".join(CLAIMS):
        parts.append(f"--claims {args.claims}")
    if args.docs_md:
        parts.append(f"--docs-md {args.docs_md}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Runs the selected claims; returns 1 if any claim FAILs, 0 otherwise (PASS or NOT TESTABLE HERE), 2 for
    unusable arguments or outputs.

    The output folder and the docs page are checked (and staged) before any claim runs; the report is moved
    into place only when every claim has run, so an interrupted run leaves the previous report intact.
    """
    prog = "valley proofs" if getattr(args, "_module", None) else "python -m proofs_check"
    names = [n.strip() for n in args.claims.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLAIMS]
    if unknown or not names:
        print(f"{prog}: error: --claims: unknown claims {unknown}; choose from {list(CLAIMS)}", file=sys.stderr)
        return 2
    try:
        description = check_backend(args.backend)
    except BackendUnavailable as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    try:
        staging = prepare(args.out, args.docs_md)
    except OutputError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    previous_handler = _terminate_as_exit()
    try:
        results, runtime = _run_claims(args, names, staging.folder)
        meta = {
            "command": _command(args),
            "quick": args.quick,
            "seed": args.seed,
            "backend": args.backend,
            "backend_description": description,
            "versions": _versions(),
            "runtime_s": runtime,
            "claims": names,
        }
        write_reports(staging.folder, meta, results, staging.docs_file, link_dir=args.out)
        staging.publish()
    except BaseException:
        staging.discard()
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    for r in results:
        print(f"{r.verdict}  {r.name}  ({r.runtime_s:.1f} s): {r.reason}")
    print(f"overall: {overall(results)}; report: {args.out}/report.md")
    return 1 if overall(results) == FAIL else 0


def _terminate_as_exit() -> Any:
    """Makes SIGTERM (``kill``) raise ``SystemExit(143)`` so that the staged files are removed; returns the
    previous handler (None when not on the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _run_claims(args: argparse.Namespace, names: List[str], folder: str) -> tuple:
    progress = None
    outer: Any = names
    if not args.no_progress:
        from tqdm.auto import tqdm

        def progress(iterable, total=None, desc=""):
            return tqdm(iterable, total=total, desc=f"  {desc}", leave=False, file=sys.stderr)

        outer = tqdm(names, desc="proofs", file=sys.stderr)
    ctx = Context(backend=args.backend, quick=args.quick, seed=args.seed, out_dir=folder, progress=progress)
    started = time.perf_counter()
    results: List[ClaimResult] = []
    for name in outer:
        if hasattr(outer, "set_postfix_str"):
            outer.set_postfix_str(name)
        results.append(importlib.import_module(CLAIMS[name]).run(ctx))
    return results, time.perf_counter() - started


def main(argv: List[str] | None = None) -> int:
    """Entry point of ``python -m proofs_check``."""
    parser = argparse.ArgumentParser(
        prog="python -m proofs_check", description="Numerical checks of the paper's convergence and behaviour claims."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
