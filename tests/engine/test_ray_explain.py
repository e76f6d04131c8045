"""Explaining units over Ray workers (a real local cluster) gives the local engine's rows,
explanations, scores and simulations row for row, also when it resumes an interrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray

from mechscope.autointerp import ExplainSummary, LocalBackend, explain_run
from mechscope.engine import torch_threads
from mechscope.harvest import harvest, open_harvest
from mechscope.harvest.tables import HarvestStore
from mechscope.testing import run_cli as mechscope
from mechscope.testing import tiny_chat_model, tiny_model

UNITS = [("blocks.1.mlp.post", u) for u in (0, 3, 5, 6, 9)]
# one torch thread in every process: the last bits of CPU matrix products depend on the count
ARGS: dict[str, Any] = dict(n_show=3, n_test=2, seed=7, threads=1, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> HarvestStore:
    out = tmp_path_factory.mktemp("ray-explain") / "harvest"
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


@pytest.fixture(scope="module")
def local(store: HarvestStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    backend = LocalBackend(tiny_chat_model())
    out = tmp_path_factory.mktemp("ray-explain") / "local"
    return explain_run(store, UNITS, explainer=backend, out=out, **ARGS).path


def rows(path: Path) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in out]  # timings differ


def assert_same_rows(a: Path, b: Path) -> None:
    for name in ("explanations", "scores", "simulations"):
        assert rows(a / f"{name}.jsonl") == rows(b / f"{name}.jsonl"), name
    assert len(rows(a / "scores.jsonl")) == len(UNITS) * 3 * 3  # methods x scorers
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()


def test_units_over_two_ray_workers_are_the_local_rows(
    store: HarvestStore, local: Path, tmp_path: Path
) -> None:
    backend = LocalBackend(tiny_chat_model())
    result = explain_run(
        store, UNITS, explainer=backend, out=tmp_path / "ray", engine="ray", workers=2, **ARGS
    )
    assert_same_rows(local, result.path)
    assert result.record["engine"] == {"name": "ray", "address": None, "workers": 2, "threads": 1}
    assert ExplainSummary.load(local / "summary.safetensors") == result.summary  # NaN equal
    assert not any(p.name.startswith(".") for p in result.path.rglob("*"))


def test_ray_resumes_an_interrupted_run_without_redoing_its_units(
    store: HarvestStore, local: Path, tmp_path: Path
) -> None:
    class Dies(LocalBackend):
        """Interrupted (Ctrl-C) at its 3rd answer, after two units are explained."""

        calls = 0

        def chat(self, *a: Any, **kw: Any) -> Any:
            Dies.calls += 1
            if Dies.calls == 3:
                raise KeyboardInterrupt
            return super().chat(*a, **kw)

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        explain_run(store, UNITS, explainer=Dies(tiny_chat_model()), out=out, **ARGS)
    partial = tmp_path / ".resumed.partial" / "explanations.jsonl"
    before = partial.read_text().splitlines()
    assert len(before) == 4  # llm and top_tokens of two units
    result = explain_run(
        store,
        UNITS,
        explainer=LocalBackend(tiny_chat_model()),
        out=out,
        engine="ray",
        workers=2,
        **ARGS,
    )
    assert (result.path / "explanations.jsonl").read_text().splitlines()[:4] == before
    assert_same_rows(local, result.path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark"], "error: unknown engine 'spark'; valid: local, ray"),
        (["--address", "127.0.0.1:1"], "error: address is an option of engine='ray'"),
    ],
)
def test_cli_bad_engine_options_are_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    res = mechscope("explain", str(tmp_path / "no-such-harvest"), *args, cache=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().startswith(message) and len(res.stderr.strip().splitlines()) == 1


def test_a_retried_chunk_goes_on_from_its_finished_units(
    store: HarvestStore, tmp_path: Path
) -> None:
    """What a task retried after its worker died does: units with a line already are not redone."""
    from mechscope.autointerp.pipeline import explain_unit
    from mechscope.engine.cluster import Reporter
    from mechscope.engine.explain import _chunk, ship_backend

    backend = LocalBackend(tiny_chat_model())
    shipped = ship_backend(backend, tmp_path / "model")
    (first, second) = UNITS[:2]
    work = [(u, (shipped, store.unit(*u), *u, ["llm"], 3, 2)) for u in (first, second)]
    folder = tmp_path / "explain"
    folder.mkdir()
    done = {"site": first[0], "unit": first[1], "result": "finished before the worker died"}
    (folder / "chunk-0.jsonl").write_text(json.dumps(done) + "\n" + '{"site": "cut by a ki')
    with torch_threads(1):  # the task sets torch's threads: restored after it here
        _chunk(Reporter(str(tmp_path / "progress")), 0, "explain", str(folder), 1, work)
    lines = [json.loads(x) for x in (folder / "chunk-0.jsonl").read_text().splitlines()]
    assert lines[0] == done and len(lines) == 2
    expected = explain_unit(backend, store.unit(*second), *second, ["llm"], 3, 2)
    got = [{k: v for k, v in r.items() if k != "seconds"} for r in lines[1]["result"]]
    assert got == [{k: v for k, v in r.items() if k != "seconds"} for r in expected]
    assert (tmp_path / "progress").read_text() == "2"


def test_cli_explain_on_ray_joins_the_cluster_and_gives_the_local_rows(
    store: HarvestStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "chat"
    model = tiny_chat_model()
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the local run on one thread, as each worker
    args = ["--units", "blocks.1.mlp.post:0-3", "--explainer", str(folder), "--show", "3"]
    args += ["--test", "2"]
    gcs = ray.get_runtime_context().gcs_address
    for name, extra in {
        "local": [],
        "ray": ["--engine", "ray", "--workers", "2", "--address", gcs],
    }.items():
        res = mechscope("explain", str(store.path), *args, "--out", str(tmp_path / name), *extra,
                        cache=tmp_path)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
    for name in ("explanations", "scores", "simulations"):
        assert rows(tmp_path / "local" / f"{name}.jsonl") == rows(
            tmp_path / "ray" / f"{name}.jsonl"
        )
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["engine"]["workers"] == 2
