"""Explain → simulate → score on a tiny model: parsing, simulation, scorers, failures and resuming."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mechscope.autointerp import (
    Completion,
    JsonSimulator,
    LocalBackend,
    LogprobSimulator,
    auroc,
    correlation,
    explain_run,
    mean_ci,
    parse_explanation,
    parse_simulation,
    top_tokens_explanation,
)
from mechscope.autointerp.explainer import ExplanationError, discretise
from mechscope.autointerp.results import ExplainRun, ExplainSummary
from mechscope.errors import InputError
from mechscope.harvest import harvest, open_harvest
from mechscope.testing import ScriptedBackend as Scripted
from mechscope.testing import tiny_chat_model, tiny_model


def chat_model():
    return tiny_chat_model("llama")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ai") / "harvest"
    harvest(
        tiny_model("llama"),
        "fortunes",
        out=out,
        sites="blocks.1.mlp.post",
        tokens=48 * 16,
        window=16,
        k=10,
        n_random=6,
        batch_size=8,
        progress=False,
    )
    return open_harvest(out)


def test_parse_explanation() -> None:
    assert parse_explanation('Explanation: "the word she".\nMore text') == "the word she"
    assert parse_explanation("\n\nThis neuron reacts to dates in the past.") == "dates in the past"
    assert (
        parse_explanation("the words [[des|9]]-called and [[ the|2]] end")
        == "the words des-called and  the end"
    )
    with pytest.raises(ExplanationError):
        parse_explanation("   \n ")
    with pytest.raises(ExplanationError):
        parse_explanation("[[1|2]] 3 4")


def test_discretise_and_simulation_parsing() -> None:
    assert discretise([-1.0, 0.0, 0.49, 1.0, 2.0], scale=1.0) == [0, 0, 5, 10, 10]
    ok = parse_simulation(Completion("Sure: [0, 3, 10]"), 3, 10)
    assert ok.values == [0.0, 3.0, 10.0] and not ok.failed
    for text, why in [
        ("no list", "no JSON"),
        ("[1, 2]", "2 values for 3"),
        ("[1, 2, 11]", "outside"),
        ('[1, "a", 2]', "other than numbers"),
        ("[1, 2,, 3]", "not valid JSON"),
    ]:
        bad = parse_simulation(Completion(text), 3, 10)
        assert bad.failed and why in bad.error and bad.raw == text
    assert parse_simulation(TimeoutError("slow"), 3, 10).error == "TimeoutError: slow"


def test_scores() -> None:
    assert correlation([[0, 1, 2]], [[0, 2, 4]]) == pytest.approx(1.0)
    assert math.isnan(correlation([[1, 1, 1]], [[0, 1, 2]]))
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    mean, lo, hi = mean_ci([0.1, 0.2, 0.3, float("nan")])
    assert mean == pytest.approx(0.2) and lo <= mean <= hi


def test_logprob_simulator_gives_one_expected_value_per_token(store) -> None:
    sim = LogprobSimulator(LocalBackend(chat_model()))
    assert sim.scale_max == 9  # the byte tokenizer has single digits only
    tokens = store.unit("blocks.1.mlp.post", 0).top[0].tokens
    out = sim.simulate("the letter e", tokens)
    assert len(out.values) == len(tokens)
    assert all(0 <= v <= 9 for v in out.values)
    assert (
        out.values != sim.simulate("numbers and digits", tokens).values
    )  # it reads the explanation


def test_pipeline_runs_scores_baselines_and_records_failures(store, tmp_path: Path) -> None:
    units = [("blocks.1.mlp.post", u) for u in range(4)]
    answers = ["the letter e", "", RuntimeError("server down"), "spaces between words"]
    explainer = Scripted(answers)
    simulator = Scripted(["[" + ", ".join(["1"] * 16) + "]", "not json", "Yes", "No"])
    result = explain_run(
        store, units, explainer=explainer, simulator=simulator, out=tmp_path / "ex", progress=False
    )
    rows = [json.loads(x) for x in (result.path / "explanations.jsonl").read_text().splitlines()]
    llm = {r["unit"]: r for r in rows if r["method"] == "llm"}
    assert llm[0]["text"] == "the letter e" and not llm[0]["failed"]
    assert llm[1]["failed"] and llm[1]["error"] == "the answer is empty"
    assert llm[2]["failed"] and "server down" in llm[2]["error"]
    assert all(r["text"].startswith("the tokens") for r in rows if r["method"] == "top_tokens")
    methods = {(r.method, r.scorer) for r in result.summary.rows}
    assert methods == {
        (m, s)
        for m in ("llm", "top_tokens", "random")
        for s in ("correlation", "detection", "fuzzing")
    }
    assert "llm" in result.table() and (result.path / "scores.parquet").exists()
    sims = [json.loads(x) for x in (result.path / "simulations.jsonl").read_text().splitlines()]
    assert any(s["simulated"] is None and s["raw"] == "not json" for s in sims)
    # the summary is a result; the rows read back typed
    assert ExplainSummary.load(result.path / "summary.safetensors") == result.summary
    assert result.summary.failed_explanations == 2 and result.summary.units == units
    assert not (result.path / "summary.json").exists()
    run = ExplainRun.open(result.path)
    assert run.units == units and run.methods == ["llm", "top_tokens", "random"]
    assert run.explanation(units[0], "llm").text == "the letter e"
    assert run.explanation(units[2], "llm").failed and run.summary() == result.summary
    donor = run.explanation(units[0], "random").donor
    assert donor in units and donor != units[0] and run.donors[units[0]] == donor
    assert run.score(units[1], "llm", "detection").note == "no explanation"
    windows = run.simulations()[units[0]]["llm"]
    assert any(w.simulated is None and w.raw == "not json" for w in windows)


def test_local_pipeline_resumes_after_an_interruption(store, tmp_path: Path) -> None:
    units = [("blocks.1.mlp.post", u) for u in range(3)]
    backend = LocalBackend(chat_model())
    args = dict(
        explainer=backend, scorers=("correlation", "detection"), n_show=3, n_test=2, progress=False
    )
    full = explain_run(store, units, out=tmp_path / "full", **args)

    class Dies(LocalBackend):
        """Interrupted (Ctrl-C) at its 2nd answer."""

        calls = 0

        def chat(self, *a, **kw):
            Dies.calls += 1
            if Dies.calls == 2:
                raise KeyboardInterrupt
            return super().chat(*a, **kw)

    dying = Dies(backend.model)
    with pytest.raises(KeyboardInterrupt):
        explain_run(store, units, out=tmp_path / "resumed", **{**args, "explainer": dying})
    assert (tmp_path / ".resumed.partial" / "explanations.jsonl").exists()
    resumed = explain_run(store, units, out=tmp_path / "resumed", **args)
    for name in ("explanations", "scores", "simulations"):

        def rows(path: Path) -> list[dict]:
            out = [json.loads(line) for line in path.read_text().splitlines()]
            return [{k: v for k, v in r.items() if k != "seconds"} for r in out]  # timings differ

        assert rows(full.path / f"{name}.jsonl") == rows(resumed.path / f"{name}.jsonl"), name


def test_bad_arguments(store, tmp_path: Path) -> None:
    backend = Scripted(["x"])
    with pytest.raises(InputError, match="unknown method/scorer"):
        explain_run(
            store,
            [("blocks.1.mlp.post", 0)],
            explainer=backend,
            out=tmp_path / "a",
            scorers=["vibes"],
        )
    with pytest.raises(InputError, match="units 0…63"):
        explain_run(store, [("blocks.1.mlp.post", 64)], explainer=backend, out=tmp_path / "b")
    with pytest.raises(InputError, match="LocalBackend"):
        LogprobSimulator(backend)
    assert JsonSimulator(backend).name == "json:scripted"
    assert top_tokens_explanation([]) == "nothing"
    with pytest.raises(InputError, match="no explain run"):
        ExplainRun.open(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scores.jsonl").write_text('{"site": "blocks.1.mlp.post"}\n')
    with pytest.raises(InputError, match="row 1 is not a scores row"):
        ExplainRun.open(bad)
