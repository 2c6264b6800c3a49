"""``valley bench study``: where ALTO helps, where it hurts (the second edition of the large-batch study).

Example:
    $ valley bench study --quick --out /tmp/study            # a smoke test of every code path, no conclusion
    $ valley bench study --out docs/results --report docs/results.md --cache docs/results/runs --resume

Exit codes: 0 done (possibly INCOMPLETE after ``--stop-after``), 2 bad options, an unusable file or folder,
or a missing dependency (one line on stderr naming it, nothing written), 130 interrupted (the finished runs
are cached: rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from typing import Optional


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``valley bench study`` (numbers are parsed in ``run`` so that a bad one is one line)."""
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test at toy sizes (a few minutes); it supports no conclusion"
    )
    parser.add_argument(
        "--out", default="valley-study", help="writes OUT/study.json, OUT/study.md and plots (default ./valley-study)"
    )
    parser.add_argument("--report", default=None, help="path of the Markdown report (default OUT/study.md)")
    parser.add_argument("--cache", default=None, help="per-run cache folder (default OUT/runs)")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs from the cache")
    parser.add_argument("--report-only", action="store_true", help="no training: rebuild the outputs from the cache")
    parser.add_argument("--jobs", default=None, help="worker processes (default min(2, cores))")
    parser.add_argument("--threads", default="1", help="torch threads per worker (default 1)")
    parser.add_argument("--stop-after", default=None, help="start no new training round after this many minutes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class UsageError(ValueError):
    """A bad option or path (the message names it)."""


def _command_line() -> str:
    argv = sys.argv[1:]
    if "study" in argv:
        return "valley bench " + " ".join(argv[argv.index("study") :])
    return "valley bench study"


def integer_option(option: str, text: Optional[str], minimum: int = 1) -> Optional[int]:
    """``text`` as an integer >= ``minimum`` (``None`` stays ``None``); the demo's options use it too."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{option}={text!r} is not an integer") from None
    if value < minimum:
        raise UsageError(f"{option}={value} must be >= {minimum}")
    return value


def positive_minutes(option: str, text: Optional[str]) -> Optional[float]:
    """``text`` as a finite number of minutes > 0 (``None`` stays ``None``)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option}={text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{option}={text} must be a finite number of minutes > 0")
    return value


def check_folder(option: str, folder: str, create: bool = True) -> None:
    """``folder`` is (or can become) a writable folder."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{option} {folder} exists and is not a folder")
    if create:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise UsageError(f"{option} {folder}: cannot create the folder ({error.strerror})") from None
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {folder}: the folder is not writable")


def check_report(path: str) -> None:
    """``path`` can be written as a file: not a folder, in a writable folder."""
    if os.path.isdir(path):
        raise UsageError(f"--report {path} is a folder; name a file such as {os.path.join(path, 'results.md')}")
    check_folder("--report", os.path.dirname(os.path.abspath(path)))


def check_cache(path: str, report_only: bool) -> None:
    """The cache folder is usable: a study cache, or a new or empty folder (never someone else's files).

    With ``--report-only`` it must already hold runs; nothing is created.
    """
    from valley_cli.study.runner import RunCache

    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--cache {path} exists and is not a folder")
    if report_only:
        if not os.path.isdir(path) or not RunCache.is_cache(path) or not RunCache(path, create=False).keys():
            raise UsageError(f"--cache {path}: no runs in {path} (--report-only reads a study cache); nothing written")
        return
    if os.path.isdir(path) and os.listdir(path) and not RunCache.is_cache(path):
        raise UsageError(
            f"--cache {path} holds files and is not a study cache (no {os.path.basename(path)}/.valley-study-cache);"
            " name a new or empty folder"
        )
    check_folder("--cache", path, create=False)


def run(args: argparse.Namespace) -> int:
    """Runs the study and writes its outputs (see the module's exit codes)."""
    try:
        jobs = integer_option("--jobs", args.jobs)
        threads = integer_option("--threads", args.threads)
        stop_after = positive_minutes("--stop-after", args.stop_after)
        cache = args.cache or os.path.join(args.out, "runs")
        check_folder("--out", args.out, create=False)
        check_cache(cache, args.report_only)
        if args.report:
            check_report(args.report)
        for module in ("torch", "backends.torch", "mnist1d", "matplotlib", "tqdm", "scipy"):
            importlib.import_module(module)
    except UsageError as error:
        print(f"valley bench study: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(
            f"valley bench study needs the torch and demo extras (pip install 'valley[torch,demo]'): {error}",
            file=sys.stderr,
        )
        return 2
    from valley_cli.study import protocol, report, runner

    config = protocol.quick_config() if args.quick else protocol.full_config()
    config.jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    config.threads = threads or 1
    config.progress = not args.no_progress
    deadline = time.time() + 60 * stop_after if stop_after else None
    try:
        result = runner.run_study(
            config, cache, resume=args.resume or args.report_only, deadline=deadline, train=not args.report_only
        )
    except runner.CacheError as error:
        print(f"valley bench study: --cache {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"valley bench study: interrupted; the finished runs are in {cache}: rerun with --resume", file=sys.stderr
        )
        return 130
    if not result.records:
        print(f"valley bench study: no run finished (cache {cache}); nothing written", file=sys.stderr)
        return 2
    try:
        check_folder("--out", args.out)
        paths = report.write_outputs(result, config, args.out, _command_line(), args.report, cache)
    except (UsageError, OSError) as error:
        print(f"valley bench study: cannot write the outputs: {error}", file=sys.stderr)
        return 2
    for line in report.answer_lines(result, config):
        print(line)
    print(
        f"wrote {paths['json']} and {paths['markdown']} ({result.seconds / 60:.1f} min, {result.computed} runs "
        f"trained, {result.reused} reused{'' if result.complete else '; INCOMPLETE'})"
    )
    return 0
