"""The explain → simulate → score pipeline over units of a harvest, as a resumable run.

For each unit, the explainer sees the even-ranked top windows (the first
`n_show`); the odd-ranked top windows and the random windows are held out for
scoring. Three explanation methods are scored the same way: the language
model's (`llm`), the unit's most frequent peak tokens (`top_tokens`) and
another unit's LLM explanation (`random`, a seeded derangement). Every
answer, failed ones included with their raw text, is appended to JSONL files
as it arrives, so a killed run started again goes on where it stopped (the rows
of a unit a kill cut short are dropped and the unit redone); the
finished run holds Parquet tables and a summary with bootstrap intervals
(`ExplainSummary`, ``summary.safetensors``); `ExplainRun.open` reads a run back.

Example::

    from mechscope.autointerp import explain_run, LocalBackend
    result = explain_run(store, [("blocks.20.mlp.post", u) for u in range(20)],
                           explainer=LocalBackend(model), out="runs/explain")
    print(result.table())
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .._arrays import atomic_file
from ..engine import check_engine, torch_threads
from ..errors import InputError
from ..harvest.tables import HarvestStore, UnitRecord
from ..store import new_run
from .backends import Backend, LocalBackend
from .explainer import Explanation, explain, top_tokens_explanation
from .results import ExplainSummary, MethodScore, read_jsonl
from .scoring import Judge, correlation, detection, fuzzing, mean_ci
from .simulator import JsonSimulator, LogprobSimulator

METHODS = ("llm", "top_tokens", "random")
SCORERS = ("correlation", "detection", "fuzzing")


@dataclass(frozen=True)
class ExplainResult:
    """A finished explanation run: its folder, its `ExplainSummary` and its run.json record.

    The per-unit explanations and scores are read with ``ExplainRun.open(result.path)``.

    Example: ``print(explain_run(store, units, explainer=backend, out="runs/explain").table())``.
    """

    path: Path
    summary: ExplainSummary
    record: dict[str, Any]

    def table(self) -> str:
        """Mean score per method and scorer with 95% bootstrap intervals, as text."""
        return self.summary.table()

    def __repr__(self) -> str:
        return f"ExplainResult({self.path})\n{self.table()}"


def _split(record: UnitRecord, n_show: int, n_test: int) -> tuple[list, list, list]:
    shown = record.top[0::2][:n_show]
    held_top = record.top[1::2][:n_test]
    held_random = record.random[:n_test]
    return shown, held_top, held_random


def _repair(path: Path) -> None:
    """Cut a line left half-written by a kill, so appending goes on cleanly."""
    if path.exists():
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(path, "r+b") as f:
                f.truncate(end)


def _keep_units(path: Path, whole: set[tuple[str, int]]) -> None:
    """Drop the rows of units not in `whole` (a unit whose rows a kill cut short, to be redone).

    Only units at the end of the file can be cut short, so the rows kept are the file's
    first ones, in order: the resumed run appends exactly what the uninterrupted one wrote.
    """
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")[:-1]
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # as `read_jsonl`: a damaged line ends the records
            break
        if _unit(row) in whole:
            kept.append(line)
    if len(kept) < len(lines):
        with atomic_file(path) as tmp:
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))


def _unit(row: dict[str, Any]) -> tuple[str, int]:
    return row["site"], row["unit"]


def _whole_units(
    folder: Path, methods: Sequence[str], scorers: Sequence[str]
) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """The units whose explanations, and whose scores, were all written before a kill.

    A unit's explanations are its LLM one (if a method needs it) and its top tokens; its
    scores are one row per method and scorer, written after its simulations.
    """
    wanted = {"top_tokens"} | ({"llm"} if {"llm", "random"} & set(methods) else set())
    explained: dict[tuple[str, int], set[str]] = {}
    for r in read_jsonl(folder / "explanations.jsonl"):
        explained.setdefault(_unit(r), set()).add(r["method"])
    scored: dict[tuple[str, int], int] = {}
    for r in read_jsonl(folder / "scores.jsonl"):
        scored[_unit(r)] = scored.get(_unit(r), 0) + 1
    n_scores = len(methods) * len(scorers)
    return (
        {u for u, found in explained.items() if wanted <= found},
        {u for u, n in scored.items() if n == n_scores},
    )


def _append(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()


def make_simulators(backend: Backend) -> tuple[LogprobSimulator | JsonSimulator, Judge]:
    """The simulator (log-probabilities for a local backend, JSON otherwise) and judge of `backend`.

    Example: ``sim, judge = make_simulators(LocalBackend(model))`` → a `LogprobSimulator` and
    a `Judge`.
    """
    sim = LogprobSimulator(backend) if isinstance(backend, LocalBackend) else JsonSimulator(backend)
    return sim, Judge(backend)


def explain_unit(
    explainer: Backend,
    record: UnitRecord,
    site: str,
    unit: int,
    methods: Sequence[str],
    n_show: int,
    n_test: int,
) -> list[dict[str, Any]]:
    """One unit's explanation rows: the LLM's (if a method needs it) and its top tokens.

    Example::

        rows = explain_unit(backend, store.unit("blocks.20.mlp.post", 7), "blocks.20.mlp.post", 7,
                            ["llm", "top_tokens"], n_show=5, n_test=5)   # two dicts
    """
    shown, _, _ = _split(record, n_show, n_test)
    lines = []
    if "llm" in methods or "random" in methods:
        lines.append(explain(explainer, shown, scale=record.stats.max, site=site, unit=unit))
    lines.append(Explanation(site, unit, "top_tokens", top_tokens_explanation(shown)))
    return [asdict(e) for e in lines]


def score_unit(
    sim: LogprobSimulator | JsonSimulator,
    judge: Judge,
    record: UnitRecord,
    site: str,
    unit: int,
    texts: dict[str, str | None],
    methods: Sequence[str],
    scorers: Sequence[str],
    n_show: int,
    n_test: int,
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One unit's score rows and simulation rows, from its explanation text per method.

    Example::

        rows, sims = score_unit(*make_simulators(backend), record, "blocks.20.mlp.post", 7,
                                {"llm": "commas"}, ["llm"], ["detection"], 5, 5, seed=0)
    """
    _, held_top, held_random = _split(record, n_show, n_test)
    scale = record.stats.max
    rows, sims = [], []
    for method in methods:
        text = texts.get(method)
        for scorer in scorers:
            row = {"site": site, "unit": unit, "method": method, "scorer": scorer}
            if text is None:
                rows.append({**row, "score": None, "failed": 1, "note": "no explanation"})
                continue
            if scorer == "correlation":
                windows = [*held_top, *held_random]
                results = sim.simulate_many([(text, w.tokens) for w in windows])
                ok = [(r, w) for r, w in zip(results, windows, strict=True) if not r.failed]
                score = correlation([r.values for r, _ in ok], [w.acts for _, w in ok])
                failed = len(windows) - len(ok)
                for r, w in zip(results, windows, strict=True):
                    sims.append(
                        {
                            **row,
                            "window": w.window,
                            "kind": w.kind,
                            "tokens": w.tokens,
                            "true": w.acts,
                            "simulated": r.values,
                            "raw": r.raw,
                            "error": r.error,
                        }
                    )
            elif scorer == "detection":
                score, failed = detection(judge, text, held_top, held_random)
            else:
                score, failed = fuzzing(judge, text, held_top, scale, seed=seed + unit)
            rows.append({**row, "score": score, "failed": failed, "note": None})
    return rows, sims


def explain_run(
    store: HarvestStore,
    units: Sequence[tuple[str, int]],
    *,
    explainer: Backend,
    simulator: Backend | None = None,
    out: str | Path,
    methods: Sequence[str] = METHODS,
    scorers: Sequence[str] = SCORERS,
    n_show: int = 5,
    n_test: int = 5,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> ExplainResult:
    """Explain, simulate and score each unit of `units` of a harvest; write a run at `out`.

    `simulator` (default: the explainer) also judges detection and fuzzing.
    A local backend simulates from log-probabilities, any other from JSON.
    ``engine="ray"`` spreads the units over Ray tasks (`mechscope.engine.explain`)
    for the same rows; `threads` is torch's threads per process.

    Example::

        units = [("blocks.20.mlp.post", u) for u in range(10)]
        explain_run(store, units, explainer=LocalBackend(model), out="runs/explain").summary
        # an ExplainSummary: .row("llm", "detection").mean
    """
    check_engine(engine, address=address, workers=workers, threads=threads)
    bad = [m for m in methods if m not in METHODS] + [s for s in scorers if s not in SCORERS]
    if bad:
        raise InputError(
            f"unknown method/scorer {', '.join(bad)}; methods: {', '.join(METHODS)}; "
            f"scorers: {', '.join(SCORERS)}"
        )
    if not units:
        raise InputError("explain_run needs at least one (site, unit)")
    for name, value in (("n_show (--show)", n_show), ("n_test (--test)", n_test)):
        if value < 1:
            raise InputError(f"{name} must be at least 1 window, got {value}")
    for site, unit in units:
        store.n_units(site)  # unknown site: a clear error
        if not 0 <= unit < store.n_units(site):
            raise InputError(f"{site} has units 0…{store.n_units(site) - 1}, not {unit}")
    sim_backend = simulator or explainer
    sim, judge = make_simulators(sim_backend)
    config = {
        "harvest": str(store.path),
        "model": store.config["model"],
        "units": [list(u) for u in units],
        "explainer": explainer.name,
        "simulator": sim.name,
        "judge": judge.name,
        "methods": list(methods),
        "scorers": list(scorers),
        "n_show": n_show,
        "n_test": n_test,
        "seed": seed,
    }
    run = new_run("explain", out, config, resume=resume)
    folder = run.dir
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(threads))
        ray = None
        if engine == "ray":
            from ..engine.explain import RayUnits

            ray = stack.enter_context(
                RayUnits(folder / ".engine", address, workers, threads or 1, progress)
            )
        started = time.perf_counter()
        records = {u: store.unit(*u) for u in units}

        # 1. explanations
        exp_file = folder / "explanations.jsonl"
        score_file = folder / "scores.jsonl"
        sim_file = folder / "simulations.jsonl"
        for file in (exp_file, score_file, sim_file):
            _repair(file)
        explained, scored = _whole_units(folder, methods, scorers)
        _keep_units(exp_file, explained)
        _keep_units(score_file, scored)
        _keep_units(sim_file, scored)
        done = {(r["site"], r["unit"]) for r in read_jsonl(exp_file)}
        todo = [u for u in units if u not in done]
        if ray is not None and todo:
            for rows in ray.explain(todo, records, explainer, methods, n_show, n_test):
                _append(exp_file, rows)
        else:
            for site, unit in tqdm(todo, desc="explain", disable=not progress):
                rows = explain_unit(
                    explainer, records[(site, unit)], site, unit, methods, n_show, n_test
                )
                _append(exp_file, rows)
        explanations = {(r["site"], r["unit"], r["method"]): r for r in read_jsonl(exp_file)}
        if "random" in methods:
            # the random baseline: another unit's LLM explanation (a seeded derangement), recorded
            shuffled = list(units)
            random.Random(seed).shuffle(shuffled)
            donor = {u: shuffled[(i + 1) % len(shuffled)] for i, u in enumerate(shuffled)}
            new = []
            for u in units:
                if (*u, "random") in explanations:
                    continue
                source = explanations.get((*donor[u], "llm")) if len(units) > 1 else None
                ok = source is not None and not source["failed"]
                new.append(
                    {
                        **asdict(Explanation(*u, "random", source["text"] if ok else "")),
                        "failed": not ok,
                        "error": None if ok else "no LLM explanation of another unit to borrow",
                        "donor_site": donor[u][0] if len(units) > 1 else None,
                        "donor_unit": donor[u][1] if len(units) > 1 else None,
                    }
                )
            _append(exp_file, new)
            explanations = {(r["site"], r["unit"], r["method"]): r for r in read_jsonl(exp_file)}
        run.timed("explain", started)
        scoring_started = time.perf_counter()

        def texts_of(unit: tuple[str, int]) -> dict[str, str | None]:
            recs = {m: explanations.get((*unit, m)) for m in methods}
            return {m: None if r is None or r["failed"] else r["text"] for m, r in recs.items()}

        # 2. simulation and scores
        done_scores = {(r["site"], r["unit"]) for r in read_jsonl(score_file)}
        todo = [u for u in units if u not in done_scores]
        texts = {u: texts_of(u) for u in todo}
        if ray is not None and todo:
            scored = ray.score(
                todo, records, texts, sim_backend, methods, scorers, n_show, n_test, seed
            )
        else:
            sims_of = make_simulators(sim_backend)
            scored = (
                score_unit(
                    *sims_of, records[u], *u, texts[u], methods, scorers, n_show, n_test, seed
                )
                for u in tqdm(todo, desc="score", disable=not progress)
            )
        for rows, sims in scored:
            _append(sim_file, sims)
            _append(score_file, rows)  # written last: a unit counts as scored only when complete
        run.timed("score", scoring_started)

    llm = [r for r in explanations.values() if r["method"] == "llm"]
    summary = ExplainSummary(
        _summarise(read_jsonl(score_file), methods, scorers, seed),
        [(str(s), int(u)) for s, u in units],
        sum(1 for r in llm if r["failed"]),
    )
    _write_tables(folder)
    summary.save(folder / "summary")  # ExplainSummary.load reopens it
    run.extra["summary"] = repr(summary)
    run.extra["units"] = len(units)
    run.extra["engine"] = {
        "name": engine, "address": address, "workers": workers, "threads": threads,
    }  # fmt: skip
    run.extra["failed_explanations"] = summary.failed_explanations
    run.extra["explainer_cost"] = {
        "calls": len(llm),
        "cached": sum(1 for r in llm if r.get("cached")),
        "tokens_in": sum(r.get("tokens_in", 0) for r in llm),
        "tokens_out": sum(r.get("tokens_out", 0) for r in llm),
        "seconds": round(sum(r.get("seconds", 0.0) for r in llm), 2),
    }
    path = run.finish()
    return ExplainResult(path, summary, json.loads((path / "run.json").read_text()))


def _summarise(
    scores: list[dict[str, Any]], methods: Sequence[str], scorers: Sequence[str], seed: int
) -> list[MethodScore]:
    out = []
    for method in methods:
        for scorer in scorers:
            values = [
                r["score"]
                for r in scores
                if r["method"] == method and r["scorer"] == scorer and r["score"] is not None
            ]
            mean, lo, hi = mean_ci(values, seed=seed)
            out.append(MethodScore(method, scorer, mean, lo, hi, len(values)))
    return out


def _write_tables(folder: Path) -> None:
    """The JSONL records as Parquet tables beside them."""
    for name in ("explanations", "scores", "simulations"):
        rows = read_jsonl(folder / f"{name}.jsonl")
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))  # rows may lack some fields
            table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
            pq.write_table(table, folder / f"{name}.parquet")
