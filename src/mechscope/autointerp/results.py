"""What an explain run (`explain_run`) leaves, read back: its summary and its typed rows.

The finished run's summary of scores (mean per method and scorer over the
units, with a 95% bootstrap interval) is `ExplainSummary`, a `Result` saved as
``summary.safetensors``. The explanations, scores and simulations are the
pipeline's crash-safe append logs (``explanations.jsonl``, ``scores.jsonl``,
``simulations.jsonl``, with Parquet copies beside them); `ExplainRun.open`
reads them as typed rows (`ExplanationRow`, `ScoreRow`, `SimulationRow`), a
malformed row being a one-line `InputError`. Nothing here needs torch, so the
viewer reads runs with it.

Example::

    run = ExplainRun.open("runs/explain")
    run.explanation(("blocks.20.mlp.post", 7), "llm").text    # 'commas in lists'
    run.score(("blocks.20.mlp.post", 7), "llm", "detection").score
    ExplainSummary.load("runs/explain/summary.safetensors").table()
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InputError
from ..results import Result, result
from ..store import read_json_object

__all__ = [
    "ExplainRun",
    "ExplainSummary",
    "ExplanationRow",
    "MethodScore",
    "ScoreRow",
    "SimulationRow",
    "linked_harvest",
    "read_jsonl",
]

Unit = tuple[str, int]
T = TypeVar("T")


# ---------------------------------------------------------------------------- the summary


@dataclass(frozen=True)
class MethodScore:
    """The mean score of one explanation method under one scorer over `n` units, with its
    95% bootstrap interval [lo, hi] (NaN when no unit has a score).

    Example: ``MethodScore("llm", "detection", 0.71, 0.62, 0.8, 20)``.
    """

    method: str
    scorer: str
    mean: float
    lo: float
    hi: float
    n: int


@result
class ExplainSummary(Result):
    """A finished explain run's scores: one `MethodScore` per method and scorer, the units
    explained and how many LLM explanations failed.

    Example::

        summary = ExplainSummary.load("runs/explain/summary.safetensors", arrays="numpy")
        summary.row("llm", "correlation").mean
        print(summary.table())
    """

    format = "mechscope.explain_summary/1"

    rows: list[MethodScore]
    units: list[tuple[str, int]] = field(default_factory=list)
    failed_explanations: int = 0

    def row(self, method: str, scorer: str) -> MethodScore | None:
        """The row of `method` under `scorer`, or None."""
        return next((r for r in self.rows if (r.method, r.scorer) == (method, scorer)), None)

    def records(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (``method``, ``scorer``, ``mean``, ``lo``, ``hi``, ``n``).

        Example: ``score_table(summary.records(), "16 units")``.
        """
        return [asdict(r) for r in self.rows]

    def table(self) -> str:
        """Mean score per method and scorer with 95% bootstrap intervals, as text.

        Example: ``print(summary.table())`` → ``method      scorer       mean  95% CI …``.
        """
        lines = [f"{'method':<11} {'scorer':<12} {'mean':>7}  95% CI            units"]
        for r in self.rows:
            lines.append(
                f"{r.method:<11} {r.scorer:<12} {r.mean:>7.3f}  "
                f"[{r.lo:+.3f}, {r.hi:+.3f}]  {r.n:>5}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        head = f"{len(self.units)} units, {self.failed_explanations} failed LLM explanations"
        return f"{head}\n{self.table()}"


# ---------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class ExplanationRow:
    """One method's explanation of one unit; `failed` ones keep their error and raw answer.
    A ``random`` explanation is the LLM one of its `donor` unit.

    Example: ``run.explanation(("blocks.1.mlp.post", 0), "llm").text`` → ``'the letter e'``.
    """

    site: str
    unit: int
    method: str
    text: str = ""
    raw: str = ""
    failed: bool = False
    error: str | None = None
    donor: Unit | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    cached: bool = False


@dataclass(frozen=True)
class ScoreRow:
    """One unit's score of one method under one scorer; `failed` answers not counted, and a
    `note` when there was nothing to score (no explanation).

    Example: ``run.score(("blocks.1.mlp.post", 0), "llm", "fuzzing").score`` → ``0.75``.
    """

    site: str
    unit: int
    method: str
    scorer: str
    score: float | None = None
    failed: int = 0
    note: str | None = None


@dataclass(frozen=True)
class SimulationRow:
    """One held-out window simulated from one method's explanation: the true activations and
    the simulated ones (None when the simulation failed: then its error and raw answer).

    Example: ``run.simulations()[("blocks.1.mlp.post", 0)]["llm"][0].correlation()``.
    """

    site: str
    unit: int
    method: str
    window: int
    kind: str
    tokens: list[str]
    true: list[float]
    simulated: list[float] | None = None
    scorer: str = "correlation"
    raw: str | None = None
    error: str | None = None

    def correlation(self) -> float:
        """Pearson r of simulated against true activations (NaN if failed or constant)."""
        xs, ys = self.simulated, self.true
        n = len(ys)
        if xs is None or n < 2 or len(xs) != n:
            return math.nan
        mx, my = sum(xs) / n, sum(ys) / n
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
        sxx = sum((x - mx) ** 2 for x in xs)
        syy = sum((y - my) ** 2 for y in ys)
        return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def _explanation(r: Mapping[str, Any]) -> ExplanationRow:
    donor = r.get("donor_site")
    return ExplanationRow(
        site=str(r["site"]),
        unit=int(r["unit"]),
        method=str(r["method"]),
        text=str(r.get("text") or ""),
        raw=str(r.get("raw") or ""),
        failed=bool(r.get("failed")),
        error=r.get("error"),
        donor=None if donor is None else (str(donor), int(r["donor_unit"])),
        tokens_in=int(r.get("tokens_in") or 0),
        tokens_out=int(r.get("tokens_out") or 0),
        seconds=float(r.get("seconds") or 0.0),
        cached=bool(r.get("cached")),
    )


def _score(r: Mapping[str, Any]) -> ScoreRow:
    score = r.get("score")
    return ScoreRow(
        site=str(r["site"]),
        unit=int(r["unit"]),
        method=str(r["method"]),
        scorer=str(r["scorer"]),
        score=None if score is None else float(score),
        failed=int(r.get("failed") or 0),
        note=r.get("note"),
    )


def _simulation(r: Mapping[str, Any]) -> SimulationRow:
    simulated = r.get("simulated")
    return SimulationRow(
        site=str(r["site"]),
        unit=int(r["unit"]),
        method=str(r["method"]),
        window=int(r["window"]),
        kind=str(r["kind"]),
        tokens=[str(t) for t in r["tokens"]],
        true=[float(v) for v in r["true"]],
        simulated=None if simulated is None else [float(v) for v in simulated],
        scorer=str(r.get("scorer") or "correlation"),
        raw=r.get("raw"),
        error=r.get("error"),
    )


# ---------------------------------------------------------------------------- reading a run


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a last line cut by a kill is ignored.

    Example: ``read_jsonl(Path("runs/explain/scores.jsonl"))`` → a list of dicts ([] if absent).
    """
    if not path.exists():
        return []
    out = []
    # split on newlines only: str.splitlines also cuts at U+2028 or U+0085 inside a string
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def _records(folder: Path, name: str) -> list[dict[str, Any]]:
    """Rows of ``name.jsonl`` (the pipeline's log), else of ``name.parquet``; [] if neither."""
    jsonl, parquet = folder / f"{name}.jsonl", folder / f"{name}.parquet"
    try:
        if jsonl.exists():
            return read_jsonl(jsonl)
        if parquet.exists():
            import pyarrow.parquet as pq

            # a folder would be read as a (here empty) data set, and pyarrow reads the footer only
            with open(parquet, "rb") as f:
                if f.read(4) != b"PAR1":
                    raise ValueError(f"{parquet.name} is not a Parquet file")
            return pq.read_table(parquet).to_pylist()
    except (OSError, UnicodeDecodeError, ValueError) as err:
        message = " ".join(str(err).split())
        raise InputError(f"cannot read {name} of {folder}: {message}") from None
    return []


def _typed(folder: Path, name: str, parse: Callable[[Mapping[str, Any]], T]) -> list[T]:
    out = []
    for i, r in enumerate(_records(folder, name)):
        try:
            out.append(parse(r))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(
                f"{folder}/{name}: row {i + 1} is not a {name} row ({err!r})"
            ) from None
    return out


def linked_harvest(run_path: Path, raw: object) -> Path | None:
    """The harvest run folder an explain run's config names (relative: to the cwd or the run).

    Example: ``linked_harvest(Path("runs/explain"), "runs/harvest")`` → the harvest's folder,
    or None when no finished harvest is there.
    """
    if not isinstance(raw, str) or not raw:
        return None
    path = Path(raw).expanduser()
    candidates = [path] if path.is_absolute() else [path, run_path.parent / path, run_path / path]
    for candidate in candidates:
        if (candidate / "run.json").is_file():
            return candidate.resolve()
    return None


@dataclass(frozen=True)
class ExplainRun:
    """An explain run folder's explanations and scores by unit, and what it was asked to do
    (its config); its simulations (bigger) and summary are read when asked for.

    Example::

        run = ExplainRun.open("runs/explain")
        for unit in run.units:
            print(unit, run.explanation(unit, "llm").text)
    """

    path: Path
    config: dict[str, Any]
    units: list[Unit]
    methods: list[str]
    scorers: list[str]
    explanations: dict[tuple[str, int, str], ExplanationRow]
    scores: dict[tuple[str, int, str, str], ScoreRow]

    @classmethod
    def open(
        cls, folder: str | os.PathLike[str], config: Mapping[str, Any] | None = None
    ) -> ExplainRun:
        """Read the run in `folder` (`config`: its config.json when already read)."""
        path = Path(folder)
        if not path.is_dir():
            raise InputError(f"no explain run at {path}")
        if config is None:
            config = read_json_object(path / "config.json") or {}
        if not isinstance(config, Mapping):
            raise InputError(f"{path / 'config.json'} should hold a JSON object")
        try:
            units = [(str(s), int(u)) for s, u in config.get("units", [])]
            methods = [str(m) for m in config.get("methods", [])]
            scorers = [str(s) for s in config.get("scorers", [])]
        except (TypeError, ValueError) as err:
            raise InputError(
                f"{path}: config.json has unreadable units or methods ({err})"
            ) from None
        explanations = {
            (r.site, r.unit, r.method): r for r in _typed(path, "explanations", _explanation)
        }
        scores = {(r.site, r.unit, r.method, r.scorer): r for r in _typed(path, "scores", _score)}
        return cls(path, dict(config), units, methods, scorers, explanations, scores)

    @property
    def harvest(self) -> Path | None:
        """The folder of the harvest it explains, when that harvest is found."""
        return linked_harvest(self.path, self.config.get("harvest"))

    @property
    def donors(self) -> dict[Unit, Unit]:
        """The unit whose LLM explanation each unit's ``random`` baseline borrowed."""
        return {
            (r.site, r.unit): r.donor
            for r in self.explanations.values()
            if r.method == "random" and r.donor is not None
        }

    def explanation(self, unit: Unit, method: str) -> ExplanationRow | None:
        """`method`'s explanation of `unit`, or None."""
        return self.explanations.get((*unit, method))

    def score(self, unit: Unit, method: str, scorer: str) -> ScoreRow | None:
        """`unit`'s score of `method` under `scorer`, or None."""
        return self.scores.get((*unit, method, scorer))

    def simulations(self) -> dict[Unit, dict[str, list[SimulationRow]]]:
        """Every simulated window, by unit and method (read from the folder at each call)."""
        out: dict[Unit, dict[str, list[SimulationRow]]] = {}
        for r in _typed(self.path, "simulations", _simulation):
            out.setdefault((r.site, r.unit), {}).setdefault(r.method, []).append(r)
        return out

    def summary(self) -> ExplainSummary | None:
        """The run's `ExplainSummary` (numpy, no torch), or None when it did not finish."""
        path = self.path / "summary.safetensors"
        return ExplainSummary.load(path, arrays="numpy") if path.is_file() else None
