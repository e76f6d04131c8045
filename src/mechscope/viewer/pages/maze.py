"""Pages for maze-agent runs (``mechscope.maze.runs``): training, behaviour and steering.

``maze-train``: the config, the final held-out reach (``curve.json``), the
curves, sample mazes and rollouts, and the policy and its checkpoints in step
order. ``maze-eval``: ``behaviour.json`` as tables (reach in training and
deployment mazes, P(toward cheese) at decision squares, rates binned by the
cheese's distance to the corner and to the decision square) beside its
figures. ``maze-steer``: the vector fields before and after subtracting the
cheese vector first, then its coefficient sweep and control, the cheese
channels, and retargeting with its calibration (``steer.json``). Files are
read as JSON (never torch); every value is escaped, an empty bin's NaN or null
shows as "—", and a missing or malformed file gives an error page naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ...errors import InputError
from ..html import Markup, definition_list, render, table
from ..registry import Document, Request, home
from ..runs import RunInfo
from .common import (
    download,
    figure_html,
    file_url,
    missing_file,
    read_run_json,
    tensor_links,
)
from .featureviz import interactive_figure, run_summary, tensors_link

MISSING = "—"  # an empty bin (NaN or null in the JSON) or an absent value
CHANNELS_SHOWN = 8  # cheese channels listed, strongest first
CALIBRATION_HEAD = ("channels", "strength", "reached", "without the edit")
STEP = re.compile(r"step-(?P<step>\d+)")
T = TypeVar("T")


# ---------------------------------------------------------------------------- reading


def _float(value: Any, key: str) -> float:
    """`value` as a float; null (an empty bin) is NaN."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} should be a number, got {value!r}")
    return float(value)


def num(obj: dict[str, Any], key: str) -> float:
    return _float(obj[key], key)


def _int(value: Any, key: str) -> int:
    whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not whole:
        raise ValueError(f"{key} should be a whole number, got {value!r}")
    return int(value)


def _obj(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{key} should be a JSON object, got {type(value).__name__}")
    return value


def _rows(value: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise TypeError(f"{key} should be a list, got {type(value).__name__}")
    return [_obj(row, key) for row in value]


def _load(run: RunInfo, relative: str, what: str, parse: Callable[[dict[str, Any]], T]) -> T:
    """``parse`` of the JSON object in `relative`; a 404 if missing, an error page if malformed."""
    data = read_run_json(run, relative)
    if data is None:
        raise missing_file(run, relative)
    try:
        return parse(_obj(data, "the file"))
    except (KeyError, TypeError, ValueError) as err:
        detail = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(f"{relative} of {run.kind} run {run.id} is not {what}: {detail}") from err


@dataclass(frozen=True)
class Bin:
    """Deployment mazes whose cheese is `lo`–`hi` squares away, and how the mouse fared."""

    lo: float
    hi: float
    mazes: int
    cheese: float  # share that reached the cheese
    corner: float  # share that reached the corner first
    p_cheese: float  # mean P(toward cheese) at their decision squares
    p_corner: float  # mean P(toward the corner) there (NaN in records that lack it)


@dataclass(frozen=True)
class Behaviour:
    """``behaviour.json`` (written by `eval_run`)."""

    train: dict[str, float]  # mazes, reach
    deploy: dict[str, float]  # mazes, reach, corner_first
    decision: dict[str, float]  # mazes, p_cheese, p_corner
    bins: dict[str, list[Bin]]  # by_corner_distance, by_decision_distance


def _curve(d: dict[str, Any]) -> tuple[float, Any]:
    """``curve.json``: the final held-out reach and over how many mazes."""
    return num(d, "final_reach"), d.get("n_eval")


def _behaviour(d: dict[str, Any]) -> Behaviour:
    def part(key: str, names: tuple[str, ...]) -> dict[str, float]:
        obj = _obj(d[key], key)
        return {"mazes": _int(obj["mazes"], "mazes"), **{n: num(obj, n) for n in names}}

    bins = {
        key: [
            Bin(num(r, "from"), num(r, "to"), _int(r["mazes"], "mazes"), num(r, "cheese"),
                num(r, "corner"), num(r, "p_cheese"), _float(r.get("p_corner"), "p_corner"))
            for r in _rows(d[key], key)
        ]
        for key in ("by_corner_distance", "by_decision_distance")
    }  # fmt: skip
    return Behaviour(
        part("train", ("reach",)),
        part("deploy", ("reach", "corner_first")),
        part("decision", ("p_cheese", "p_corner")),
        bins,
    )


@dataclass(frozen=True)
class Steer:
    """``steer.json`` (written by `steer_run`)."""

    site: str
    mazes: int
    coeff: float
    before: float  # mean P(toward cheese) at the decision squares
    after: float
    control: float
    lowered: float  # share of mazes whose P(toward cheese) went down
    vector_norm: float
    sweep: list[tuple[float, float, float]]  # coefficient, cheese vector, control
    channel_site: str
    channels: list[tuple[int, float]]  # channel, correlation; strongest first
    retarget: dict[
        str, Any
    ]  # site, channels, strength, mazes, reached, reached_plain, reached_cheese
    calibration: list[tuple[int, float, float, float]]  # channels, strength, reached, plain


def _steer(d: dict[str, Any]) -> Steer:
    ch, rt = _obj(d["channels"], "channels"), _obj(d["retarget"], "retarget")
    order, corr = ch["order"], ch["correlation"]
    if not isinstance(order, list) or not isinstance(corr, list) or len(order) != len(corr):
        raise ValueError("channels should hold order and correlation lists of one length")
    return Steer(
        str(d["site"]),
        _int(d["mazes"], "mazes"),
        num(d, "coeff"),
        num(d, "p_cheese_before"),
        num(d, "p_cheese_after"),
        num(d, "p_cheese_control"),
        num(d, "lowered"),
        num(d, "vector_norm") if "vector_norm" in d else math.nan,
        [(num(r, "coeff"), num(r, "cheese_vector"), num(r, "control"))
         for r in _rows(d["sweep"], "sweep")],
        str(ch["site"]),
        [(_int(c, "channel"), _float(r, "correlation"))
         for c, r in zip(order, corr, strict=True)],
        {"site": str(rt["site"]), "channels": [_int(c, "channel") for c in rt["channels"]],
         "strength": num(rt, "strength"), "mazes": _int(rt["mazes"], "mazes"),
         "reached": num(rt, "reached"), "reached_plain": num(rt, "reached_plain"),
         "reached_cheese": _float(rt.get("reached_cheese"), "reached_cheese")},
        [(_int(r["channels"], "channels"), num(r, "strength"), num(r, "reached"),
          num(r, "plain")) for r in _rows(rt["calibration"], "calibration")],
    )  # fmt: skip


# ---------------------------------------------------------------------------- pieces


def _p(x: float, spec: str = ".3f") -> str:
    """A probability or share as shown; "—" for NaN (an empty bin)."""
    return MISSING if math.isnan(x) else format(x, spec)


def _pct(x: float) -> str:
    return _p(x, ".1%")


def _given(value: Any) -> Any:
    return MISSING if value is None or value == "" else value


def animation(run: RunInfo, relative: str, caption: str) -> Markup:
    """An image of the run shown as is (a GIF plays), with a link; a note if it is absent."""
    if not (run.path / relative).is_file():
        return render('<p class="muted">No {rel}</p>', rel=relative)
    src = file_url(run, relative)
    return render(
        '<figure class="sae-figure animation"><img class="figure" src="{src}" alt="{c}">'
        '<figcaption>{c} <small><a href="{src}">{name}</a></small></figcaption></figure>',
        src=src,
        c=caption,
        name=relative.rsplit("/", 1)[-1],
    )


def bins_table(bins: list[Bin], what: str) -> Markup:
    """One row per distance bin: mazes, cheese reached, corner first, P(toward cheese / corner)."""
    rows = [
        (
            f"{b.lo:g}–{b.hi:g}",
            b.mazes,
            _pct(b.cheese),
            _pct(b.corner),
            _p(b.p_cheese),
            _p(b.p_corner),
        )
        for b in bins
    ]
    head = (what, "mazes", "cheese reached", "corner first", "P(toward cheese)", "P(toward corner)")
    return table(head, rows, cls="grid maze bins")


def checkpoints_table(run: RunInfo) -> Markup:
    """The saved checkpoints in step order (``MazePolicy.load`` reopens each)."""
    found = sorted((int(m["step"]), rel) for m, rel in tensor_links(run, "checkpoints", STEP))
    if not found:
        return Markup('<p class="muted">No checkpoints saved.</p>')
    rows = [(step, download(run, rel)) for step, rel in found]
    return table(("step", "checkpoint"), rows, cls="grid maze checkpoints")


def _star(value: object, chosen: bool) -> Markup:
    """A first cell, marked ★ in bold when its row is the one the run used."""
    return render("<strong>{v} ★</strong>", v=value) if chosen else render("{v}", v=value)


# ---------------------------------------------------------------------------- pages


@home("maze-train")
def train_home(req: Request) -> Document:
    """The training config, final reach, curves, sample mazes and rollouts, the saved policy."""
    run = req.the_run
    reach, n_eval = _load(run, "curve.json", "a maze training curve", _curve)
    c = run.config
    region, n_eval = c.get("region"), n_eval or c.get("n_eval")
    names = {"steps": "steps", "batch": "batch", "training mazes": "n_mazes", "seed": "seed"}
    facts = definition_list(
        {
            **{label: _given(c.get(key)) for label, key in names.items()},
            "cheese region": f"top-right {region}×{region}" if region is not None else MISSING,
            "method": _given(c.get("method")),
            "final reach": f"{_pct(reach)} of {_given(n_eval)} held-out training mazes",
            "finished": run.finished or MISSING,
        }
    )
    body = render(
        "{summary}{facts}<h2>Training</h2>"
        '<div class="figure-row"><div>{curve}</div><div>{reach}</div></div>'
        "<h2>Held-out mazes</h2>{mazes}{gif}<h2>Policy</h2>{policy}{checkpoints}",
        summary=run_summary(run),
        facts=facts,
        curve=interactive_figure(run, "curve", "imitation loss and action accuracy"),
        reach=interactive_figure(run, "reach", "cheese reached in held-out mazes while training"),
        mazes=figure_html(run, "mazes", "held-out training mazes"),
        gif=animation(run, "figures/rollouts.gif", "the trained mouse in four held-out mazes"),
        policy=tensors_link(run, "policy.safetensors", "The trained policy (MazePolicy.load)"),
        checkpoints=checkpoints_table(run),
    )
    return Document(f"Maze policy {run.id}", body)


@home("maze-eval")
def eval_home(req: Request) -> Document:
    """Reach in training and deployment mazes, rates binned by distance, vector fields."""
    run = req.the_run
    b = _load(run, "behaviour.json", "a maze behaviour record", _behaviour)
    c = run.config
    region = c.get("region")
    rows = [
        ("cheese reached, training mazes", _pct(b.train["reach"]),
         f"{b.train['mazes']} mazes, cheese in the top-right {_given(region)}×{_given(region)}"),
        ("cheese reached, deployment mazes", _pct(b.deploy["reach"]),
         f"{b.deploy['mazes']} mazes, cheese anywhere"),
        ("corner reached before the cheese", _pct(b.deploy["corner_first"]), "deployment mazes"),
        ("decision squares", b.decision["mazes"],
         "deployment mazes where the paths to cheese and corner part"),
        ("mean P(toward cheese)", _p(b.decision["p_cheese"]), "at the decision squares"),
        ("mean P(toward corner)", _p(b.decision["p_corner"]), "at the decision squares"),
    ]  # fmt: skip
    facts = definition_list(
        {
            "model": run.model or MISSING,
            "policy": _given(c.get("policy")),
            "seed": _given(c.get("seed")),
            "steps per rollout": _given(c.get("steps")),
            "finished": run.finished or MISSING,
        }
    )
    body = render(
        "{summary}{facts}<h2>Behaviour</h2>{table}"
        "<h2>By the cheese's distance to the top-right corner</h2>{corner_t}{corner_f}"
        "<h2>By the cheese's distance to the decision square</h2>{dec_t}{dec_f}"
        "<h2>Vector fields</h2><p>Each square's arrow is the policy's action probabilities "
        "there, in up to three deployment mazes: one solved with the cheese near the corner, "
        "one solved with it far away, one failed.</p>{fields}{gif}",
        summary=run_summary(run),
        facts=facts,
        table=table(("measure", "value", "over"), rows, cls="grid maze behaviour"),
        corner_t=bins_table(b.bins["by_corner_distance"], "to the corner (squares)"),
        corner_f=interactive_figure(run, "by_corner_distance", "rates by distance to the corner"),
        dec_t=bins_table(b.bins["by_decision_distance"], "to the decision square (squares)"),
        dec_f=interactive_figure(run, "by_decision_distance", "rates by decision-square distance"),
        fields=interactive_figure(run, "fields", "action probabilities in deployment mazes"),
        gif=animation(run, "figures/rollouts.gif", "the mouse in the same mazes"),
    )
    return Document(f"Maze behaviour {run.id}", body)


@home("maze-steer")
def steer_home(req: Request) -> Document:
    """The cheese vector's vector fields and effect, the cheese channels, retargeting."""
    run = req.the_run
    s = _load(run, "steer.json", "a maze steering record", _steer)
    rt = s.retarget
    vector = definition_list(
        {
            "site": s.site,
            "decision squares": s.mazes,
            "P(toward cheese)": f"{_p(s.before)} → {_p(s.after)} (cheese vector × {s.coeff:g})",
            "control": f"{_p(s.control)} (a vector from two cheese-free mazes, same norm)",
            "mazes lowered": _pct(s.lowered),
            "mean vector norm": _p(s.vector_norm),
        }
    )
    sweep = [(_star(f"{k:g}", math.isclose(k, s.coeff)), _p(v), _p(c)) for k, v, c in s.sweep]
    channels = [(c, _p(r, "+.3f")) for c, r in s.channels[:CHANNELS_SHOWN]]
    picked = (len(rt["channels"]), rt["strength"])
    calibration = [
        (_star(n, (n, k) == picked), f"{k:g}", _pct(r), _pct(p)) for n, k, r, p in s.calibration
    ]
    retarget = definition_list(
        {
            "site": rt["site"],
            "channels edited": ", ".join(map(str, rt["channels"])) or MISSING,
            "strength": f"{rt['strength']:g}",
            "target reached": f"{_pct(rt['reached'])} of {rt['mazes']} cheese-free mazes "
            f"(without the edit {_pct(rt['reached_plain'])}; a real cheese there "
            f"{_pct(rt['reached_cheese'])})",
        }
    )
    body = render(
        "{summary}<h2>The cheese vector</h2><p>Activations at <code>{site}</code> with "
        "the cheese minus without, subtracted while the mouse stands on the decision square.</p>"
        "{fields}{vector}"
        '<div class="figure-row"><div>{sweep}</div><div>{curve}</div></div>'
        "<h2>Cheese channels</h2><p>Channels of <code>{csite}</code> whose activation map "
        "follows the cheese's cell, strongest first ({shown} of {n}).</p>"
        '<div class="figure-row"><div>{channels}</div><div>{channels_f}</div></div>'
        "<h2>Retargeting</h2><p>The cheese channels' response to cheese written at a chosen "
        "square of a cheese-free maze; the edit was chosen on calibration mazes.</p>"
        "{retarget}{retarget_f}<h3>Calibration</h3>{calibration}{effect}",
        summary=run_summary(run),
        site=s.site,
        fields=interactive_figure(
            run, "fields_cheese_vector", "action probabilities before and after"
        ),
        vector=vector,
        sweep=table(("coefficient", "cheese vector", "control"), sweep, cls="grid maze sweep"),
        curve=interactive_figure(run, "cheese_vector", "P(toward cheese) per coefficient"),
        csite=s.channel_site,
        shown=min(CHANNELS_SHOWN, len(s.channels)),
        n=len(s.channels),
        channels=table(("channel", "correlation"), channels, cls="grid maze channels"),
        channels_f=interactive_figure(run, "channels", "correlation of each channel"),
        retarget=retarget,
        retarget_f=interactive_figure(run, "fields_retarget", "without cheese, then with the edit"),
        calibration=table(CALIBRATION_HEAD, calibration, cls="grid maze calibration"),
        effect=tensors_link(run, "effect.safetensors", "P(toward cheese) per maze"),
    )
    return Document(f"Maze steering {run.id}", body)
