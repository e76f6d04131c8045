"""Pages for maze-agent runs (``mechscope.maze.runs``): training, behaviour and steering.

``maze-train``: the config, the final held-out reach (the `TrainingCurve`,
``curve.safetensors``), the curves, sample mazes and rollouts, and the policy
and its checkpoints in step order. ``maze-eval``: the `BehaviourReport`
(``report.safetensors``) as tables (reach in training and deployment mazes,
P(toward cheese) at decision squares, rates binned by the cheese's distance
to the corner and to the decision square) beside its figures.
``maze-steer``: the vector fields before and after subtracting the cheese
vector first, then its coefficient sweep and control, the cheese channels,
and retargeting with its calibration (the `SteerReport`,
``steer.safetensors``). Results are read without torch; every value is
escaped, an empty bin's NaN shows as "—", and a missing or unreadable file
gives an error page naming it.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeVar

from ...maze.reports import BehaviourReport, DistanceBin, SteerReport, TrainingCurve
from ...results import Result
from ..html import Markup, render, template
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import download, figure_html, file_url, missing_file, tensor_links
from .featureviz import interactive_figure, run_summary, tensors_link

MISSING = "—"  # an empty bin (NaN) or an absent value
CHANNELS_SHOWN = 8  # cheese channels listed, strongest first
STEP = re.compile(r"step-(?P<step>\d+)")
CURVE_FILE, REPORT_FILE, STEER_FILE = "curve.safetensors", "report.safetensors", "steer.safetensors"
R = TypeVar("R", bound=Result)


# ---------------------------------------------------------------------------- pieces


def _open(req: Request, relative: str, cls: type[R]) -> R:
    """The run's result `relative`; a 404 naming it when the run has none."""
    found = req.app.result(req.the_run, relative, cls)
    if found is None:
        raise missing_file(req.the_run, relative)
    return found


def _p(x: float, spec: str = ".3f") -> str:
    """A probability or share as shown; "—" for NaN (an empty bin)."""
    return MISSING if math.isnan(x) else format(x, spec)


def _pct(x: float) -> str:
    return _p(x, ".1%")


def _given(value: Any) -> Any:
    return MISSING if value is None or value == "" else value


def animation(run: RunInfo, relative: str, caption: str) -> dict[str, str]:
    """An image of the run shown as is (a GIF plays), for the ``animation`` macro.

    Example: ``animation(run, "figures/rollouts.gif", "the mouse")["src"]``.
    """
    present = (run.path / relative).is_file()
    return {"relative": relative, "caption": caption, "name": relative.rsplit("/", 1)[-1],
            "src": file_url(run, relative) if present else ""}  # fmt: skip


def bins_rows(bins: list[DistanceBin]) -> list[tuple[object, ...]]:
    """One row per distance bin: mazes, cheese reached, corner first, P(toward cheese / corner)."""
    return [
        (f"{b.lo:g}–{b.hi:g}", b.mazes, _pct(b.cheese), _pct(b.corner), _p(b.p_cheese),
         _p(b.p_corner))
        for b in bins
    ]  # fmt: skip


def checkpoint_rows(run: RunInfo) -> list[tuple[int, Markup]]:
    """The saved checkpoints in step order (``MazePolicy.load`` reopens each)."""
    found = sorted((int(m["step"]), rel) for m, rel in tensor_links(run, "checkpoints", STEP))
    return [(step, download(run, rel)) for step, rel in found]


def _star(value: object, chosen: bool) -> Markup:
    """A first cell, marked ★ in bold when its row is the one the run used."""
    return render("<strong>{v} ★</strong>", v=value) if chosen else render("{v}", v=value)


# ---------------------------------------------------------------------------- pages


@home("maze-train")
def train_home(req: Request) -> Document:
    """The training config, final reach, curves, sample mazes and rollouts, the saved policy."""
    run = req.the_run
    curve = _open(req, CURVE_FILE, TrainingCurve)
    c = run.config
    region, n_eval = c.get("region"), curve.n_eval or c.get("n_eval")
    names = {"steps": "steps", "batch": "batch", "training mazes": "n_mazes", "seed": "seed"}
    facts = {
        **{label: _given(c.get(key)) for label, key in names.items()},
        "cheese region": f"top-right {region}×{region}" if region is not None else MISSING,
        "method": _given(c.get("method")),
        "final reach": f"{_pct(curve.final_reach)} of {_given(n_eval)} held-out training mazes",
        "finished": run.finished or MISSING,
    }
    body = template(
        "maze/train.html",
        summary=run_summary(run),
        facts=facts,
        curve=interactive_figure(run, "curve", "imitation loss and action accuracy"),
        reach=interactive_figure(run, "reach", "cheese reached in held-out mazes while training"),
        mazes=figure_html(run, "mazes", "held-out training mazes"),
        gif=animation(run, "figures/rollouts.gif", "the trained mouse in four held-out mazes"),
        policy=tensors_link(run, "policy.safetensors", "The trained policy (MazePolicy.load)"),
        checkpoints=checkpoint_rows(run),
    )
    return Document(f"Maze policy {run.id}", body)


@home("maze-eval")
def eval_home(req: Request) -> Document:
    """Reach in training and deployment mazes, rates binned by distance, vector fields."""
    run = req.the_run
    b = _open(req, REPORT_FILE, BehaviourReport)
    c = run.config
    region = _given(c.get("region"))
    rows = [
        ("cheese reached, training mazes", _pct(b.train_reach),
         f"{b.train_mazes} mazes, cheese in the top-right {region}×{region}"),
        ("cheese reached, deployment mazes", _pct(b.deploy_reach),
         f"{b.deploy_mazes} mazes, cheese anywhere"),
        ("corner reached before the cheese", _pct(b.corner_first), "deployment mazes"),
        ("decision squares", b.decisions,
         "deployment mazes where the paths to cheese and corner part"),
        ("mean P(toward cheese)", _p(b.p_cheese), "at the decision squares"),
        ("mean P(toward corner)", _p(b.p_corner), "at the decision squares"),
    ]  # fmt: skip
    facts = {
        "model": run.model or MISSING,
        "policy": _given(c.get("policy")),
        "seed": _given(c.get("seed")),
        "steps per rollout": _given(c.get("steps")),
        "finished": run.finished or MISSING,
    }
    body = template(
        "maze/eval.html",
        summary=run_summary(run),
        facts=facts,
        rows=rows,
        corner_rows=bins_rows(b.by_corner_distance),
        corner_f=interactive_figure(run, "by_corner_distance", "rates by distance to the corner"),
        decision_rows=bins_rows(b.by_decision_distance),
        decision_f=interactive_figure(
            run, "by_decision_distance", "rates by decision-square distance"
        ),
        fields=interactive_figure(run, "fields", "action probabilities in deployment mazes"),
        gif=animation(run, "figures/rollouts.gif", "the mouse in the same mazes"),
    )
    return Document(f"Maze behaviour {run.id}", body)


@home("maze-steer")
def steer_home(req: Request) -> Document:
    """The cheese vector's vector fields and effect, the cheese channels, retargeting."""
    run = req.the_run
    s = _open(req, STEER_FILE, SteerReport)
    rt = s.retarget
    vector = {
        "site": s.site,
        "decision squares": s.mazes,
        "P(toward cheese)": f"{_p(s.p_cheese_before)} → {_p(s.p_cheese_after)} "
        f"(cheese vector × {s.coeff:g})",
        "control": f"{_p(s.p_cheese_control)} (a vector from two cheese-free mazes, same norm)",
        "mazes lowered": _pct(s.lowered),
        "mean vector norm": _p(s.vector_norm),
    }
    sweep = [
        (_star(f"{p.coeff:g}", math.isclose(p.coeff, s.coeff)), _p(p.cheese_vector), _p(p.control))
        for p in s.sweep
    ]
    channels = list(zip(s.channel_order, s.correlation, strict=True))
    picked = (len(rt.channels), rt.strength)
    calibration = [
        (_star(k.channels, (k.channels, k.strength) == picked), f"{k.strength:g}",
         _pct(k.reached), _pct(k.plain))
        for k in rt.calibration
    ]  # fmt: skip
    retarget = {
        "site": rt.site,
        "channels edited": ", ".join(map(str, rt.channels)) or MISSING,
        "strength": f"{rt.strength:g}",
        "target reached": f"{_pct(rt.reached)} of {rt.mazes} cheese-free mazes "
        f"(without the edit {_pct(rt.reached_plain)}; a real cheese there "
        f"{_pct(rt.reached_cheese)})",
    }
    body = template(
        "maze/steer.html",
        summary=run_summary(run),
        site=s.site,
        fields=interactive_figure(
            run, "fields_cheese_vector", "action probabilities before and after"
        ),
        vector=vector,
        sweep=sweep,
        curve=interactive_figure(run, "cheese_vector", "P(toward cheese) per coefficient"),
        channel_site=rt.site,
        channels=[(c, _p(r, "+.3f")) for c, r in channels[:CHANNELS_SHOWN]],
        n_channels=len(channels),
        channels_f=interactive_figure(run, "channels", "correlation of each channel"),
        retarget=retarget,
        retarget_f=interactive_figure(run, "fields_retarget", "without cheese, then with the edit"),
        calibration=calibration,
        effect=tensors_link(run, "effect.safetensors", "P(toward cheese) per maze"),
    )
    return Document(f"Maze steering {run.id}", body)
