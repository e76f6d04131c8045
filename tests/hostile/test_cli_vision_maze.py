"""`viz`, `weights conv|lm`, `maze train|eval|steer` and `serve` fed what a careless user
types: one line, exit 2, nothing written.

Each row is (id, arguments, words the one error line must hold); the placeholders are
those of `Table` in conftest.py and of `saved` here: ``{P}`` an (untrained) maze policy,
``{H}`` a harvest run of the tiny model. Vision rows read the default
EfficientNet-Lite0 (installed, offline); language-model rows name the tiny model; maze
rows ask for few steps and mazes, so that a missing check shows as a wrong answer, not
as a long run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

V = ["viz", "net._blocks.5", "--channels", "0-1", "--size", "32", "--steps", "2"]
LM = ["viz", "blocks.0.mlp.post", "--model", "{F}", "--harvest", "{H}", "--units", "0-1",
      "--steps", "2", "--length", "4"]  # fmt: skip
WC = ["weights", "conv", "net._blocks.4", "net._blocks.5", "--unit", "3", "--viz-steps", "0"]
WL = ["weights", "lm", "--model", "{F}", "--k", "3"]
MT = ["maze", "train", "--steps", "30", "--mazes", "200", "--eval-mazes", "20"]
ME = ["maze", "eval", "{P}", "--mazes", "10"]
MS = ["maze", "steer", "{P}", "--mazes", "10", "--channels", "2", "--strengths", "1",
      "--coeffs", "0,-1"]  # fmt: skip

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    # --- viz: a vision model ----------------------------------------------------------
    ("viz-site-unknown", ["viz", "net._blocks.99", *V[2:], "--out", "{O}"], ["net._blocks.99"]),
    ("viz-one-site-unknown", ["viz", "net._blocks.5,net._blokcs.9", *V[2:], "--out", "{O}"],
     ["net._blokcs.9"]),
    ("viz-channels-text", [*V, "--channels", "a-b", "--out", "{O}"], ["--channels"]),
    ("viz-channels-reversed", [*V, "--channels", "5-2", "--out", "{O}"], ["--channels"]),
    ("viz-channels-empty", [*V, "--channels", "", "--out", "{O}"], ["--channels"]),
    ("viz-channels-negative", [*V, "--channels", "-1", "--out", "{O}"], ["--channels"]),
    ("viz-channel-out-of-range", [*V, "--channels", "0,9999", "--out", "{O}"],
     ["9999", "channels"]),
    ("viz-size-zero", [*V, "--size", "0", "--out", "{O}"], ["--size"]),
    ("viz-size-negative", [*V, "--size", "-64", "--out", "{O}"], ["--size"]),
    ("viz-size-huge", [*V, "--size", "100000", "--out", "{O}"], ["--size"]),
    ("viz-steps-zero", [*V, "--steps", "0", "--out", "{O}"], ["--steps"]),
    ("viz-steps-negative", [*V, "--steps", "-5", "--out", "{O}"], ["--steps"]),
    ("viz-snapshots-malformed", [*V, "--snapshots", "0,four", "--out", "{O}"],
     ["--snapshots"]),
    ("viz-snapshots-reversed", [*V, "--snapshots", "48-4", "--out", "{O}"], ["--snapshots"]),
    ("viz-weights-not-weights", [*V, "--weights", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("viz-weights-missing", [*V, "--weights", "{T}/none.pth", "--out", "{O}"], ["none.pth"]),
    ("viz-model-unknown-vision", [*V, "--model", "timm:", "--out", "{O}"], ["timm:"]),
    ("viz-googlenet-no-weights", [*V, "--model", "googlenet", "--out", "{O}"], ["weights"]),
    ("viz-out-file", [*V, "--out", "{T}/afile"], ["file"]),
    # --- viz: a language model --------------------------------------------------------
    ("viz-lm-no-harvest", ["viz", "blocks.0.mlp.post", "--model", "{F}", "--out", "{O}"],
     ["--harvest"]),
    ("viz-lm-harvest-missing", [*LM, "--harvest", "{T}/none", "--out", "{O}"], ["none"]),
    ("viz-lm-harvest-file", [*LM, "--harvest", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("viz-lm-harvest-foreign", [*LM, "--harvest", "{T}/other", "--out", "{O}"], ["other"]),
    ("viz-lm-start-unknown", [*LM, "--start", "middle", "--out", "{O}"], ["middle"]),
    ("viz-lm-units-text", [*LM, "--units", "x", "--out", "{O}"], ["--units"]),
    ("viz-lm-length-zero", [*LM, "--length", "0", "--out", "{O}"], ["length"]),
    ("viz-lm-steps-negative", [*LM, "--steps", "-1", "--out", "{O}"], ["steps"]),
    ("viz-lm-fluency-nan", [*LM, "--fluency", "nan", "--out", "{O}"], ["fluency"]),
    ("viz-lm-fluency-negative", [*LM, "--fluency", "-1", "--out", "{O}"], ["fluency"]),
    ("viz-lm-soft-steps-negative", [*LM, "--soft-steps", "-5", "--out", "{O}"],
     ["soft_steps"]),
    ("viz-lm-unit-out-of-range", [*LM, "--units", "99999", "--out", "{O}"], ["99999"]),
    ("viz-lm-site-not-harvested", ["viz", "blocks.0.resid_post", *LM[2:], "--out", "{O}"],
     ["blocks.0.resid_post"]),
    ("viz-lm-out-dot", [*LM, "--out", "."], ["--out"]),
    ("viz-lm-out-foreign", [*LM, "--out", "{T}/other"], ["no mechscope run"]),
    ("viz-lm-out-is-the-harvest", [*LM, "--out", "{H}"], ["harvest"]),
    # --- weights conv -----------------------------------------------------------------
    ("conv-src-unknown", ["weights", "conv", "net._blocks.44", *WC[3:], "--out", "{O}"],
     ["net._blocks.44"]),
    ("conv-dst-unknown", ["weights", "conv", "net._blocks.4", "net._blocs.5", *WC[4:],
                          "--out", "{O}"], ["net._blocs.5"]),
    ("conv-src-after-dst", ["weights", "conv", "net._blocks.5", "net._blocks.4", *WC[4:],
                            "--out", "{O}"], ["before"]),
    ("conv-unit-negative", [*WC, "--unit", "-1", "--out", "{O}"], ["unit -1"]),
    ("conv-unit-huge", [*WC, "--unit", "100000", "--out", "{O}"], ["unit 100000"]),
    ("conv-k-zero", [*WC, "--k", "0", "--out", "{O}"], ["--k"]),
    ("conv-viz-steps-negative", [*WC, "--viz-steps", "-1", "--out", "{O}"], ["--viz-steps"]),
    ("conv-viz-size-huge", [*WC, "--viz-size", "100000", "--out", "{O}"], ["--viz-size"]),
    ("conv-out-file", [*WC, "--out", "{T}/afile"], ["file"]),
    # --- weights lm -------------------------------------------------------------------
    ("lm-neuron-text", [*WL, "--neuron", "x", "--out", "{O}"], ["--neuron", "LAYER.INDEX"]),
    ("lm-neuron-no-index", [*WL, "--neuron", "12", "--out", "{O}"], ["--neuron"]),
    ("lm-neuron-negative", [*WL, "--neuron", "-1.0", "--out", "{O}"], ["--neuron"]),
    ("lm-neuron-layer-out-of-range", [*WL, "--neuron", "99.0", "--out", "{O}"],
     ["layer 99"]),
    ("lm-neuron-out-of-range", [*WL, "--neuron", "0.999999", "--out", "{O}"],
     ["neuron 999999"]),
    ("lm-head-text", [*WL, "--head", "1.x", "--out", "{O}"], ["--head"]),
    ("lm-head-layer-out-of-range", [*WL, "--head", "99.0", "--out", "{O}"], ["layer 99"]),
    ("lm-head-out-of-range", [*WL, "--head", "0.999999", "--out", "{O}"], ["head 999999"]),
    ("lm-via-unknown", [*WL, "--neuron", "0.1", "--via", "down", "--out", "{O}"], ["down"]),
    ("lm-k-zero", [*WL, "--head", "0.0", "--k", "0", "--out", "{O}"], ["k"]),
    ("lm-k-negative", [*WL, "--neuron", "0.1", "--k", "-3", "--out", "{O}"], ["k"]),
    ("lm-k-past-vocabulary", [*WL, "--head", "0.0", "--k", "100000", "--out", "{O}"],
     ["vocabulary"]),
    ("lm-unknown-model", ["weights", "lm", "--model", "{T}/none", "--out", "{O}"], ["none"]),
    ("lm-out-file", [*WL, "--out", "{T}/afile"], ["file"]),
    ("lm-out-dot", [*WL, "--out", "."], ["--out"]),
    ("lm-out-foreign", [*WL, "--out", "{T}/other"], ["no mechscope run"]),
    # --- maze train -------------------------------------------------------------------
    ("train-steps-zero", [*MT, "--steps", "0", "--out", "{O}"], ["--steps"]),
    ("train-steps-negative", [*MT, "--steps", "-30", "--out", "{O}"], ["--steps"]),
    ("train-region-zero", [*MT, "--region", "0", "--out", "{O}"], ["region"]),
    ("train-region-past-maze", [*MT, "--region", "99", "--out", "{O}"], ["region"]),
    ("train-mazes-zero", [*MT, "--mazes", "0", "--out", "{O}"], ["--mazes"]),
    ("train-eval-mazes-zero", [*MT, "--eval-mazes", "0", "--out", "{O}"], ["--eval-mazes"]),
    ("train-out-file", [*MT, "--out", "{T}/afile"], ["file"]),
    ("train-out-dot", [*MT, "--out", "."], ["--out"]),
    ("train-out-foreign", [*MT, "--out", "{T}/other"], ["no mechscope run"]),
    # --- maze eval --------------------------------------------------------------------
    ("eval-policy-missing", ["maze", "eval", "{T}/none", "--out", "{O}"], ["no maze policy"]),
    ("eval-policy-text", ["maze", "eval", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("eval-policy-nul", ["maze", "eval", "{T}/nul.bin", "--out", "{O}"], ["nul.bin"]),
    ("eval-policy-foreign", ["maze", "eval", "{T}/other", "--out", "{O}"], ["no maze policy"]),
    ("eval-mazes-zero", [*ME, "--mazes", "0", "--out", "{O}"], ["10 mazes"]),
    ("eval-mazes-negative", [*ME, "--mazes", "-10", "--out", "{O}"], ["10 mazes"]),
    ("eval-out-file", [*ME, "--out", "{T}/afile"], ["file"]),
    ("eval-out-dot", [*ME, "--out", "."], ["--out"]),
    ("eval-out-foreign", [*ME, "--out", "{T}/other"], ["no mechscope run"]),
    # --- maze steer -------------------------------------------------------------------
    ("steer-policy-missing", ["maze", "steer", "{T}/none", "--out", "{O}"],
     ["no maze policy"]),
    ("steer-policy-text", ["maze", "steer", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("steer-policy-nul", ["maze", "steer", "{T}/nul.bin", "--out", "{O}"], ["nul.bin"]),
    ("steer-coeffs-malformed", [*MS, "--coeffs", "0,-x", "--out", "{O}"], ["--coeffs"]),
    ("steer-coeffs-empty", [*MS, "--coeffs", "", "--out", "{O}"], ["coeffs"]),
    ("steer-coeffs-nan", [*MS, "--coeffs", "nan", "--out", "{O}"], ["--coeffs"]),
    ("steer-channels-malformed", [*MS, "--channels", "four", "--out", "{O}"], ["--channels"]),
    ("steer-channels-reversed", [*MS, "--channels", "8-4", "--out", "{O}"], ["--channels"]),
    ("steer-channels-empty", [*MS, "--channels", "", "--out", "{O}"], ["channel"]),
    ("steer-channels-zero", [*MS, "--channels", "0", "--out", "{O}"], ["channel"]),
    ("steer-channels-past-site", [*MS, "--channels", "999", "--out", "{O}"], ["999"]),
    ("steer-strengths-empty", [*MS, "--strengths", "", "--out", "{O}"], ["strengths"]),
    ("steer-strengths-malformed", [*MS, "--strengths", "1,strong", "--out", "{O}"],
     ["--strengths"]),
    ("steer-mazes-zero", [*MS, "--mazes", "0", "--out", "{O}"], ["10 mazes"]),
    ("steer-site-unknown", [*MS, "--site", "block9.res1", "--out", "{O}"], ["block9.res1"]),
    ("steer-retarget-site-unknown", [*MS, "--retarget-site", "block1.res9", "--out", "{O}"],
     ["block1.res9"]),
    ("steer-out-file", [*MS, "--out", "{T}/afile"], ["file"]),
    ("steer-out-dot", [*MS, "--out", "."], ["--out"]),
    ("steer-out-foreign", [*MS, "--out", "{T}/other"], ["no mechscope run"]),
    # --- serve ------------------------------------------------------------------------
    ("serve-missing", ["serve", "{T}/none"], ["none"]),
    ("serve-file", ["serve", "{T}/afile"], ["afile"]),
    ("serve-no-runs", ["serve", "{T}/other"], ["other"]),
    ("serve-port-past-65535", ["serve", "{H}", "--port", "70000"], ["--port"]),
    ("serve-port-negative", ["serve", "{H}", "--port", "-1"], ["--port"]),
    ("serve-host-empty", ["serve", "{H}", "--host", ""], ["--host"]),
    ("serve-one-missing", ["serve", "{H}", "{T}/none"], ["none"]),
]
# fmt: on


@pytest.fixture(scope="module")
def saved(harvest_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{P}: an untrained maze policy's file; {H}: a harvest run of the tiny model."""
    from mechscope.maze import MazePolicy

    policy = MazePolicy().save(tmp_path_factory.mktemp("hostile-maze") / "policy.safetensors")
    return {"{P}": policy, "{H}": harvest_run}


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, saved, tmp_path: Path) -> None:
    filled = []
    for a in args:
        for key, path in saved.items():
            a = a.replace(key, str(path))
        filled.append(a)
    table.check(filled, needles, tmp_path)
