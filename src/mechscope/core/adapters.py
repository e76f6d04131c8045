"""Architecture adapters: per-family tables from canonical site names to HF module paths.

An adapter never converts weights. It only says which unmodified HF module
produces (or consumes) the tensor behind each site, and how many heads the
attention has. Families differ in naming (``model.layers`` vs
``transformer.h``) and in where the residual additions happen (Gemma 2/3 norm
the attention and MLP outputs before adding them); the table absorbs both so
that ``resid_mid = resid_pre + attn.out`` and
``resid_post = resid_mid + mlp.out`` hold on every family.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from ..errors import ModelLoadError


@dataclass(frozen=True)
class Adapter:
    """Where each site lives in one model family, as module paths, and how it norms.

    Block-relative paths are below ``layers.{l}``. ``attn_out`` and ``mlp_out``
    name the module whose output is added to the residual stream;
    ``mlp_down`` the MLP's output projection, whose input is ``mlp.post``.
    ``attn_norm`` and ``mlp_norm`` are the pre-norms that read the residual
    stream. ``qkv`` holds the query, key and value projections (three paths),
    or one fused projection laid out as ``qkv_layout`` says: ``"concat"``
    ([q | k | v] along the output, GPT-2) or ``"per_head"`` (per head q, k, v,
    GPT-NeoX). ``mlp_in`` holds the MLP's input projections, the gate first
    when ``mlp_gated``. ``norm`` is ``"rms"`` (x / rms(x) · scale) or
    ``"layer"`` ((x − mean) / std · scale + bias), and the scale is
    ``weight + norm_offset`` (Gemma's RMSNorm multiplies by 1 + weight).
    ``post_norms``: ``attn_out`` and ``mlp_out`` are norms applied to the
    sublayer outputs before the residual add (Gemma 2/3).

    Example::

        model.adapter.family      # "llama" for SmolLM2
        model.adapter.mlp_down    # "mlp.down_proj": its input is the blocks.L.mlp.post site
    """

    family: str
    layers: str
    embed: str
    final_norm: str
    unembed: str
    attn: str
    attn_out: str
    attn_proj: str
    mlp_out: str
    mlp_down: str
    attn_norm: str
    mlp_norm: str
    qkv: tuple[str, ...]
    mlp_in: tuple[str, ...]
    qkv_layout: str = "separate"
    mlp_gated: bool = False
    norm: str = "rms"
    norm_offset: float = 0.0
    post_norms: bool = False
    pos_embed: str | None = None


LLAMA = Adapter(
    family="llama",
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    attn_out="self_attn",
    attn_proj="self_attn.o_proj",
    mlp_out="mlp",
    mlp_down="mlp.down_proj",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_gated=True,
)

# Gemma 1: Llama's layout, but its RMSNorm scales by 1 + weight
GEMMA = replace(LLAMA, family="gemma", norm_offset=1.0)

# Gemma 2/3 norm the sublayer outputs before the residual add, so what enters the
# residual stream is the output of those norms.
GEMMA2 = Adapter(
    family="gemma2",
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    attn_out="post_attention_layernorm",
    attn_proj="self_attn.o_proj",
    mlp_out="post_feedforward_layernorm",
    mlp_down="mlp.down_proj",
    attn_norm="input_layernorm",
    mlp_norm="pre_feedforward_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_gated=True,
    norm_offset=1.0,
    post_norms=True,
)

GPT2 = Adapter(
    family="gpt2",
    layers="transformer.h",
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    attn="attn",
    attn_out="attn",
    attn_proj="attn.c_proj",
    mlp_out="mlp",
    mlp_down="mlp.c_proj",
    attn_norm="ln_1",
    mlp_norm="ln_2",
    qkv=("attn.c_attn",),
    qkv_layout="concat",
    mlp_in=("mlp.c_fc",),
    norm="layer",
)

GPT_NEOX = Adapter(
    family="gpt_neox",
    layers="gpt_neox.layers",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head",  # "embed_out" before transformers 5
    attn="attention",
    attn_out="attention",
    attn_proj="attention.dense",
    mlp_out="mlp",
    mlp_down="mlp.dense_4h_to_h",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    qkv=("attention.query_key_value",),
    qkv_layout="per_head",
    mlp_in=("mlp.dense_h_to_4h",),
    norm="layer",
)

# HF ``config.model_type`` -> adapter.
ADAPTERS: dict[str, Adapter] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "olmo": LLAMA,
    "olmo2": LLAMA,
    "gemma": GEMMA,
    "gemma2": GEMMA2,
    "gemma3_text": GEMMA2,
    "gpt2": GPT2,
    "gpt_neox": GPT_NEOX,
}


@dataclass(frozen=True)
class Dims:
    """The sizes that name site axes.

    Example: ``model.dims.d_head`` → 64 on SmolLM2-135M (``model.dims.n_kv_heads`` → 3).
    """

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int


def adapter_for(model: nn.Module) -> Adapter | None:
    """The adapter of an HF model, or None for a model outside the known families.

    Example: ``adapter_for(model.hf).family`` → ``"llama"``;
    ``adapter_for(torch.nn.Linear(2, 2))`` → None.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        return None
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        return None
    try:
        model.get_submodule(adapter.layers)
    except AttributeError as err:  # a base model without the LM head, say
        raise ModelLoadError(
            f"model type {model_type!r} is supported only as a causal LM with its head "
            f"(expected a module at {adapter.layers!r})"
        ) from err
    return adapter


def dims_of(model: nn.Module, adapter: Adapter) -> Dims:
    """Read the axis sizes from the HF config, whatever the family calls them.

    Example: ``dims_of(model.hf, model.adapter)`` → ``Dims(n_layers=30, d_model=576, …)``.
    """
    c = model.config
    c = getattr(c, "text_config", None) or c
    n_heads = c.num_attention_heads
    d_model = c.hidden_size
    d_head = getattr(c, "head_dim", None) or d_model // n_heads
    n_kv = getattr(c, "num_key_value_heads", None) or n_heads
    d_mlp = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * d_model
    return Dims(
        n_layers=c.num_hidden_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_mlp=d_mlp,
        d_vocab=c.vocab_size,
    )
