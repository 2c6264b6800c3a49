"""``python -m proofs_check`` and ``valley proofs``: run the checks, write the reports, exit 1 on any FAIL.

Example:
    python -m proofs_check --quick --out proofs_report
    valley proofs --backend torch --quick --out proofs_torch
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from typing import Any, Dict, List

from proofs_check.common import ClaimResult, Context
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``valley proofs`` / ``python -m proofs_check`` to ``parser``."""
    parser.add_argument("--quick", action="store_true", help="small version of every check (<= 2 min on 2 cores)")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="numpy", help="which backend runs the optimizers (default numpy)"
    )
    parser.add_argument("--out", default="proofs_report", help="output folder (report.md, report.json, plots)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
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
    """Runs the selected claims; returns 0 if all pass, 1 if any fails, 2 if the backend cannot run."""
    names = [n.strip() for n in args.claims.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLAIMS]
    if unknown:
        print(f"proofs_check: unknown claims {unknown}; choose from {list(CLAIMS)}", file=sys.stderr)
        return 2
    try:
        description = check_backend(args.backend)
    except BackendUnavailable as error:
        print(f"proofs_check: {error}", file=sys.stderr)
        return 2
    progress = None
    outer: Any = names
    if not args.no_progress:
        from tqdm.auto import tqdm

        def progress(iterable, total=None, desc=""):
            return tqdm(iterable, total=total, desc=f"  {desc}", leave=False, file=sys.stderr)

        outer = tqdm(names, desc="proofs", file=sys.stderr)
    ctx = Context(backend=args.backend, quick=args.quick, seed=args.seed, out_dir=args.out, progress=progress)
    started = time.perf_counter()
    results: List[ClaimResult] = []
    for name in outer:
        if hasattr(outer, "set_postfix_str"):
            outer.set_postfix_str(name)
        results.append(importlib.import_module(CLAIMS[name]).run(ctx))
    meta = {
        "command": _command(args),
        "quick": args.quick,
        "seed": args.seed,
        "backend": args.backend,
        "backend_description": description,
        "versions": _versions(),
        "runtime_s": time.perf_counter() - started,
        "claims": names,
    }
    write_reports(args.out, meta, results, args.docs_md)
    for r in results:
        print(f"{r.verdict}  {r.name}  ({sum(c.passed for c in r.checks)}/{len(r.checks)} checks, {r.runtime_s:.1f} s)")
    print(f"overall: {overall(results)}; report: {args.out}/report.md")
    return 0 if overall(results) == "PASS" else 1


def main(argv: List[str] | None = None) -> int:
    """Entry point of ``python -m proofs_check``."""
    parser = argparse.ArgumentParser(
        prog="python -m proofs_check", description="Numerical checks of the paper's convergence and behaviour claims."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
