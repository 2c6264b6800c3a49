"""Runs the study: tuning, selection and final runs per setting, cached one file per run, in worker processes.

Each finished run is written atomically to ``DIR/runs/<key>.json`` before the next result is awaited, so an
interrupted study loses at most the runs in flight; ``resume=True`` reads the cache instead of training again.
The progress bar counts training examples (batch x steps, a proxy of the cost) and shows the ETA.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

from valley_cli.study import grids
from valley_cli.study.grids import Group, StudyConfig

#: Per-process state of a worker (the data, loaded once).
_WORKER: Dict[str, Any] = {}


def _init_worker(config: StudyConfig) -> None:
    import torch

    torch.set_num_threads(config.threads)
    _WORKER["config"] = config


def _data(kind: str) -> Any:
    from valley_cli.study import data

    if kind not in _WORKER:
        config: StudyConfig = _WORKER["config"]
        if kind == "mnist1d":
            _WORKER[kind] = data.load_mnist1d(config.n_train, config.n_val, config.n_test)
        else:
            _WORKER[kind] = data.load_stdlib_text()[0]
    return _WORKER[kind]


def defaults_batch_size(spec: Dict[str, Any], config: StudyConfig) -> int:
    """The batch size ALTO's defaults are chosen for: examples per step, or characters per step for the LM."""
    return spec["batch_size"] * (config.lm_size[4] if spec["task"] == "lm" else 1)


def train_run(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Trains one run (in a worker) and returns its record: the spec, the hyperparameters and the measurements."""
    from valley_cli.study import models, training

    config: StudyConfig = _WORKER["config"]
    hp = training.optimizer_hyperparameters(spec["optimizer"], defaults_batch_size(spec, config), spec["lr"])
    started = time.perf_counter()
    if spec["task"] == "lm":
        size = config.lm_size
        result = training.train_lm(
            lambda: models.char_transformer(size),
            size[4],
            spec["optimizer"],
            hp,
            _data("lm"),
            spec["batch_size"],
            spec["steps"],
            spec["seed"],
            clip=spec["clip"],
            eval_windows=config.lm_eval_windows,
        )
    else:
        sizes = (40, *config.hidden, 10)
        result = training.train_classifier(
            lambda: models.mlp(sizes),
            spec["optimizer"],
            hp,
            _data("mnist1d"),
            spec["batch_size"],
            spec["steps"],
            spec["seed"],
            clip=spec["clip"],
        )
    result["steps_completed"] = result.pop("steps")  # "steps" stays the planned budget (a diverged run stops early)
    batch_losses = result.pop("batch_losses")
    stride = max(1, len(batch_losses) // 100)
    return {
        **spec,
        "key": grids.run_key(spec),
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
        **result,
        "batch_losses": batch_losses[::stride],
        "loss_stride": stride,
        "wall_seconds": time.perf_counter() - started,
    }


class RunCache:
    """One JSON file per finished run under ``folder`` (written atomically)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.folder, key + ".json")

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        path = self.path(key)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def put(self, record: Dict[str, Any]) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(temporary, self.path(record["key"]))

    def clear(self) -> None:
        for name in os.listdir(self.folder):
            if name.endswith((".json", ".jsonl")):
                os.remove(os.path.join(self.folder, name))


def run_cost(spec: Dict[str, Any], config: StudyConfig) -> float:
    """Relative cost of a run: examples (characters for the LM, weighted) processed, plus a per-step overhead."""
    per_step = spec["batch_size"] * (config.lm_size[4] * 3 if spec["task"] == "lm" else 1) + 2000
    return float(per_step * spec["steps"])


@dataclasses.dataclass
class StudyResult:
    """What ``run_study`` returns: every record used, the selections, timing."""

    records: List[Dict[str, Any]]
    selected: Dict[str, Dict[str, float]]
    groups: List[Group]
    computed: int
    reused: int
    seconds: float
    complete: bool


def run_study(
    config: StudyConfig,
    out_dir: str,
    resume: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    deadline: Optional[float] = None,
    train: bool = True,
    cache_name: str = "runs",
) -> StudyResult:
    """Runs (or resumes) the study and returns its records.

    Args:
        config: the protocol.
        out_dir: the per-run cache (``cache_name``) is kept here.
        resume: reuse cached runs; without it the cache is emptied first.
        log: receives one line per finished setting.
        deadline: ``time.time()`` after which no new setting is started (the result is then incomplete).
        train: ``False`` only reads the cache (``resume`` implied): settings with missing runs are left out.
    """
    from tqdm import tqdm

    config.validate()
    cache = RunCache(os.path.join(out_dir, cache_name))
    if not resume and train:
        cache.clear()
    plan = grids.groups(config)
    if train and any(g.task == "mnist1d" for g in plan):
        from valley_cli.study import data

        data.load_mnist1d(config.n_train, config.n_val, config.n_test)  # generate once, before the workers start
    total = 0.0
    done = 0.0
    for group in plan:
        tuning = grids.tuning_specs(group)
        total += sum(run_cost(s, config) for s in tuning)
        final_cost = run_cost(tuning[0], config) * grids.new_final_run_count(group)
        total += final_cost
        cached = {s_key: cache.get(s_key) for s_key in (grids.run_key(s) for s in tuning)}
        done += sum(run_cost(s, config) for s in tuning if cached[grids.run_key(s)] is not None)
        if all(cached.values()):
            finals = grids.final_specs(group, grids.select(group, cached))  # type: ignore[arg-type]
            done += sum(run_cost(s, config) for s in finals if cache.get(grids.run_key(s)) is not None)
    records: Dict[str, Dict[str, Any]] = {}
    selected: Dict[str, Dict[str, float]] = {}
    counts = {"computed": 0, "reused": 0}
    started = time.perf_counter()
    started_at = time.time()
    context = multiprocessing.get_context("spawn")
    complete = True
    with (
        context.Pool(max(1, config.jobs) if train else 1, initializer=_init_worker, initargs=(config,)) as pool,
        tqdm(
            total=total,
            initial=done,
            disable=not (config.progress and train),
            file=sys.stderr,
            desc="valley bench study",
            unit="ex",
            unit_scale=True,
            mininterval=2.0,
            bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}",
        ) as bar,
    ):

        def execute(specs: List[Dict[str, Any]]) -> bool:
            todo = []
            for item in specs:
                key = grids.run_key(item)
                if key in records:
                    continue
                record = cache.get(key)
                if record is not None:
                    records[key] = record
                    counts["reused"] += 1
                else:
                    todo.append(item)
            if not train:
                return len(todo) == 0
            for record in pool.imap_unordered(train_run, todo):
                cache.put(record)
                records[record["key"]] = record
                counts["computed"] += 1
                bar.update(run_cost(record, config))
                bar.set_postfix_str(f"{record['key']}", refresh=False)
            return True

        for group in plan:
            if deadline is not None and time.time() > deadline:
                log(f"deadline reached: {group.name} and later settings not run")
                complete = False
                break
            bar.set_postfix_str(group.name)
            if not execute(grids.tuning_specs(group)):
                complete = False
                continue
            choice = grids.select(group, records)
            selected[group_key(group)] = choice
            if not execute(grids.final_specs(group, choice)):
                complete = False
            log(f"{group.name}: selected " + ", ".join(f"{k} lr={v:g}" for k, v in choice.items()))
    if train and counts["computed"]:
        log_invocation(cache.folder, started_at, time.time(), counts["computed"], complete)
    used = [records[k] for k in sorted(records)]
    return StudyResult(
        used, selected, plan, counts["computed"], counts["reused"], time.perf_counter() - started, complete
    )


def group_key(group: Group) -> str:
    """``task/batch/steps``: the key of a setting in ``StudyResult.selected`` and in the report."""
    return f"{group.task}/{group.batch_size}/{group.steps}"


def log_invocation(folder: str, start: float, end: float, computed: int, complete: bool) -> None:
    """Appends one line per training invocation to ``folder/invocations.jsonl`` (the study's total wall time)."""
    with open(os.path.join(folder, "invocations.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"start": start, "end": end, "computed": computed, "complete": complete}) + "\n")


def invocations(folder: str) -> List[Dict[str, Any]]:
    """The records ``log_invocation`` wrote (empty if none)."""
    path = os.path.join(folder, "invocations.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
