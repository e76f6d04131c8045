"""Devices, precisions and dispatched models: the same numbers with the same calls."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.core.placement import Placement, parse_device, parse_device_map, parse_dtype
from mechscope.errors import ModelLoadError
from mechscope.patching import activation_patching
from mechscope.testing import ARCHS, save_tiny, tiny_model

LOW = [torch.bfloat16, torch.float16]
# per-dtype tolerance for identities whose two sides are computed in a different order
TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-3}


def _ids(n: int = 3, pos: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    return torch.randint(3, 259, (n, pos), generator=g)


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dtype"),
    [("bf16", torch.bfloat16), ("float16", torch.float16), ("torch.float32", torch.float32)],
)
def test_dtype_names(text: str, dtype: torch.dtype) -> None:
    assert parse_dtype(text) is dtype
    assert parse_dtype("auto") == "auto"


@pytest.mark.parametrize("bad", ["int8", "", "bfloat", torch.int64])
def test_bad_dtype_names_what_is_valid(bad: object) -> None:
    with pytest.raises(ModelLoadError, match="valid: auto, float32, bfloat16"):
        parse_dtype(bad)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("bad", ["cuda", "cuda:3", "tpu", "mps"])
def test_missing_device_names_what_is_valid(bad: str) -> None:
    with pytest.raises(ModelLoadError, match="valid here: cpu"):
        parse_device(bad)


def test_device_map_values_are_checked() -> None:
    assert parse_device_map("auto") == "auto"
    assert parse_device_map({"model": "disk", "lm_head": "cpu"}) == {
        "model": "disk",
        "lm_head": "cpu",
    }
    with pytest.raises(ModelLoadError, match="valid: auto, balanced"):
        parse_device_map("everywhere")
    with pytest.raises(ModelLoadError, match="not available|invalid device"):
        parse_device_map({"model": "gpu7"})


def test_load_checks_before_reading(tmp_path) -> None:
    folder = save_tiny("llama", tmp_path / "tiny")
    with pytest.raises(ModelLoadError, match="unknown dtype 'int4'"):
        ms.load(str(folder), dtype="int4")
    with pytest.raises(ModelLoadError, match="valid here"):
        ms.load(str(folder), device="cuda:9")


def test_placement_record_is_json(tmp_path) -> None:
    place = Placement.of("bf16", "cpu", {"model": "disk"}, None, cache_dir=tmp_path)
    assert place.record() == {
        "device": "cpu",
        "dtype": "torch.bfloat16",
        "device_map": {"model": "disk"},
    }
    assert place.hf_kwargs()["offload_folder"] == str(tmp_path / "offload")


# --- precisions -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("arch", ARCHS)
def test_low_precision_logits_are_hf_bit_for_bit(arch: str, dtype: torch.dtype) -> None:
    model = tiny_model(arch, dtype=dtype)
    ids = _ids()
    with torch.no_grad():
        ref = model.hf(ids).logits
    assert ref.dtype == dtype and model.dtype == dtype
    out = model.run(ids, save=["blocks.*.resid_pre", "blocks.*.mlp.post", "blocks.*.attn.out"])
    assert torch.equal(out.logits, ref)
    assert out.cache["blocks.1.resid_pre"].dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, *LOW])
@pytest.mark.parametrize("arch", ARCHS)
def test_saving_q_k_v_z_changes_no_bit(arch: str, dtype: torch.dtype) -> None:
    """Layers with q/k/v/z sites keep the fast kernel: saving them leaves the logits HF's."""
    model = tiny_model(arch, dtype=dtype)
    ids = _ids()
    with torch.no_grad():
        ref = model.hf(ids).logits
    sites = [f"blocks.*.attn.{s}" for s in ("q", "k", "v", "z")]
    out = model.run(ids, save=sites)
    assert torch.equal(out.logits, ref)
    # z is what the pattern-forming (eager) path computes, to the dtype's precision
    eager = model.run(ids, save=["blocks.0.attn.z", "blocks.0.attn.pattern"])
    z, z_eager = out.cache["blocks.0.attn.z"].float(), eager.cache["blocks.0.attn.z"].float()
    assert torch.allclose(z, z_eager, atol=TOL[dtype] * 4, rtol=TOL[dtype] * 4)
    assert model.hf.config._attn_implementation != "mechscope"


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("arch", ARCHS)
def test_residual_identities_in_low_precision(arch: str, dtype: torch.dtype) -> None:
    model = tiny_model(arch, dtype=dtype)
    c = model.run(_ids(), save=["blocks.*"]).cache
    for layer in range(2):
        pre, mid, post = (
            c[f"blocks.{layer}.{s}"].float() for s in ("resid_pre", "resid_mid", "resid_post")
        )
        attn, mlp = c[f"blocks.{layer}.attn.out"].float(), c[f"blocks.{layer}.mlp.out"].float()
        scale = pre.abs().max().item() + 1
        assert (pre + attn - mid).abs().max() <= TOL[dtype] * scale
        assert (mid + mlp - post).abs().max() <= TOL[dtype] * scale


@pytest.mark.parametrize("dtype", LOW)
def test_patching_in_low_precision(dtype: torch.dtype) -> None:
    model = tiny_model("llama", dtype=dtype)
    clean, corrupt = _ids(2), _ids(2).flip(1)
    cache = model.run(clean, save=["blocks.*.resid_pre"]).cache
    base = model.run(corrupt).logits
    # the clean run patched with its own values changes nothing, exactly
    same = model.run(clean, interventions=[ms.patch("blocks.1.resid_pre", cache)])
    assert torch.equal(same.logits, model.run(clean).logits)
    # patching everything at layer 0 gives the clean run (to the dtype's rounding)
    full = model.run(corrupt, interventions=[ms.patch("blocks.0.resid_pre", cache)]).logits
    ref = model.run(clean).logits
    assert (full.float() - ref.float()).abs().max() <= TOL[dtype] * (ref.abs().max().item() + 1)
    assert not torch.equal(base, ref)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 5].float() - logits[:, -1, 7].float()

    sweep = activation_patching(model, clean, corrupt, metric, "resid_pre", progress=False)
    for layer, pos in [(0, 3), (1, 8)]:
        one = model.run(
            corrupt,
            interventions=[ms.patch(f"blocks.{layer}.resid_pre", cache, positions=[pos])],
        ).logits
        expected = metric(one[:, -1:]).mean().item()
        assert sweep.raw[layer, pos].item() == pytest.approx(expected, abs=TOL[dtype] * 10)


# --- a model dispatched over the CPU and the disk by accelerate -------------------------------

DISPATCH = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "disk",
    "lm_head": "disk",
}


@pytest.fixture(scope="module")
def dispatched(tmp_path_factory: pytest.TempPathFactory):
    """The same tiny Llama twice: whole on the CPU, and dispatched with half of it on disk."""
    folder = save_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")
    offload = tmp_path_factory.mktemp("offload")
    plain = ms.load(str(folder))
    spread = ms.load(str(folder), device_map=DISPATCH, offload_folder=offload)
    return plain, spread


def test_dispatch_is_real(dispatched) -> None:
    plain, spread = dispatched
    assert spread.offloaded and not plain.offloaded
    assert spread.device == torch.device("cpu")
    assert spread.device_map is not None and "disk" in set(map(str, spread.device_map.values()))
    assert hasattr(spread.hf.get_submodule("model.layers.1"), "_hf_hook")


def test_dispatched_run_save_and_interventions_equal(dispatched) -> None:
    plain, spread = dispatched
    ids = _ids()
    steer = torch.randn(32, generator=torch.Generator().manual_seed(0))
    source = plain.run(ids.flip(1), save=["blocks.*.resid_pre"]).cache
    ivs = [
        ms.add("blocks.1.resid_pre", steer, positions=[2]),
        ms.zero_ablate("blocks.1.attn.z", heads=[1]),
        ms.patch("blocks.0.resid_pre", source, rows=[0], positions=[4]),
        ms.scale("blocks.1.mlp.post", 0.5, neurons=[3, 4]),
    ]
    sites = ["blocks.*.resid_pre", "blocks.1.attn.pattern", "blocks.1.mlp.post", "final_norm"]
    a = plain.run(ids, save=sites, interventions=ivs)
    b = spread.run(ids, save=sites, interventions=ivs)
    assert torch.equal(a.logits, b.logits)
    assert set(a.cache) == set(b.cache)
    for name in a.cache:
        assert torch.equal(a.cache[name], b.cache[name]), name
    assert torch.equal(plain.run(ids).logits, spread.run(ids).logits)


def test_dispatched_gradients_equal(dispatched) -> None:
    plain, spread = dispatched
    ids = _ids(2)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 11].sum()

    grads = ["blocks.0.resid_pre", "blocks.1.attn.z", "blocks.1.mlp.post"]
    a = plain.run(ids, save_grad=grads, backward=metric).cache.grads
    b = spread.run(ids, save_grad=grads, backward=metric).cache.grads
    for name in grads:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=1e-5), name


def test_dispatched_sweep_equals(dispatched) -> None:
    plain, spread = dispatched
    clean, corrupt = _ids(2), _ids(2).flip(1)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 5] - logits[:, -1, 7]

    a = activation_patching(plain, clean, corrupt, metric, "resid_pre", progress=False)
    b = activation_patching(spread, clean, corrupt, metric, "resid_pre", progress=False)
    assert torch.equal(a.raw, b.raw)
    h_a = activation_patching(plain, clean, corrupt, metric, "attn.z", progress=False)
    h_b = activation_patching(spread, clean, corrupt, metric, "attn.z", progress=False)
    assert torch.allclose(h_a.raw, h_b.raw, atol=1e-6)


def test_weight_readers_say_they_cannot_follow_offloaded_weights(dispatched) -> None:
    """The logit lens calls the final norm and unembedding (it follows); DLA and weight
    circuits read weight matrices (they say so in one line)."""
    from mechscope.lens import direct_logit_attribution, logit_lens
    from mechscope.weights.lm import ov_circuit

    plain, spread = dispatched
    ids = _ids(1)
    a, b = logit_lens(plain, ids), logit_lens(spread, ids)
    assert a.top_tokens == b.top_tokens
    with pytest.raises(ms.InputError, match="direct logit attribution reads the weight matrices"):
        direct_logit_attribution(spread, ids, torch.ones(32))
    with pytest.raises(ms.InputError, match="weight circuits reads the weight matrices"):
        ov_circuit(spread, 1, 0)
