"""The IOI reproduction end to end on SmolLM2, small (marked `model`)."""

from __future__ import annotations

import json

import pytest

from mechscope.ioi import HeadClassification, IOIDataset
from mechscope.ioi.reproduce import ioi_run
from mechscope.patching import Circuit, PatchResult
from mechscope.store import open_run

pytestmark = pytest.mark.model


def test_reproduction_writes_a_complete_run(smollm2, tmp_path):
    report = ioi_run(
        smollm2, tmp_path / "ioi", n_prompts=12, sweep_prompts=3, resid_prompts=1, threshold=0.05
    )
    path = report.path
    record = open_run(path)
    assert record.config["prompts"] == 12
    assert record.record["hf_max_logit_difference"] < 1e-4
    assert record.kind == "ioi" and "patch_resid_pre_ABC" in record
    summary = json.loads((path / "summary.json").read_text())
    assert summary["logit_diff"]["clean"] > 2 > summary["logit_diff"]["ABC"]
    assert summary["logit_diff"]["S2_IO"] < 0
    # the name information sits at the name positions early and at END late
    resid = PatchResult.load(path / "patch_resid_pre_ABC.safetensors")
    labels = resid.labels["pos"]
    end = len(labels) - 1
    names = [
        i for i, label in enumerate(labels) if "(IO)" in label or "(S1)" in label or "(S2)" in label
    ]
    assert len(names) == 3
    early, late = resid.values[0], resid.values[-1]
    assert early[names].abs().max() > 0.3 and abs(early[end]) < 0.1
    assert late[end] > 0.8 and late[names].abs().max() < 0.2
    circuit = Circuit.load(path / "circuit.safetensors")
    assert 0 < circuit.n_heads < 270 and summary["circuit"]["heads"] == circuit.n_heads
    classes = {cls for _, _, cls, _ in summary["head_classes"]}
    assert {"induction", "name_mover"} <= classes
    saved = HeadClassification.load(path / "head_classes.safetensors")
    assert [list(h) for h in saved] == summary["head_classes"]
    assert len(IOIDataset.load(path / "dataset.safetensors")) == 12
    for name in ("patch_heads", "patch_resid_pre_ABC", "circuit", "dla_heads", "key_head_patterns"):
        for fmt in ("png", "svg", "html"):
            assert (path / "figures" / f"{name}.{fmt}").stat().st_size > 0
