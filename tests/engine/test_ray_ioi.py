"""The IOI reproduction's prompt-level measures over Ray workers (a real local cluster) are the
local engine's: the same blocks, merged in the same order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mechscope.engine import EngineError, torch_threads
from mechscope.ioi import ioi_dataset
from mechscope.ioi.dataset import NAMES, OBJECTS, PLACES
from mechscope.ioi.measures import PROMPT_BLOCK, prompt_measures
from mechscope.ioi.reproduce import ioi_run
from mechscope.testing import IOI_NAMES, IOI_OBJECTS, IOI_PLACES, named_tiny_model


def _sets(n: int):
    model = named_tiny_model()
    ds = ioi_dataset(model, n, names=IOI_NAMES, places=IOI_PLACES, objects=IOI_OBJECTS)
    return model, (ds, ds.corrupt("ABC"), ds.corrupt("S2_IO"))


def test_prompt_blocks_over_two_ray_workers_are_the_local_measures() -> None:
    n = 2 * PROMPT_BLOCK + 7  # three blocks, the last short
    model, sets = _sets(n)
    with torch_threads(1):  # each Ray task runs on one thread
        local = prompt_measures(model, *sets, progress=False)
    remote = prompt_measures(model, *sets, engine="ray", workers=2, threads=1, progress=False)
    for kind in ("clean", "ABC", "S2_IO"):
        assert local.diffs[kind].shape == (n,)
        assert remote.diffs[kind].equal(local.diffs[kind]), kind
    for field in ("heads", "mlps", "neurons", "attn_bias"):
        assert getattr(remote.dla, field).equal(getattr(local.dla, field)), field
    assert remote.dla.total == local.dla.total and remote.dla.embed == local.dla.embed
    assert remote.copying.scores.equal(local.copying.scores)
    for key in ("IO", "S1", "S2"):
        assert remote.attention[key].equal(local.attention[key]), key
    assert remote.engine == {
        "name": "ray", "blocks": 3, "block_prompts": PROMPT_BLOCK, "address": None,
        "workers": 2, "threads": 1,
    }  # fmt: skip
    # the blocks are the whole set: the same as one pass over all prompts, up to float sums
    with torch.no_grad():
        whole = model.run(sets[0].tokens).logits
    rows = torch.arange(n)
    end = sets[0].positions["END"]
    io, s = whole[rows, end, sets[0].io_ids], whole[rows, end, sets[0].s_ids]
    assert torch.allclose(local.diffs["clean"], io - s, atol=1e-5)


def test_reproduce_on_ray_records_its_engine(tmp_path: Path) -> None:
    # the reproduction draws from the default word pools: give them single tokens
    model = named_tiny_model(words=[*NAMES, *PLACES, *OBJECTS])
    report = ioi_run(
        model, tmp_path / "ioi", n_prompts=PROMPT_BLOCK + 3, sweep_prompts=2, resid_prompts=1,
        engine="ray", workers=2, threads=1,
    )  # fmt: skip
    run = json.loads((report.path / "run.json").read_text())
    assert run["engine"]["name"] == "ray" and run["engine"]["workers"] == 2
    assert report.summary["prompts"] == PROMPT_BLOCK + 3


def test_engine_options_are_checked(tmp_path: Path) -> None:
    model, _ = _sets(2)
    with pytest.raises(EngineError, match="engine='ray'"):
        ioi_run(model, tmp_path / "x", n_prompts=4, workers=2)
    with pytest.raises(EngineError, match="unknown engine 'spark'; valid: local, ray"):
        ioi_run(model, tmp_path / "x", n_prompts=4, engine="spark")
