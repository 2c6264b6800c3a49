"""``valley bench study``: the large-batch study (ALTO vs Lamb, with AdamW and SGD as references).

Example:
    $ valley bench study --quick --out /tmp/study            # about a minute: DIR/study.json, study.md, plots
    $ valley bench study --out docs/results --report docs/results.md --cache .study-runs --resume
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from valley_cli.study import grids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``valley bench study``."""
    parser.add_argument(
        "--quick", action="store_true", help="two batch sizes, two seeds, a small data set (about a minute)"
    )
    parser.add_argument(
        "--out", default="valley-study", help="writes OUT/study.json, OUT/study.md and plots (default ./valley-study)"
    )
    parser.add_argument("--report", default=None, help="path of the Markdown report (default OUT/study.md)")
    parser.add_argument("--cache", default=None, help="per-run cache folder (default OUT/runs)")
    parser.add_argument(
        "--resume", action="store_true", help="reuse finished runs from the cache (a crash loses one run)"
    )
    parser.add_argument("--report-only", action="store_true", help="no training: rebuild the outputs from the cache")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default min(2, cores))")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--stop-after", type=float, default=None, help="start no new setting after this many minutes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _command_line() -> str:
    argv = sys.argv[1:]
    if "study" in argv:
        return "valley bench " + " ".join(argv[argv.index("study") :])
    return "valley bench study"


def _check_writable(folder: str) -> None:
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {folder} exists and is not a folder")
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write to {folder}")


def run(args: argparse.Namespace) -> int:
    """Runs the study and writes its outputs; 0 on success, 2 for bad arguments or a missing dependency."""
    config = grids.quick_config() if args.quick else grids.StudyConfig()
    try:
        if args.jobs is not None:
            if args.jobs < 1:
                raise ValueError(f"--jobs={args.jobs} must be >= 1")
            config.jobs = args.jobs
        else:
            config.jobs = max(1, min(2, os.cpu_count() or 1))
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads} must be >= 1")
        config.threads = args.threads
        config.progress = not args.no_progress
        config.validate()
        for folder in (args.out, args.cache or os.path.join(args.out, "runs")):
            _check_writable(folder)
        if args.report:
            _check_writable(os.path.dirname(os.path.abspath(args.report)))
        for module in ("torch", "backends.torch", "mnist1d", "matplotlib", "tqdm", "scipy"):
            importlib.import_module(module)
    except (ValueError, OSError) as error:
        print(f"valley bench study: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(
            f"valley bench study needs torch and the demo extra (pip install 'valley[torch,demo]'): {error}",
            file=sys.stderr,
        )
        return 2
    from valley_cli.study import report, runner

    deadline = time.time() + 60 * args.stop_after if args.stop_after else None
    cache_parent = os.path.dirname(os.path.abspath(args.cache)) if args.cache else args.out
    cache_root = args.cache and os.path.basename(os.path.abspath(args.cache))
    result = runner.run_study(
        config,
        args.out if not args.cache else cache_parent,
        resume=args.resume or args.report_only,
        deadline=deadline,
        train=not args.report_only,
        cache_name=cache_root or "runs",
    )
    cache_folder = os.path.join(cache_parent, cache_root or "runs")
    paths = report.write_outputs(result, config, args.out, _command_line(), args.report, cache_folder)
    for line in report.verdict_lines(report.comparisons(result)):
        print(line)
    print(
        f"wrote {paths['json']} and {paths['markdown']} ({result.seconds / 60:.1f} min, {result.computed} runs "
        f"trained, {result.reused} reused{'' if result.complete else '; INCOMPLETE'})"
    )
    return 0
