"""The command line, run as a real process on a tiny model saved to a folder."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

import mechscope as ms
from mechscope.testing import run_cli, tiny_chat_model

mechscope = functools.partial(run_cli, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved as an HF folder; its chat template makes it an explainer too."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_chat_model("llama")
    model.hf.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def test_run_prints_top_tokens_and_saves_the_cache(folder, tmp_path):
    out_file = tmp_path / "c.safetensors"
    res = mechscope(
        "run",
        str(folder),
        "hello",
        "--top",
        "3",
        "--save",
        "blocks.*.attn.z",
        "--out",
        str(out_file),
        cache=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "next token after 'hello'" in res.stdout
    assert "blocks.1.attn.z" in res.stdout and "(1, 5, 4, 8)" in res.stdout
    cache = ms.ActivationCache.load(out_file)
    assert list(cache) == ["blocks.0.attn.z", "blocks.1.attn.z"]
    # the numbers in the file are the library's numbers
    ref = ms.load(str(folder)).run("hello", save=["blocks.1.attn.z"]).cache["blocks.1.attn.z"]
    torch.testing.assert_close(cache["blocks.1.attn.z"], ref)


def test_sites_lists_block_zero_and_shapes(folder, tmp_path):
    res = mechscope("sites", str(folder), cache=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "blocks.0.attn.k" in res.stdout and "kv_head=2" in res.stdout
    assert "blocks.1.attn.k" not in res.stdout and "--all" in res.stdout


def test_user_mistakes_are_one_line_without_traceback(folder, tmp_path):
    res = mechscope("run", str(folder), "hello", "--save", "blocks.0.hook_z", cache=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "closest: blocks.0.attn.z" in errors[0]
    res = mechscope("run", str(tmp_path / "nowhere"), "hello", cache=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "smollm2-135m" in res.stderr


def test_harvest_shards_merge_and_explain(folder: Path, tmp_path: Path) -> None:
    common = [
        "--corpus",
        "fortunes",
        "--tokens",
        "512",
        "--window",
        "16",
        "--batch-size",
        "4",
        "--k",
        "6",
    ]
    for i in (0, 1):
        res = mechscope(
            "harvest",
            str(folder),
            *common,
            "--shard",
            f"{i}/2",
            "--out",
            str(tmp_path / f"s{i}"),
            cache=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        assert "view it: mechscope serve" in res.stdout
    res = mechscope(
        "merge-harvests",
        str(tmp_path / "s0"),
        str(tmp_path / "s1"),
        "--out",
        str(tmp_path / "h"),
        cache=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "512 tokens" in res.stdout
    res = mechscope(
        "explain",
        str(tmp_path / "h"),
        "--units",
        "blocks.0.mlp.post:0-2",
        "--sample",
        "1",
        "--explainer",
        str(folder),
        "--show",
        "3",
        "--test",
        "2",
        "--out",
        str(tmp_path / "e"),
        cache=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "mean score" in res.stdout and "top_tokens" in res.stdout
    assert "explainer: 4 calls" in res.stdout
    assert (tmp_path / "e" / "scores.parquet").exists()


def test_harvest_bad_input_is_one_line(folder: Path, tmp_path: Path) -> None:
    res = mechscope(
        "harvest",
        str(folder),
        "--corpus",
        "nonsense",
        "--out",
        str(tmp_path / "x"),
        cache=tmp_path,
    )
    assert res.returncode == 2 and "nonsense" in res.stderr and "Traceback" not in res.stderr
    res = mechscope(
        "harvest", str(folder), "--shard", "3", "--out", str(tmp_path / "x"), cache=tmp_path
    )
    assert res.returncode == 2 and "I/N" in res.stderr


def test_sae_store_train_eval(folder: Path, tmp_path: Path) -> None:
    site = "blocks.1.resid_post"
    stored = tmp_path / "acts"
    res = mechscope("sae", "store", site, "--model", str(folder), "--out", str(stored), "--tokens", "4096",
                    "--store-dtype", "float32", cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "stored blocks.1.resid_post" in res.stdout
    out = tmp_path / "sae"
    args = [
        "--model",
        str(folder),
        "--width",
        "64",
        "--k",
        "4",
        "--tokens",
        "4096",
        "--batch-size",
        "512",
    ]
    res = mechscope("sae", "train", site, *args, "--activations", str(stored), "--eval-tokens", "512",
                    "--harvest-tokens", "1024", "--out", str(out), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "CE loss recovered" in res.stdout and "k=4" in res.stdout
    assert (out / "sae" / "sae.safetensors").exists() and (out / "harvest" / "run.json").exists()
    res = mechscope(
        "sae", "eval", str(out), "--model", str(folder), "--tokens", "512", cache=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "L0 (active latents per token)" in res.stdout and "│    4.0 │" in res.stdout


def test_sae_bad_input_is_one_line(folder: Path, tmp_path: Path) -> None:
    cases = [
        (
            ["sae", "train", "blocks.1.resid_post", "--model", str(folder), "--kind", "gated"],
            "unknown SAE kind",
        ),
        (
            [
                "sae",
                "store",
                "blocks.1.resid_post",
                "--model",
                str(folder),
                "--out",
                str(tmp_path / "a"),
                "--store-dtype",
                "int8",
            ],
            "--store-dtype must be one of",
        ),  # fmt: skip
        (["sae", "eval", str(tmp_path), "--model", str(folder)], "no SAE in"),
        (["sae", "train", "blocks.9.resid_post", "--model", str(folder)], "unknown site"),
    ]
    for args, message in cases:
        res = mechscope(*args, cache=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_trace_and_edit(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace"
    res = mechscope("trace", str(folder), "The city of Rome lies in", "--subject", "Rome",
                    "--samples", "2", "--out", str(out), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "largest indirect effect" in res.stdout and (out / "trace.safetensors").exists()
    assert (out / "figures" / "trace_mlp.png").exists() and (out / "run.json").exists()
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([
        {"subject": s, "template": "The city of {} lies in", "object": o}
        for s, o in [("Rome", "Italy"), ("Oslo", "Norway"), ("Lima", "Peru")]
    ]))  # fmt: skip
    out2 = tmp_path / "avg"
    res = mechscope("trace", str(folder), "--facts", str(facts), "--all", "--samples", "2",
                    "--kinds", "hidden,mlp", "--out", str(out2), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "3 facts" in res.stdout and (out2 / "average.safetensors").exists()
    out3 = tmp_path / "edit"
    res = mechscope("edit", str(folder), "The capital of Rome is the city of", "--subject", "Rome",
                    "--object", "Italy", "--new", "France", "--neighbours", str(facts),
                    "--layer", "0", "--steps", "3", "--prefixes", "2", "--cov-tokens", "2000",
                    "--out", str(out3), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "efficacy" in res.stdout and (out3 / "report.safetensors").exists()
    assert (out3 / "edit.safetensors").exists()


def test_trace_and_edit_bad_input_is_one_line(folder: Path, tmp_path: Path) -> None:
    cases = [
        (["trace", str(folder)], "either a PROMPT"),
        (["trace", str(folder), "The city of Rome", "--subject", "Paris"], "does not occur"),
        (["trace", str(folder), "--facts", "planets"], "facts are relations (country_capital"),
        (["trace", str(folder), "The city of Rome", "--subject", "Rome", "--kinds", "mlp,foo"],
         "unknown trace kinds"),
        (["edit", str(folder), "Rome is nice and lies in", "--subject", "Rome", "--new", "X"],
         "give --relation or --neighbours"),
    ]  # fmt: skip
    for args, message in cases:
        res = mechscope(*args, "--out", str(tmp_path / "x"), cache=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_probe_steer_and_steer_sweep(folder: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([
        {"statement": f"Number {i} is {'even' if i % 2 == 0 else 'odd'}.", "label": i % 3 == 0}
        for i in range(24)
    ]))  # fmt: skip
    out = tmp_path / "probe"
    res = mechscope("probe", str(folder), "--data", str(pairs), "--test", "8", "--restarts", "2",
                    "--epochs", "20", "--out", str(out), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "held-out accuracy on 8 pairs" in res.stdout and (out / "probes.safetensors").exists()
    assert (out / "directions" / "logistic_L0.safetensors").exists() or (
        out / "directions" / "logistic_L1.safetensors"
    ).exists()
    vec = tmp_path / "v.safetensors"
    res = mechscope("steer", "hello there my friend", "--model", str(folder), "--plus", "Love",
                    "--minus", "Hate", "--layer", "1", "--coef", "20", "--max-new-tokens", "5",
                    "--save", str(vec), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "unsteered" in res.stdout and "coef 20, layer 1" in res.stdout and vec.exists()
    res = mechscope("steer", "hello there my friend", "--model", str(folder), "--vector", str(vec),
                    "--coef", "3", "--max-new-tokens", "5", cache=tmp_path)  # fmt: skip
    assert res.returncode == 0 and "SteeringVector(actadd, layer 1" in res.stdout, res.stderr
    out2 = tmp_path / "sweep"
    res = mechscope("steer-sweep", "--model", str(folder), "--plus", "Love", "--minus", "Hate",
                    "--layers", "0,1", "--coefs", "0,8", "--samples", "1", "--max-new-tokens",
                    "4", "--words", "e", "--out", str(out2), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (out2 / "sweep.safetensors").exists() and (out2 / "vectors" / "L1.safetensors").exists()
    assert (out2 / "figures" / "sweep_effect.png").exists() and "coef 8" in res.stdout


def test_probe_and_steer_bad_input_is_one_line(folder: Path, tmp_path: Path) -> None:
    cases = [
        (["probe", str(folder), "--data", "planets"], "--data takes"),
        (["probe", str(folder), "--data", "sentiment", "--n", "10", "--test", "20"], "--test"),
        (["steer", "hi", "--model", str(folder), "--coef", "2"], "give one source"),
        (["steer", "hi", "--model", str(folder), "--plus", "a", "--minus", "b"], "--layer"),
        (["steer", "hi", "--model", str(folder), "--vector", str(tmp_path / "none.safetensors")],
         "no such steering vector"),
        (["steer-sweep", "--model", str(folder), "--plus", "a", "--minus", "b", "--coefs", "x"],
         "--coefs takes numbers"),
        (["steer-sweep", "--model", str(folder), "--plus", "a", "--minus", "b", "--layers", "7"],
         "out of range"),
    ]  # fmt: skip
    for args, message in cases:
        res = mechscope(*args, cache=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_viz_renders_channels_into_a_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "viz"
    res = mechscope("viz", "net._blocks.1", "--channels", "0-2", "--size", "32", "--steps", "3",
                    "--snapshots", "0,2", "--out", str(out), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "channels(net._blocks.1:0,1,2)" in res.stdout
    assert (out / "rendering.safetensors").exists() and (out / "run.json").exists()
    assert all((out / "figures" / f"{f}.{e}").exists() for f in ("grid", "strip")
               for e in ("png", "html"))  # fmt: skip
    for args, message in [
        (["viz", "net._blokcs.1"], "unknown site"),
        (["viz", "net._blocks.1", "--channels", "a-b"], "--channels/--units takes"),
    ]:
        res = mechscope(*args, "--steps", "1", "--size", "16", "--out", str(tmp_path / "x"),
                        cache=tmp_path)  # fmt: skip
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_weights_conv_and_lm_write_run_folders(folder, tmp_path: Path) -> None:
    out = tmp_path / "wc"
    res = mechscope("weights", "conv", "net._blocks.3", "net._blocks.4", "--unit", "2", "--k", "2",
                    "--viz-steps", "2", "--viz-size", "32", "--out", str(out), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "net._blocks.3 → net._blocks.4:2" in res.stdout and "inhibition" in res.stdout
    assert (out / "weights.safetensors").exists() and (out / "figures" / "circuit.png").exists()
    out = tmp_path / "wl"
    res = mechscope("weights", "lm", "--model", str(folder), "--head", "1.2", "--neuron", "1.5",
                    "--out", str(out), cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "head 1.2" in res.stdout and "neuron 1.5 (via gate)" in res.stdout
    assert (out / "heads.safetensors").exists() and (out / "copying.safetensors").exists()
    assert (out / "neurons" / "1-5" / "wiring.json").exists()
    for args, message in [
        (["weights", "lm", "--model", str(folder), "--head", "1"], "--head takes LAYER.INDEX"),
        (["weights", "lm", "--model", str(folder), "--neuron", "9.1"], "layers 0–1"),
        (["weights", "conv", "net._blocks.4", "net._blocks.3", "--unit", "0"], "must come before"),
    ]:
        res = mechscope(*args, "--out", str(tmp_path / "x"), cache=tmp_path)
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_viz_of_a_language_model_writes_prompts_beside_top_examples(folder, tmp_path: Path) -> None:
    store = tmp_path / "h"
    res = mechscope("harvest", str(folder), "--corpus", "fortunes", "--tokens", "256", "--window", "16",
                    "--batch-size", "4", "--k", "3", "--sites", "blocks.1.mlp.post", "--out", str(store),
                    cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = tmp_path / "p"
    res = mechscope("viz", "blocks.1.mlp.post", "--model", str(folder), "--units", "1,2", "--harvest",
                    str(store), "--steps", "2", "--length", "4", "--soft-steps", "2", "--out", str(out),
                    cache=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "GCG beats the top example on" in res.stdout and "of 2 units" in res.stdout
    assert (out / "comparisons.safetensors").exists() and (out / "figures" / "prompts.png").exists()
    res = mechscope("viz", "blocks.1.mlp.post", "--model", str(folder), "--out", str(tmp_path / "x"),
                    cache=tmp_path)  # fmt: skip
    assert res.returncode == 2 and "give --harvest" in res.stderr and "Traceback" not in res.stderr
