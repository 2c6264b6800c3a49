"""Runs the study: post-convergence runs, then per setting the tuning rounds and the final arms, in workers.

Each finished run is written atomically to ``CACHE/<key>.json`` before the next result is awaited, so an
interrupted study loses at most the runs in flight; ``resume=True`` reads the cache instead of training again.
The tuning decisions are a function of the runs, so a resumed study replays them and asks for the same runs.

The cache folder carries a marker file (``MARKER``); the study refuses a folder that holds other files and no
marker, never deletes anything, and only writes ``<key>.json`` files, its marker and ``invocations.jsonl``.
A corrupt cached run is reported (its file named) and trained again.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from valley_cli.study import protocol
from valley_cli.study.protocol import ALTO, LAMB, Setting, StudyConfig, TuningState

#: The file that marks a folder as a study cache.
MARKER = ".valley-study-cache"
#: Names of the files the study writes into its cache (a run, the marker, the invocation log).
_RUN_FILE = re.compile(r"^[a-z0-9]+-b\d+-s\d+-[A-Za-z]+-[0-9a-f]{16}\.json$")

#: Fields every cached record has (a file without them is treated as corrupt).
_RECORD_FIELDS = frozenset(
    ("key", "kind", "task", "optimizer", "lr", "seed", "diverged", "initial_train_loss", "final_train_loss")
)

#: Per-process state of a worker (data sets, loaded once).
_WORKER: Dict[Any, Any] = {}


class CacheError(ValueError):
    """A cache folder that cannot be used (the message names it)."""


def _warn(message: str) -> None:
    print(f"valley bench study: warning: {message}", file=sys.stderr)


class RunCache:
    """One JSON file per finished run under ``folder`` (written atomically, under a unique temporary name).

    Args:
        folder: the cache folder.
        create: create the folder (and its marker) if needed; ``False`` only reads.

    Raises:
        CacheError: ``folder`` is not a folder, or holds files but no marker (someone else's folder).
    """

    def __init__(self, folder: str, create: bool = True) -> None:
        self.folder = folder
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise CacheError(f"{folder} exists and is not a folder")
        if os.path.isdir(folder) and not self.is_cache(folder) and os.listdir(folder):
            raise CacheError(f"{folder} holds files and is not a study cache (no {MARKER}); name a new or empty folder")
        if create:
            os.makedirs(folder, exist_ok=True)
            if not os.path.exists(os.path.join(folder, MARKER)):
                with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as handle:
                    handle.write("valley bench study run cache (second edition)\n")

    @staticmethod
    def is_cache(folder: str) -> bool:
        """Whether ``folder`` carries the study's marker."""
        return os.path.isfile(os.path.join(folder, MARKER))

    def path(self, key: str) -> str:
        return os.path.join(self.folder, key + ".json")

    def keys(self) -> List[str]:
        """Keys of the runs in the cache (file names of the study's form)."""
        if not os.path.isdir(self.folder):
            return []
        return sorted(name[:-5] for name in os.listdir(self.folder) if _RUN_FILE.match(name))

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        """The cached record of ``key``; ``None`` if absent, or corrupt (then a warning names the file)."""
        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            _warn(f"ignoring the corrupt cached run {path} ({type(error).__name__}); it is trained again")
            return None
        if not isinstance(record, dict) or record.get("key") != key or not _RECORD_FIELDS <= set(record):
            _warn(f"ignoring the cached run {path}: it is not a whole record of run {key}; it is trained again")
            return None
        return record

    def put(self, record: Dict[str, Any]) -> None:
        write_atomic(self.path(record["key"]), json.dumps(record))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_atomic(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` through a uniquely named temporary file in the same folder, then a rename.

    Concurrent writers never share a temporary file, and a reader sees either the old or a whole new file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file is an ordinary output
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


# --------------------------------------------------------------------------------------------------- workers


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_here(job: Tuple[Dict[str, Any], int]) -> Dict[str, Any]:
    """``train_run`` in this process (``jobs=1``) with ``threads`` torch threads, restored afterwards."""
    import torch

    spec, threads = job
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train_run(spec)
    finally:
        torch.set_num_threads(before)


def _classification_data(sizes: Tuple[int, ...]) -> Any:
    from valley_cli.study import data

    key = ("mnist1d", *sizes)
    if key not in _WORKER:
        _WORKER[key] = data.load_mnist1d(sizes[0], sizes[1], sizes[2])
    return _WORKER[key]


def _text() -> Any:
    from valley_cli.study import data

    if "text" not in _WORKER:
        _WORKER["text"] = data.load_stdlib_text()[0]
    return _WORKER["text"]


def defaults_batch_size(spec: Dict[str, Any]) -> int:
    """The batch size ALTO's defaults are chosen for: examples per step, or characters per step for the LM."""
    return spec["batch_size"] * (spec["model"][-1] if spec["task"] == "lm" else 1)


def train_run(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Trains one run (in a worker) and returns its record: the spec, the hyperparameters, the measurements."""
    from valley_cli.study import models, training

    started = time.perf_counter()
    overrides = dict(spec["overrides"])
    if spec["kind"] == "post":
        overrides["weight_decay"] = spec["weight_decay"]
    hp = training.optimizer_hyperparameters(spec["optimizer"], defaults_batch_size(spec), spec["lr"], overrides)
    if spec["kind"] == "post":
        result = training.train_post_convergence(
            lambda: models.build(spec["model"]),
            spec["optimizer"],
            hp,
            _classification_data(tuple(spec["data"])),
            spec["steps"],
            spec["seed"],
            spec["schedule"],
            spec["converged_loss"],
            spec["excursion_loss"],
        )
    elif spec["task"] == "lm":
        result = training.train_lm(
            lambda: models.build(spec["model"]),
            spec["model"][-1],
            spec["optimizer"],
            hp,
            _text(),
            spec["batch_size"],
            spec["steps"],
            spec["seed"],
            eval_windows=spec["data"][0],
            curve_points=0,
        )
    else:
        result = training.train_classifier(
            lambda: models.build(spec["model"]),
            spec["optimizer"],
            hp,
            _classification_data(tuple(spec["data"])),
            spec["batch_size"],
            spec["steps"],
            spec["seed"],
            curve_points=0,
            schedule=spec["schedule"],
        )
    if "batch_losses" in result:
        losses = result.pop("batch_losses")
        stride = max(1, len(losses) // 100)
        result["batch_losses"] = losses[::stride]
        result["loss_stride"] = stride
    result.pop("curve", None)
    if "steps" in result:
        result["steps_completed"] = result.pop("steps")  # "steps" stays the planned budget
    return {
        **spec,
        "key": protocol.run_key(spec),
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
        **result,
        "collapsed": protocol.collapsed({**spec, **result}) if spec["kind"] == "train" else None,
        "wall_seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------------- arms


def _spec(setting: Setting, optimizer: str, lr: float, seed: int, arm: str, overrides=None) -> Dict[str, Any]:
    """``protocol.spec`` with the overrides that equal the optimizer's defaults dropped (the same run, one key)."""
    from valley_cli.study import training

    defaults = training.optimizer_hyperparameters(
        optimizer, defaults_batch_size(protocol.spec(setting, optimizer, lr, seed)), lr
    )
    kept = {k: v for k, v in (overrides or {}).items() if defaults.get(k) != v}
    return protocol.spec(setting, optimizer, lr, seed, arm, kept)


def final_arms(setting: Setting, selected: Dict[str, float], seeds: Tuple[int, ...]) -> List[Dict[str, Any]]:
    """The final arms of a setting: each optimizer at its own best lr, each base at its E-optimizer's lr
    (equal-lr comparison; for Lamb it is the dose alpha = 0), and with ``setting.dose`` the dose-response and
    the placebo arms. Each arm: ``name``, ``role``, ``optimizer``, ``lr``, ``overrides``, ``specs`` (one per seed).
    """
    arms: List[Dict[str, Any]] = []

    def add(name: str, role: str, optimizer: str, lr: float, overrides: Optional[Dict[str, float]] = None) -> None:
        specs = [_spec(setting, optimizer, lr, seed, name, overrides) for seed in seeds]
        arms.append(
            {
                "name": name,
                "role": role,
                "optimizer": optimizer,
                "lr": specs[0]["lr"],
                "overrides": specs[0]["overrides"],
                "specs": specs,
            }
        )

    for explorer, base in setting.pairs:
        add(explorer, "main", explorer, selected[explorer])
        add(base, "main", base, selected[base])
        add(f"{base} at {explorer}'s lr", "equal-lr", base, selected[explorer])
    if setting.dose:
        for alpha in protocol.DOSE_ALPHAS:
            if alpha:
                overrides = {"alpha": alpha, "e_beta": protocol.DOSE_BETA1}
                add(f"{ALTO} alpha={alpha:g}", "dose", ALTO, selected[ALTO], overrides)
        for factor in protocol.PLACEBO_FACTORS:
            add(f"{LAMB} lr x{factor:g}", "placebo", LAMB, selected[LAMB] * factor)
    return arms


# ---------------------------------------------------------------------------------------------------- study


@dataclasses.dataclass
class StudyResult:
    """What ``run_study`` returns.

    Attributes:
        records: run key -> record (every run the study used).
        tuning: setting key -> optimizer -> the tuning state (grid, scores, selection, collapse lrs).
        arms: setting key -> its final arms (``final_arms`` with the specs' keys instead of the specs).
        settings: the settings in the study's order.
        post: the keys of the post-convergence runs present.
        computed, reused: runs trained now / read from the cache.
        seconds: wall time of this invocation.
        complete: every setting finished.
        finished: keys of the settings whose every run is present (the others' comparisons are partial).
    """

    records: Dict[str, Dict[str, Any]]
    tuning: Dict[str, Dict[str, Dict[str, Any]]]
    arms: Dict[str, List[Dict[str, Any]]]
    settings: List[Setting]
    post: List[str]
    computed: int
    reused: int
    seconds: float
    complete: bool
    finished: List[str] = dataclasses.field(default_factory=list)


class _Executor:
    """Reads runs from the cache or trains them in a pool of worker processes (created on first need)."""

    def __init__(self, config: StudyConfig, cache: RunCache, resume: bool, train: bool, log) -> None:
        self.config, self.cache, self.resume, self.train, self.log = config, cache, resume, train, log
        self.records: Dict[str, Dict[str, Any]] = {}
        self.computed = self.reused = 0
        self.pool: Any = None
        self.bar: Any = None

    def __call__(self, specs: List[Dict[str, Any]]) -> bool:
        """Makes every run of ``specs`` available in ``records``; ``False`` if some are missing (read-only)."""
        todo, seen = [], set()
        for item in specs:
            key = protocol.run_key(item)
            if key in self.records or key in seen:
                continue
            seen.add(key)
            record = self.cache.get(key) if (self.resume or not self.train) else None
            if record is not None:
                self.records[key] = record
                self.reused += 1
            else:
                todo.append(item)
        if not todo:
            return True
        if not self.train:
            return False
        if self.config.jobs <= 1:
            results: Any = map(_train_here, [(item, self.config.threads) for item in todo])
        else:
            if self.pool is None:
                context = multiprocessing.get_context("spawn")
                self.pool = context.Pool(self.config.jobs, initializer=_init_worker, initargs=(self.config.threads,))
            results = self.pool.imap_unordered(train_run, todo)
        for record in results:
            self.cache.put(record)
            self.records[record["key"]] = record
            self.computed += 1
            if self.bar is not None:
                self.bar.update(1)
        return True

    def close(self, interrupted: bool = False) -> None:
        """Stops the workers: after their last run, or at once when ``interrupted``."""
        if self.pool is not None:
            self.pool.terminate() if interrupted else self.pool.close()
            self.pool.join()


def tune(
    setting: Setting, config: StudyConfig, execute: Callable[[List[Dict[str, Any]]], bool], records
) -> Optional[Dict[str, TuningState]]:
    """Runs the tuning rounds of ``setting`` (every optimizer's grid widened per ``protocol.advance``).

    Returns:
        optimizer -> finished ``TuningState``; ``None`` if runs are missing (read-only mode).
    """
    states = {name: TuningState(protocol.start_indices(setting.prior(name))) for name in setting.optimizers}
    higher = protocol.higher_is_better(setting.task)
    while True:
        needed = [
            protocol.spec(setting, name, protocol.grid_lr(i), seed, "tuning")
            for name, state in states.items()
            if not state.done
            for i in state.indices
            for seed in config.tuning_seeds
        ]
        if not needed:
            return states
        if not execute(needed):
            return None
        for name, state in states.items():
            if state.done:
                continue
            runs = {
                (i, seed): records[protocol.run_key(protocol.spec(setting, name, protocol.grid_lr(i), seed))]
                for i in state.indices
                for seed in config.tuning_seeds
            }
            added = protocol.advance(state, runs, config.tuning_seeds, higher, config.max_points)
            state.indices = state.indices + added  # advance() replaces state.indices (sorted) first


def tuning_summary(state: TuningState) -> Dict[str, Any]:
    """The JSON form of a finished tuning state."""
    return {
        "grid": state.lrs,
        "grid_ratio": protocol.GRID_RATIO,
        "scores": [state.scores[i] for i in state.indices],
        "selected_lr": protocol.grid_lr(state.best) if state.best is not None else None,
        "selected_at_edge": state.best in (state.indices[0], state.indices[-1]),
        "collapse_lr": {str(seed): lr for seed, lr in state.collapse.items()},
        "bracketed": state.bracketed,
    }


def run_study(
    config: StudyConfig,
    cache_folder: str,
    resume: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    deadline: Optional[float] = None,
    train: bool = True,
) -> StudyResult:
    """Runs (or resumes, or only reads) the study.

    Args:
        config: the protocol.
        cache_folder: the per-run cache.
        resume: reuse cached runs (without it every run is trained again and its file overwritten; nothing
            is deleted).
        log: receives one line per finished setting.
        deadline: ``time.time()`` after which no new training round starts (the result is then incomplete).
        train: ``False`` only reads the cache: settings with missing runs are left out.

    Raises:
        CacheError: the cache folder cannot be used.
    """
    from tqdm import tqdm

    config.validate()
    cache = RunCache(cache_folder, create=train)
    execute = _Executor(config, cache, resume, train, log)
    started, started_at = time.perf_counter(), time.time()
    tuning: Dict[str, Dict[str, Dict[str, Any]]] = {}
    arms: Dict[str, List[Dict[str, Any]]] = {}
    post_keys: List[str] = []
    finished: List[str] = []
    complete, interrupted = True, False

    def late() -> bool:
        return deadline is not None and time.time() > deadline

    with tqdm(
        disable=not (config.progress and train),
        file=sys.stderr,
        desc="valley bench study",
        unit="run",
        mininterval=5.0,
    ) as bar:
        execute.bar = bar
        try:
            if config.post is not None:
                specs = protocol.post_specs(config.post)
                if late() or not execute(specs):
                    complete = False
                post_keys = [protocol.run_key(s) for s in specs if protocol.run_key(s) in execute.records]
                log(f"post-convergence: {len(post_keys)} of {len(specs)} runs")
            for setting in config.settings:
                if late():
                    log(f"deadline reached: {setting.name} and later settings not run")
                    complete = False
                    break
                bar.set_postfix_str(setting.key)
                states = tune(setting, config, execute, execute.records)
                if states is None:
                    complete = False
                    continue
                tuning[setting.key] = {name: tuning_summary(state) for name, state in states.items()}
                selected = {name: protocol.grid_lr(state.best) for name, state in states.items()}  # type: ignore[arg-type]
                setting_arms = final_arms(setting, selected, config.seeds)
                if execute([s for arm in setting_arms for s in arm["specs"]]):
                    finished.append(setting.key)
                else:
                    complete = False
                arms[setting.key] = [
                    {
                        **{k: v for k, v in arm.items() if k != "specs"},
                        "keys": [protocol.run_key(s) for s in arm["specs"]],
                    }
                    for arm in setting_arms
                ]
                log(f"{setting.name}: selected " + ", ".join(f"{k} lr={v:g}" for k, v in selected.items()))
        except BaseException:  # interrupted (Ctrl-C): the runs so far are cached and logged
            complete, interrupted = False, True
            raise
        finally:
            execute.close(interrupted)
            if train and execute.computed:  # also when interrupted: the study's total time stays measurable
                log_invocation(cache.folder, started_at, time.time(), execute.computed, complete)
    return StudyResult(
        execute.records,
        tuning,
        arms,
        list(config.settings),
        post_keys,
        execute.computed,
        execute.reused,
        time.perf_counter() - started,
        complete,
        finished,
    )


def log_invocation(folder: str, start: float, end: float, computed: int, complete: bool) -> None:
    """Appends one line per training invocation to ``folder/invocations.jsonl`` (the study's total wall time)."""
    with open(os.path.join(folder, "invocations.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"start": start, "end": end, "computed": computed, "complete": complete}) + "\n")


def invocations(folder: str) -> List[Dict[str, Any]]:
    """The records ``log_invocation`` wrote (empty if none; unreadable lines are skipped with a warning)."""
    path = os.path.join(folder, "invocations.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                out.append(json.loads(line))
            except ValueError:
                if line.strip():
                    _warn(f"skipping an unreadable line of {path}")
    return out
