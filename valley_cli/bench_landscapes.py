"""``valley bench landscapes``: Adam, Adam+CM, EAdam and ALTO on toy landscapes, from a grid of starts, with the
controls Lamb and ALTO at ``alpha = 0`` (is a gain of ALTO over Adam the trust ratio or E?).

Three deterministic landscapes (full-batch gradients, no noise):

* Goldstein-Price on ``[-2, 2]^2``: global minimum 3 at ``(0, -1)``, local minima at ``(-0.6, -0.4)``,
  ``(1.8, 0.2)`` and ``(1.2, 0.8)``.
* Ackley (``a=20, b=0.2, c=2 pi``) on ``[-4, 4]^2``: global minimum 0 at the origin, a local minimum near
  every integer point.
* A 1-D function with a sharp and a flat minimum,
  ``f(x) = -exp(-(x + 1.5)^2 / (2 0.1^2)) - 1.1 exp(-(x - 1.5)^2 / (2 0.8^2)) + 0.05 x^2``: a sharp local
  minimum near ``x = -1.50`` (``f = -0.889``) and a flat global minimum near ``x = 1.42`` (``f = -0.994``),
  separated by a barrier at ``x = -1.17``.

Every optimizer starts from the same jittered grid of points (``--seed`` draws the jitter) and runs the same
number of steps with the same learning rate; a run "reaches the global basin" when its final point lies
within ``basin_radius`` of the global minimiser. The runs go through ``valley_core`` (NumPy, float64); the
starts are independent tensors of one parameter tuple, so the per-tensor quantities (ALTO's trust ratio,
Adam+CM's gradient norm with ``synced=False``) belong to one start each.

Writes ``landscapes.md`` (table, hyperparameters, the exact command) and one PNG per landscape into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import valley_core as vc

TABLE_COLUMNS = (
    "landscape",
    "optimizer",
    "starts",
    "steps",
    "lr",
    "reached global basin",
    "ended in sharp minimum",
    "median final f",
    "median final distance",
)


# --- the landscapes -------------------------------------------------------------------------------------


def goldstein_price(points: np.ndarray) -> np.ndarray:
    """Goldstein-Price at ``points[..., :2]``."""
    x, y = points[..., 0], points[..., 1]
    first = 1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x**2 - 14 * y + 6 * x * y + 3 * y**2)
    second = 30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x**2 + 48 * y - 36 * x * y + 27 * y**2)
    return first * second


def goldstein_price_gradient(points: np.ndarray) -> np.ndarray:
    x, y = points[..., 0], points[..., 1]
    a, c = x + y + 1, 2 * x - 3 * y
    b = 19 - 14 * x + 3 * x**2 - 14 * y + 6 * x * y + 3 * y**2
    d = 18 - 32 * x + 12 * x**2 + 48 * y - 36 * x * y + 27 * y**2
    first, second = 1 + a**2 * b, 30 + c**2 * d
    first_dx = 2 * a * b + a**2 * (-14 + 6 * x + 6 * y)
    first_dy = 2 * a * b + a**2 * (-14 + 6 * x + 6 * y)
    second_dx = 4 * c * d + c**2 * (-32 + 24 * x - 36 * y)
    second_dy = -6 * c * d + c**2 * (48 - 36 * x + 54 * y)
    return np.stack([first_dx * second + first * second_dx, first_dy * second + first * second_dy], axis=-1)


def ackley(points: np.ndarray) -> np.ndarray:
    """Ackley (``a=20, b=0.2, c=2 pi``) at ``points[..., :2]``."""
    x, y = points[..., 0], points[..., 1]
    radius = np.sqrt(0.5 * (x**2 + y**2))
    waves = 0.5 * (np.cos(2 * np.pi * x) + np.cos(2 * np.pi * y))
    return -20 * np.exp(-0.2 * radius) - np.exp(waves) + np.e + 20


def ackley_gradient(points: np.ndarray) -> np.ndarray:
    x, y = points[..., 0], points[..., 1]
    radius = np.sqrt(0.5 * (x**2 + y**2))
    safe = np.where(radius > 0, radius, 1.0)
    envelope = np.where(radius > 0, 2 * np.exp(-0.2 * radius) / safe, 0.0)  # the origin: subgradient 0
    waves = np.exp(0.5 * (np.cos(2 * np.pi * x) + np.cos(2 * np.pi * y)))
    return np.stack(
        [envelope * x + np.pi * np.sin(2 * np.pi * x) * waves, envelope * y + np.pi * np.sin(2 * np.pi * y) * waves],
        axis=-1,
    )


SHARP_CENTRE, SHARP_WIDTH, FLAT_CENTRE, FLAT_WIDTH, FLAT_DEPTH, CONFINEMENT = -1.5, 0.1, 1.5, 0.8, 1.1, 0.05


def sharp_flat(points: np.ndarray) -> np.ndarray:
    """The 1-D function with a sharp (local) and a flat (global) minimum, at ``points[..., 0]``."""
    x = points[..., 0]
    return (
        -np.exp(-((x - SHARP_CENTRE) ** 2) / (2 * SHARP_WIDTH**2))
        - FLAT_DEPTH * np.exp(-((x - FLAT_CENTRE) ** 2) / (2 * FLAT_WIDTH**2))
        + CONFINEMENT * x**2
    )


def sharp_flat_gradient(points: np.ndarray) -> np.ndarray:
    x = points[..., 0]
    sharp = np.exp(-((x - SHARP_CENTRE) ** 2) / (2 * SHARP_WIDTH**2)) * (x - SHARP_CENTRE) / SHARP_WIDTH**2
    flat = FLAT_DEPTH * np.exp(-((x - FLAT_CENTRE) ** 2) / (2 * FLAT_WIDTH**2)) * (x - FLAT_CENTRE) / FLAT_WIDTH**2
    return (sharp + flat + 2 * CONFINEMENT * x)[..., None]


def _minimiser_near(function: Callable[[np.ndarray], np.ndarray], guess: float, half_width: float) -> float:
    """The minimiser of a 1-D function on a fine grid around ``guess`` (to 1e-5)."""
    grid = np.linspace(guess - half_width, guess + half_width, 200_001)[:, None]
    return float(grid[np.argmin(function(grid)), 0])


@dataclass(frozen=True)
class Landscape:
    """A toy landscape, its global basin and the run settings (the same for every optimizer)."""

    name: str
    title: str
    value: Callable[[np.ndarray], np.ndarray]
    gradient: Callable[[np.ndarray], np.ndarray]
    bounds: Tuple[float, float]
    global_minimiser: Tuple[float, ...]
    basin_radius: float
    lr: float
    steps: int
    grid: int
    sharp_minimiser: Optional[Tuple[float, ...]] = None
    sharp_radius: float = 0.0
    log_plot: bool = False

    @property
    def dim(self) -> int:
        return len(self.global_minimiser)


def landscapes(quick: bool) -> List[Landscape]:
    """The three landscapes; ``quick`` uses fewer starts and steps (a smoke run, not a result)."""
    sharp = _minimiser_near(sharp_flat, SHARP_CENTRE, 0.3)
    flat = _minimiser_near(sharp_flat, FLAT_CENTRE, 0.5)
    return [
        Landscape(
            "goldstein_price",
            "Goldstein-Price",
            goldstein_price,
            goldstein_price_gradient,
            (-2.0, 2.0),
            (0.0, -1.0),
            0.3,
            lr=0.01,
            steps=150 if quick else 800,
            grid=4 if quick else 10,
            log_plot=True,
        ),
        Landscape(
            "ackley",
            "Ackley",
            ackley,
            ackley_gradient,
            (-4.0, 4.0),
            (0.0, 0.0),
            0.5,
            lr=0.05,
            steps=150 if quick else 800,
            grid=4 if quick else 10,
        ),
        Landscape(
            "sharp_flat",
            "1-D sharp and flat minima",
            sharp_flat,
            sharp_flat_gradient,
            (-3.0, 3.0),
            (flat,),
            0.5,
            lr=0.05,
            steps=150 if quick else 800,
            grid=8 if quick else 60,
            sharp_minimiser=(sharp,),
            sharp_radius=0.25,
        ),
    ]


def starts(landscape: Landscape, rng: np.random.Generator) -> np.ndarray:
    """A ``grid^dim`` grid over the bounds, each point jittered by up to a quarter cell: ``(n, dim)``."""
    low, high = landscape.bounds
    cell = (high - low) / landscape.grid
    axis = low + cell * (np.arange(landscape.grid) + 0.5)
    mesh = np.stack(np.meshgrid(*([axis] * landscape.dim), indexing="ij"), axis=-1).reshape(-1, landscape.dim)
    return mesh + rng.uniform(-0.25 * cell, 0.25 * cell, size=mesh.shape)


# --- the optimizers ---------------------------------------------------------------------------------------

ADAM, ADAM_CM, EADAM, ALTO, LAMB = (
    vc.info_for(f).display_name for f in (vc.adam, vc.adam_cm, vc.eadam, vc.alto, vc.lamb)
)
ALTO_0 = f"{ALTO}(alpha=0)"
#: name shown in the report -> (core factory, its keyword arguments except lr)
OPTIMIZER_SETTINGS: Dict[str, Tuple[Callable[..., vc.GradientTransformation], dict]] = {
    ADAM: (vc.adam, dict(betas=(0.9, 0.999), eps=1e-8)),
    ADAM_CM: (vc.adam_cm, dict(betas=(0.9, 0.999), eps=1e-8, top_c=5, decay=0.7, kappa=1.0, synced=False)),
    EADAM: (vc.eadam, dict(alpha=-5.0, betas=(0.99, 0.9, 0.999), eps=1e-8)),
    ALTO: (vc.alto, dict(alpha=-5.0, betas=(0.99, 0.9, 0.99), eps=1e-6, weight_decay=0.0)),
    # controls: ALTO without E (alpha = 0, the same code path) and Lamb itself (ALTO's base)
    ALTO_0: (vc.alto, dict(alpha=0.0, betas=(0.99, 0.9, 0.99), eps=1e-6, weight_decay=0.0)),
    LAMB: (vc.lamb, dict(betas=(0.9, 0.99), eps=1e-6, weight_decay=0.0)),
}


def make_optimizer(name: str, lr: float) -> vc.GradientTransformation:
    factory, kwargs = OPTIMIZER_SETTINGS[name]
    return factory(lr=lr, **kwargs)


def trajectories(landscape: Landscape, optimizer: vc.GradientTransformation, points: np.ndarray) -> np.ndarray:
    """Runs ``optimizer`` from every start at once (one tensor per start); returns ``(steps + 1, n, dim)``."""
    import array_api_compat.numpy as xp

    params = tuple(np.array(p) for p in points)
    state = optimizer.init(params, xp=xp)
    path = np.empty((landscape.steps + 1, *points.shape))
    path[0] = points
    with np.errstate(all="ignore"):  # a diverging run becomes NaN and counts as a failure
        for k in range(landscape.steps):
            gradients = landscape.gradient(path[k])
            updates, state = optimizer.update(tuple(gradients), state, params, xp=xp)
            params = vc.apply_updates(params, updates)
            path[k + 1] = np.stack(params)
    return path


@dataclass
class Result:
    landscape: Landscape
    optimizer: str
    path: np.ndarray
    reached: np.ndarray = field(init=False)
    sharp: Optional[np.ndarray] = field(init=False)
    final_values: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        final = self.path[-1]
        distance = np.linalg.norm(final - np.asarray(self.landscape.global_minimiser), axis=-1)
        self.reached = np.isfinite(distance) & (distance < self.landscape.basin_radius)
        self.sharp = None
        if self.landscape.sharp_minimiser is not None:
            to_sharp = np.linalg.norm(final - np.asarray(self.landscape.sharp_minimiser), axis=-1)
            self.sharp = np.isfinite(to_sharp) & (to_sharp < self.landscape.sharp_radius)
        with np.errstate(all="ignore"):
            self.final_values = self.landscape.value(final)

    def row(self) -> Tuple[str, ...]:
        n = len(self.reached)
        sharp = "n/a" if self.sharp is None else f"{int(self.sharp.sum())}/{n} ({100 * self.sharp.mean():.0f}%)"
        finite = self.final_values[np.isfinite(self.final_values)]
        median = f"{np.median(finite):.4g}" if finite.size else "nan"
        distance = np.linalg.norm(self.path[-1] - np.asarray(self.landscape.global_minimiser), axis=-1)
        distance = distance[np.isfinite(distance)]
        median_distance = f"{np.median(distance):.3g}" if distance.size else "nan"
        return (
            self.landscape.title,
            self.optimizer,
            str(n),
            str(self.landscape.steps),
            f"{self.landscape.lr:g}",
            f"{int(self.reached.sum())}/{n} ({100 * self.reached.mean():.0f}%)",
            sharp,
            median,
            median_distance,
        )


# --- plots and report ---------------------------------------------------------------------------------------


def plot(landscape: Landscape, results: Sequence[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.0), sharey=True)
    low, high = landscape.bounds
    for axis, result in zip(np.atleast_1d(axes), results):
        if landscape.dim == 2:
            grid = np.linspace(low, high, 200)
            mesh = np.stack(np.meshgrid(grid, grid, indexing="xy"), axis=-1)
            values = landscape.value(mesh)
            axis.contourf(grid, grid, np.log10(values) if landscape.log_plot else values, levels=20, cmap="Greys")
            for i in range(result.path.shape[1]):
                colour = "tab:green" if result.reached[i] else "tab:red"
                axis.plot(result.path[:, i, 0], result.path[:, i, 1], color=colour, linewidth=0.6, alpha=0.8)
                axis.plot(result.path[-1, i, 0], result.path[-1, i, 1], "o", color=colour, markersize=2)
            axis.plot(*landscape.global_minimiser, "*", color="gold", markersize=9, markeredgecolor="k")
            axis.set_xlim(low, high)
            axis.set_ylim(low, high)
        else:
            steps = np.arange(result.path.shape[0])
            for i in range(result.path.shape[1]):
                colour = (
                    "tab:green"
                    if result.reached[i]
                    else "tab:blue"
                    if result.sharp is not None and result.sharp[i]
                    else "tab:red"
                )
                axis.plot(steps, result.path[:, i, 0], color=colour, linewidth=0.6, alpha=0.8)
            axis.axhline(landscape.global_minimiser[0], color="k", linestyle="--", linewidth=0.8)
            if landscape.sharp_minimiser is not None:
                axis.axhline(landscape.sharp_minimiser[0], color="k", linestyle=":", linewidth=0.8)
            axis.set_xlabel("step")
            axis.set_ylim(low - 0.5, high + 0.5)
        axis.set_title(f"{result.optimizer}: {100 * result.reached.mean():.0f}% global", fontsize=9)
        axis.tick_params(labelsize=7)
    figure.suptitle(landscape.title + (" (log10 f)" if landscape.log_plot else ""), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=60)
    plt.close(figure)


#: (method, control) pairs compared start by start in the controls table
CONTROL_PAIRS = ((ALTO, ALTO_0), (ALTO, LAMB), (ALTO_0, ADAM), (EADAM, ADAM))


def paired_reach(method: Result, control: Result) -> Tuple[int, int, float]:
    """Starts only ``method`` brings to the global basin, starts only ``control`` does, and the two-sided sign
    test on those discordant starts (the same starts for both: McNemar's exact test)."""
    from scipy.stats import binomtest

    only_method = int(np.sum(method.reached & ~control.reached))
    only_control = int(np.sum(control.reached & ~method.reached))
    discordant = only_method + only_control
    p = float(binomtest(only_method, discordant, 0.5).pvalue) if discordant else 1.0
    return only_method, only_control, p


def controls_table(results: Sequence[Result]) -> List[str]:
    """Markdown lines: for every landscape and pair of CONTROL_PAIRS, the paired comparison over the starts."""
    by_key = {(r.landscape.name, r.optimizer): r for r in results}
    lines = [
        "Controls, start by start (the same starts): *only A* / *only B* count the starts that one optimizer brings "
        "to the global basin and the other does not; *p* is the exact two-sided sign test on those starts. "
        "ALTO against ALTO(alpha=0) is E's own effect; ALTO(alpha=0) against Adam is the trust ratio's.",
        "",
        "| landscape | A | B | reached A | reached B | only A | only B | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for landscape in dict.fromkeys(r.landscape.name for r in results):
        for a, b in CONTROL_PAIRS:
            if (landscape, a) in by_key and (landscape, b) in by_key:
                first, second = by_key[(landscape, a)], by_key[(landscape, b)]
                only_a, only_b, p = paired_reach(first, second)
                lines.append(
                    f"| {first.landscape.title} | {a} | {b} | {100 * first.reached.mean():.0f}% | "
                    f"{100 * second.reached.mean():.0f}% | {only_a} | {only_b} | {p:.2g} |"
                )
    return lines


def markdown(results: Sequence[Result], command: str, seconds: float, quick: bool) -> str:
    lines = [
        "# Toy landscapes: Adam, Adam+CM, EAdam, ALTO, and the controls ALTO(alpha=0) and Lamb",
        "",
        "Generated by `valley bench landscapes`; every number and plot on this page comes from this run:",
        "",
        "```",
        command,
        "```",
        "",
    ]
    if quick:
        lines += ["**Quick mode (`--quick`): a smoke run with few starts and steps, not a result.**", ""]
    lines += [
        "A run *reaches the global basin* when its final point is within the basin radius of the global "
        "minimiser (Goldstein-Price: 0.3 of (0, -1); Ackley: 0.5 of the origin; 1-D: 0.5 of the flat "
        "minimum). *Ended in sharp minimum* (1-D only): within 0.25 of the sharp minimum. The medians are "
        "over all starts; *median final distance* is the final distance to the global minimiser (a run "
        "still oscillating inside the global basin counts as "
        "having reached it). The starts are a "
        "grid over the plotted square/interval, each point jittered by up to a quarter cell (`--seed`); "
        "every optimizer gets the same starts, steps and learning rate. Full-batch, noise-free gradients.",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(result.row()) + " |" for result in results]
    lines += ["", *controls_table(results)]
    lines += ["", "Hyperparameters (besides the learning rate in the table; `valley_core` factories):", ""]
    for name, (factory, kwargs) in OPTIMIZER_SETTINGS.items():
        lines.append(
            f"- {name}: `valley_core.{factory.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})`"
        )
    lines += [
        "",
        "Adam+CM runs with `synced=False` so that each start keys its own buffer on its own gradient "
        "norm (one tensor per start; for a single-tensor problem this is the same as the reference's "
        "`synced=True`). EAdam and ALTO use the exploring setting (`alpha=-5`, `beta1=0.99`, the paper's "
        "large-batch values). ALTO's trust ratio scales each step by the norm of the parameters, so a start near "
        "the origin of the parameter space takes very small steps. No hyperparameter was tuned per optimizer. "
        "Controls: ALTO(alpha=0) is ALTO with E switched off (the same code, Lamb's update) and Lamb is the base "
        "optimizer itself; where ALTO's row matches theirs, its difference from Adam comes from the trust ratio, "
        "not from E.",
        "",
    ]
    seen = []
    for result in results:
        if result.landscape.name not in seen:
            seen.append(result.landscape.name)
            name, title = result.landscape.name, result.landscape.title
            lines += [f"## {title}", "", f"![{title}](landscapes_{name}.png)", ""]
    lines += [
        "Green: reached the global basin; red: did not; blue (1-D): ended in the sharp minimum. "
        "2-D plots: the star is the global minimiser. 1-D plots: x against the step; dashed line, the flat "
        "(global) minimum; dotted line, the sharp minimum.",
        "",
        f"Wall time of the run: {seconds:.1f} s.",
        "",
    ]
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="few starts and steps (a smoke run, seconds)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_results/landscapes"),
        help="output directory for landscapes.md, landscapes.json and the PNGs",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter of the grid of starts")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    results: List[Result] = []
    for landscape in landscapes(args.quick):
        points = starts(landscape, rng)
        mine = [
            Result(landscape, name, trajectories(landscape, make_optimizer(name, landscape.lr), points))
            for name in OPTIMIZER_SETTINGS
        ]
        plot(landscape, mine, out / f"landscapes_{landscape.name}.png")
        results.extend(mine)
        for result in mine:
            print(" | ".join(result.row()), flush=True)
    command = (
        "valley bench landscapes"
        + (" --quick" if args.quick else "")
        + f" --out {shlex.quote(str(args.out))} --seed {args.seed}"
    )
    seconds = time.perf_counter() - started
    (out / "landscapes.md").write_text(markdown(results, command, seconds, args.quick))
    summary = [dict(zip(TABLE_COLUMNS, result.row())) for result in results]
    (out / "landscapes.json").write_text(json.dumps({"command": command, "rows": summary}, indent=1) + "\n")
    print(f"wrote {out / 'landscapes.md'} ({seconds:.1f} s)", file=sys.stderr)
    return 0
