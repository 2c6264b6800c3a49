"""Optimizer step time, state memory and effective bandwidth on PyTorch (not a test).

Usage::

    .venv/bin/python benchmarks/torch_step.py                      # both layouts, CPU
    .venv/bin/python benchmarks/torch_step.py --layout uniform --repeats 5 --warmup 2
    .venv/bin/python benchmarks/torch_step.py --device cuda        # the same table on a GPU
    .venv/bin/python benchmarks/torch_step.py --layout uniform --only "ALTO (fused" AdamW \
        --state-dtype float32 bfloat16 int8                          # compact optimizer state (issue 16)

Layouts: ``uniform`` (50M float32 parameters in 200 tensors of 250,000) and ``gpt2`` (the parameter list of
GPT-2 small, 124M float32 parameters in 148 tensors). For each implementation, all in one process on the
same parameters and gradients: median wall time of ``step()`` after warm-up (compilation happens during
warm-up), optimizer-state bytes per parameter byte, and effective bandwidth. The optimizers step in turns
(A, B, C, A, B, C ...) so that changes in the load of a shared machine hit every implementation alike.

Effective bandwidth = the bytes an ideal single pass must move / step time. Per element: AdamW and Lamb read
p, g, m, v and write p, m, v (7 x 4 bytes for float32); every ALTO implementation is charged the ALTO
algorithm's minimum, read p, g, carry, m, v and write p, carry, m, v (9 x 4 bytes), whatever it actually moves.
The gradients are scaled to a global norm of 0.5 so that the gradient clipping hidden in the authors' ALTO
(max norm 1) multiplies by exactly 1 and does not shrink the gradients between steps.

Implementations: valley ALTO (``implementation="core"``: the valley_core transforms on torch tensors;
``"compiled"``: the torch.compile fast path; ``"fused"``: the generated multi-tensor C++ kernels, CPU only),
valley Lamb (fused, compiled), the authors' ALTO (``e-optimizer-adaptor``),
``torch.optim.AdamW(fused=True)`` and ``pytorch_optimizer.Lamb``; for comparison (no target), valley EAdam (fused,
auto), the authors' ``E`` around ``torch.optim.Adam(fused=True)`` and ``torch.optim.Adam(fused=True)`` (EAdam is
charged 9 arrays per element like ALTO, Adam 7).

``--state-dtype bfloat16 int8`` adds fused ALTO with compact state (``backends.torch.compact_state``) and prints
its targets against fused ALTO with float32 state measured in the same rounds: state bytes, and the per-round
median step-time ratio (bfloat16 <= 1.0, int8 <= 1.3). Bandwidths stay charged at float32's 9 x 4 bytes.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import valley_core as vc  # noqa: E402
from backends.torch import ALTO, E, EAdam, Lamb, optimizer_class  # noqa: E402


def e_lars(lr=1e-2, alpha=-1.0, beta1=0.9, momentum=0.9, weight_decay=1e-4, trust_eps=1e-6, norm_eps=1e-10):
    """A chain no backend names (issue 12): E in front of LARS; its fast paths come from its plan."""
    return vc.chain(
        vc.e_adaptor(alpha, beta1),
        vc.add_decayed_weights(weight_decay),
        vc.trace(momentum),
        vc.scale_by_trust_ratio(trust_eps, norm_eps),
        vc.scale_by_learning_rate(lr),
    )


ELars = optimizer_class("ELars", e_lars)


def uniform_shapes() -> List[Tuple[int, ...]]:
    """50M parameters in 200 tensors."""
    return [(500, 500)] * 200


def gpt2_small_shapes() -> List[Tuple[int, ...]]:
    """The parameter shapes of GPT-2 small (124M parameters, 148 tensors)."""
    d, vocab, context, layers = 768, 50257, 1024, 12
    shapes: List[Tuple[int, ...]] = [(vocab, d), (context, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    shapes += [(d,), (d,)]
    return shapes


LAYOUTS: Dict[str, Callable[[], List[Tuple[int, ...]]]] = {
    "uniform": uniform_shapes,
    "gpt2": gpt2_small_shapes,
    "small": lambda: [(250, 200)] * 20,  # 1M parameters: a quick check that the script runs
    "5m": lambda: [(500, 500)] * 20,  # 5M parameters: a user's chain, fused against the core path
}

#: Full-size arrays an ideal single pass reads + writes per element.
ARRAYS_PER_ELEMENT = {"alto": 9, "adamw": 7, "lamb": 7, "eadam": 9, "elars": 7}


def make_params(shapes: Sequence[Tuple[int, ...]], device: str) -> List[torch.nn.Parameter]:
    """Parameters (std 0.02) with gradients of global norm 0.5 (kept for the whole run)."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(s, generator=generator) * 0.02).to(device)) for s in shapes]
    grads = [torch.randn(s, generator=generator).to(device) for s in shapes]
    total = torch.sqrt(sum((g * g).sum() for g in grads))
    for p, g in zip(params, grads):
        p.grad = g * (0.5 / total)
    return params


def implementations(device: str, state_dtypes: Sequence[str] = ()):
    """(name, algorithm, constructor) for every implementation measured."""
    alto_args = dict(lr=1e-3, alpha=-5.0, betas=(0.99, 0.9, 0.99), eps=1e-6, weight_decay=1e-4)
    items = []
    if device == "cpu":  # the fused kernels are CPU kernels
        items.append(("valley ALTO (fused)", "alto", lambda ps: ALTO(ps, implementation="fused", **alto_args)))
        for state_dtype in [d for d in state_dtypes if d != "float32"]:
            items.append(
                (
                    f"valley ALTO (fused, state_dtype={state_dtype})",
                    "alto",
                    lambda ps, d=state_dtype: ALTO(ps, implementation="fused", state_dtype=d, **alto_args),
                )
            )
    items += [
        ("valley ALTO (compiled)", "alto", lambda ps: ALTO(ps, implementation="compiled", **alto_args)),
        ("valley ALTO (core)", "alto", lambda ps: ALTO(ps, implementation="core", **alto_args)),
    ]
    if device == "cpu":
        items.append(("valley Lamb (fused)", "lamb", lambda ps: Lamb(ps, lr=1e-3, implementation="fused")))
    items.append(("valley Lamb (compiled)", "lamb", lambda ps: Lamb(ps, lr=1e-3, implementation="compiled")))
    try:
        from ALTO import ALTO as AuthorsALTO

        items.append(
            (
                "authors' ALTO (e-optimizer-adaptor)",
                "alto",
                lambda ps: AuthorsALTO(ps, lr=1e-3, betas=(0.99, 0.9, 0.99), alp=-5.0, eps=1e-6, weight_decay=1e-4),
            )
        )
    except ImportError:
        print("e-optimizer-adaptor is not installed: the authors' ALTO is left out", file=sys.stderr)
    items.append(
        ("torch AdamW (fused)", "adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, fused=True))
    )
    # EAdam (not a target of the issue, for comparison): valley's fused EAdam, the authors' E around torch's
    # fused Adam, and torch's fused Adam alone.
    eadam_args = dict(lr=1e-3, alpha=-1.0, betas=(0.5, 0.9, 0.999), weight_decay=0.0)
    if device == "cpu":
        items.append(("valley EAdam (fused)", "eadam", lambda ps: EAdam(ps, implementation="fused", **eadam_args)))
    items.append(("valley EAdam (auto)", "eadam", lambda ps: EAdam(ps, **eadam_args)))
    try:
        from E import E as AuthorsE

        items.append(
            (
                "authors' E(torch Adam fused) (e-optimizer-adaptor)",
                "eadam",
                lambda ps: GradientRestoring(AuthorsE(torch.optim.Adam(ps, lr=1e-3, fused=True), alpha=-1.0, beta=0.5)),
            )
        )
    except ImportError:
        pass
    items.append(
        (
            "valley E(torch Adam fused)",
            "eadam",
            lambda ps: E(torch.optim.Adam(ps, lr=1e-3, fused=True), alpha=-1.0, beta1=0.5),
        )
    )
    items.append(("torch Adam (fused)", "adamw", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)))
    if device == "cpu":
        items.append(("valley ELars, a user's chain (fused)", "elars", lambda ps: ELars(ps, implementation="fused")))
    items.append(("valley ELars, a user's chain (core)", "elars", lambda ps: ELars(ps, implementation="core")))
    try:
        from pytorch_optimizer import Lamb as PLamb

        items.append(("pytorch-optimizer Lamb", "lamb", lambda ps: PLamb(ps, lr=1e-3, weight_decay=1e-4)))
    except ImportError:
        print("pytorch-optimizer is not installed: its Lamb is left out", file=sys.stderr)
    return items


class GradientRestoring:
    """The authors' ``E`` replaces ``p.grad`` by the adapted gradient and leaves it there; the implementations here
    share parameters and gradients, so this puts every ``p.grad`` back after each step (inside the timed step:
    a few microseconds). ``state`` covers E's buffers and the base optimizer's."""

    def __init__(self, optimizer) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.opt.param_groups for p in group["params"]]

    def step(self) -> None:
        grads = [p.grad for p in self.params]
        self.optimizer.step()
        for p, g in zip(self.params, grads):
            p.grad = g

    @property
    def state(self):
        merged = {("E", id(p)): s for p, s in self.optimizer.state.items()}
        merged.update({("base", id(p)): s for p, s in self.optimizer.opt.state.items()})
        return merged


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's per-parameter tensors (for valley's ``E``, its carry and the base optimizer's)."""
    states = list(optimizer.state.values())
    base = getattr(optimizer, "base_optimizer", None)
    if base is not None and base.state is not optimizer.state:  # E keeps its entries in the base's state
        states += list(base.state.values())
    total = 0
    for state in states:
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_round_robin(constructors, shapes, device: str, warmup: int, repeats: int):
    """Median step time and state ratio of every optimizer, measured in turns.

    All optimizers share one set of parameters and gradients and step in turn (A, B, C, A, B, C, ...), so that
    a change in the machine's load (this CPU is shared) affects every implementation alike.
    """
    params = make_params(shapes, device)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    optimizers = []
    for name, constructor in constructors:
        optimizer = constructor(params)
        for _ in range(warmup):
            optimizer.step()
        synchronize(device)
        optimizers.append((name, optimizer))
        print(f"  warmed up {name}", file=sys.stderr, flush=True)
    times: Dict[str, List[float]] = {name: [] for name, _ in optimizers}
    for _ in range(repeats):
        for name, optimizer in optimizers:
            start = time.perf_counter()
            optimizer.step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    results = {
        name: (statistics.median(times[name]), min(times[name]), state_bytes(optimizer) / param_bytes)
        for name, optimizer in optimizers
    }
    del optimizers, params
    gc.collect()
    return results, times


def run_layout(
    layout: str, device: str, warmup: int, repeats: int, only: Sequence[str], state_dtypes: Sequence[str] = ()
) -> None:
    shapes = LAYOUTS[layout]()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    print(
        f"\n### {layout}: {numel / 1e6:.1f}M float32 parameters in {len(shapes)} tensors, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, warm-up {warmup}, median of {repeats} "
        f"(in turns), load average {load:.1f} at start on {os.cpu_count()} CPUs\n"
    )
    selected = [
        (name, algorithm, constructor)
        for name, algorithm, constructor in implementations(device, state_dtypes)
        if not only or any(word.lower() in name.lower() for word in only)
    ]
    measured, times = measure_round_robin(
        [(name, constructor) for name, _, constructor in selected], shapes, device, warmup, repeats
    )
    rows = []
    for name, algorithm, _ in selected:
        median, fastest, ratio = measured[name]
        moved = ARRAYS_PER_ELEMENT[algorithm] * 4 * numel / 1e9
        rows.append((name, median, fastest, ratio, moved / median, moved / fastest))
    print(
        "| implementation | median step (ms) | min step (ms) | state bytes / param bytes "
        "| effective bandwidth, median (GB/s) | effective bandwidth, min (GB/s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, median, fastest, ratio, bandwidth, best_bandwidth in rows:
        print(
            f"| {name} | {median * 1e3:.1f} | {fastest * 1e3:.1f} | {ratio:.2f} | {bandwidth:.2f} "
            f"| {best_bandwidth:.2f} |"
        )
    print_targets({row[0]: row[1:] for row in rows}, times, BANDWIDTH_TARGETS.get(layout, 0.75))
    print_compact_targets({row[0]: row[1:] for row in rows}, times)


def print_compact_targets(by_name, times) -> None:
    """Issue 16's targets: compact state against float32 state (fused ALTO, measured in the same rounds)."""
    base_name = "valley ALTO (fused)"
    if base_name not in by_name:
        return
    targets = {"bfloat16": (1.5, 1.0), "int8": (0.8, 1.3)}
    adamw = by_name.get("torch AdamW (fused)")
    for state_dtype, (bytes_target, time_target) in targets.items():
        name = f"valley ALTO (fused, state_dtype={state_dtype})"
        if name not in by_name:
            continue
        per_round = statistics.median(c / f for c, f in zip(times[name], times[base_name]))
        ratio = by_name[name][2]
        print(
            f"- {name}: state / parameter bytes {ratio:.3f} (target {'=' if state_dtype == 'bfloat16' else '<='} "
            f"{bytes_target}: {'met' if ratio <= bytes_target + 1e-3 else 'MISSED'}; float32 state "
            f"{by_name[base_name][2]:.2f}{f', fused AdamW {adamw[2]:.2f}' if adamw else ''}); step time / float32 "
            f"state: per-round median {per_round:.3f}, median {by_name[name][0] / by_name[base_name][0]:.3f}, min "
            f"{by_name[name][1] / by_name[base_name][1]:.3f} (target <= {time_target}: "
            f"{'met' if per_round <= time_target else 'MISSED'} by the per-round median)"
        )


#: Issue 23's bandwidth targets against fused AdamW, per layout (GPT-2's many small tensors: 0.60).
BANDWIDTH_TARGETS = {"uniform": 0.75, "gpt2": 0.60}


def print_targets(by_name, times, bandwidth_target: float = 0.75) -> None:
    """The issue's targets for every valley ALTO path measured: by the medians, by the minima, and by the median of
    the per-round ratios (each round steps every implementation once, back to back: the least load-sensitive)."""
    authors_name, adamw_name = "authors' ALTO (e-optimizer-adaptor)", "torch AdamW (fused)"
    authors, adamw = by_name.get(authors_name), by_name.get(adamw_name)
    bytes_ratio = ARRAYS_PER_ELEMENT["alto"] / ARRAYS_PER_ELEMENT["adamw"]
    print()
    for name in [n for n in by_name if n.startswith("valley ALTO") and "core" not in n and "state_dtype" not in n]:
        valley = by_name[name]
        if authors:
            per_round = statistics.median(v / a for v, a in zip(times[name], times[authors_name]))
            values = [valley[0] / authors[0], valley[1] / authors[1], per_round]
            print(
                f"- {name} step time / authors' ALTO: median {values[0]:.3f}, min {values[1]:.3f}, per-round "
                f"median {values[2]:.3f} (target <= 0.30: {'met' if max(values) <= 0.30 else 'MISSED'}"
                f"{'' if max(values) <= 0.30 or min(values) > 0.30 else ' on some measures'})"
            )
        if adamw:
            per_round = statistics.median(bytes_ratio * a / v for v, a in zip(times[name], times[adamw_name]))
            values = [valley[3] / adamw[3], valley[4] / adamw[4], per_round]
            print(
                f"- {name} effective bandwidth / fused AdamW's: median {values[0]:.2f}, min {values[1]:.2f}, "
                f"per-round median {values[2]:.2f} (target >= {bandwidth_target}: "
                f"{'met' if min(values) >= bandwidth_target else 'MISSED'}"
                f"{'' if min(values) >= bandwidth_target or max(values) < bandwidth_target else ' on some measures'})"
            )
        theirs = f"; authors': {authors[2]:.2f}" if authors else ""
        print(
            f"- {name} state / parameter bytes: {valley[2]:.2f} (target <= 3: "
            f"{'met' if valley[2] <= 3.0 + 1e-3 else 'MISSED'}){theirs}"
        )
    fused_chain, core_chain = "valley ELars, a user's chain (fused)", "valley ELars, a user's chain (core)"
    if fused_chain in by_name and core_chain in by_name:
        per_round = statistics.median(f / c for f, c in zip(times[fused_chain], times[core_chain]))
        ratio = by_name[fused_chain][0] / by_name[core_chain][0]
        print(
            f"- {fused_chain} step time / core path: median {ratio:.3f}, per-round median {per_round:.3f} "
            f"(target <= 0.35: {'met' if max(ratio, per_round) <= 0.35 else 'MISSED'})"
        )
    if hasattr(os, "getloadavg"):
        print(f"- load average at the end: {os.getloadavg()[0]:.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=[*LAYOUTS, "all"], default="all", help="'all' runs uniform and gpt2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", nargs="*", default=(), help="substrings of implementation names to run")
    parser.add_argument(
        "--state-dtype",
        nargs="*",
        default=(),
        choices=["float32", "bfloat16", "int8"],
        help="also measure fused ALTO with these state dtypes (compact optimizer state)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch.set_num_threads (0: torch's default); on an oversubscribed CPU 1 is steadier",
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    for layout in ["uniform", "gpt2"] if args.layout == "all" else [args.layout]:
        run_layout(layout, args.device, args.warmup, args.repeats, args.only, args.state_dtype)


if __name__ == "__main__":
    main()
