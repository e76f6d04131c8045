"""Steering vectors: directions in the residual stream read from prompts or data sets.

A `SteeringVector` is added, times a coefficient, to ``blocks.{layer}.resid_pre``.
It has one row ([d_model]: added at every position) or several ([k, d_model]:
added at the first k positions, as activation addition does).

- `actadd` (Turner et al. 2023): the difference of the activations of two
  prompts ("Love" − "Hate"), position by position, the shorter one padded
  with spaces;
- `mean_diff_vector` (contrastive activation addition): the difference of the
  mean activations of two sets of texts;
- `pca_vector` (representation engineering): the first principal component of
  the paired differences, signed and scaled like the mean difference;
- `from_direction`: a probe's direction (`mechscope.probes.LinearDirection`).

`SteeringVector` lives in `steering.results` (no torch) and is re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .results import SteeringVector

__all__ = [
    "SteeringVector",
    "actadd",
    "check_layer",
    "from_direction",
    "mean_diff_vector",
    "pca_vector",
    "text_activations",
    "topic_sentences",
    "word_pattern",
]

Reduce = Literal["mean", "last"]


def check_layer(model: Model, layer: int) -> None:
    """Raise `InputError` unless `model` is a transformer LM with a block `layer`.

    Example: ``check_layer(model, 6)`` passes on SmolLM2 (30 blocks); ``check_layer(model, 30)``
    raises.
    """
    if model.dims is None:
        raise InputError("steering needs a transformer language model")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise InputError(f"layer must be an integer, got {layer!r}")
    if not 0 <= layer < model.dims.n_layers:
        raise InputError(f"layer {layer} out of range: the model has {model.dims.n_layers} blocks")


def _token_rows(model: Model, text: str, prepend_bos: bool | None) -> list[int]:
    ids = model.ids(text, prepend_bos)
    if not ids:
        raise InputError(f"the prompt {text!r} has no tokens")
    return ids


@torch.no_grad()
def actadd(
    model: Model,
    plus: str,
    minus: str,
    layer: int,
    *,
    pad: Literal["space", "truncate"] = "truncate",
    prepend_bos: bool | None = None,
) -> SteeringVector:
    """Activation addition: resid_pre(plus) − resid_pre(minus) at `layer`, position by position.

    Prompts of different lengths: ``"truncate"`` keeps their shared length;
    ``pad="space"`` pads the shorter one at its end with space tokens, as
    Turner et al. did in GPT-2. In SmolLM2 a lone space token carries a
    massive activation (norm ≈ 600 against ≈ 100 for words), so space padding
    there adds a huge vector at the padded positions: hence the default.

    Example::

        v = actadd(model, "I talk about weddings", "I do not talk about weddings", layer=6)
        v.vector.shape  # [k, d_model], k: the shorter prompt's token count
        generate(model, "I went up to my friend and said", v, coef=4)
    """
    check_layer(model, layer)
    if pad not in ("space", "truncate"):
        raise InputError(f"pad must be 'space' or 'truncate', got {pad!r}")
    a, b = _token_rows(model, plus, prepend_bos), _token_rows(model, minus, prepend_bos)
    if pad == "truncate":
        width = min(len(a), len(b))
        a, b = a[:width], b[:width]
    space = model.ids(" ", False)
    if len(a) != len(b) and len(space) != 1:
        raise InputError(f"{model.name}'s tokenizer has no single space token to pad with")
    width = max(len(a), len(b))
    a, b = a + space * (width - len(a)), b + space * (width - len(b))
    ids = torch.tensor([a, b], device=model.device)
    site = f"blocks.{layer}.resid_pre"
    acts = model.run(ids, save=[site]).cache[site].float()
    meta = {"plus": plus, "minus": minus, "pad": pad}
    return SteeringVector(acts[0] - acts[1], layer, "actadd", meta)


@torch.no_grad()
def text_activations(
    model: Model,
    texts: Sequence[str],
    layer: int,
    *,
    reduce: Reduce = "mean",
    batch_size: int = 16,
    progress: bool = True,
) -> Float[Tensor, "n d_model"]:
    """``blocks.{layer}.resid_pre`` of each text: averaged over its tokens, or at its last token.

    Example: ``text_activations(model, ["I love it.", "I hate it."], 6).shape`` → ``(2, 576)``.
    """
    check_layer(model, layer)
    if not texts:
        raise InputError("no texts to read activations from")
    if reduce not in ("mean", "last"):
        raise InputError(f"reduce must be 'mean' or 'last', got {reduce!r}")
    site = f"blocks.{layer}.resid_pre"
    out = []
    for i in tqdm(range(0, len(texts), batch_size), desc=f"activations L{layer}",
                  disable=not progress):  # fmt: skip
        batch = list(texts[i : i + batch_size])
        lengths = model.lengths(batch)
        if (lengths == 0).any():
            raise InputError(
                f"the prompt {batch[int((lengths == 0).nonzero()[0])]!r} has no tokens"
            )
        acts = model.run(batch, save=[site]).cache[site].float().cpu()  # [b, pos, d]
        if reduce == "last":
            out.append(acts[torch.arange(len(batch)), lengths - 1])
        else:
            mask = (torch.arange(acts.shape[1])[None] < lengths[:, None]).float()
            out.append((acts * mask[..., None]).sum(1) / lengths[:, None])
    return torch.cat(out)


def _pairs_check(positive: Sequence[str], negative: Sequence[str], paired: bool) -> None:
    if not positive or not negative:
        raise InputError("a steering vector needs texts on both sides")
    if paired and len(positive) != len(negative):
        raise InputError(
            f"PCA needs paired texts: {len(positive)} positive and {len(negative)} negative"
        )


def mean_diff_vector(
    model: Model,
    positive: Sequence[str],
    negative: Sequence[str],
    layer: int,
    *,
    reduce: Reduce = "mean",
    progress: bool = True,
) -> SteeringVector:
    """mean(act(positive)) − mean(act(negative)) at `layer` (added at every position).

    Example: ``mean_diff_vector(model, *topic_sentences(WEDDING_WORDS), layer=6)`` → one row.
    """
    _pairs_check(positive, negative, paired=False)
    pos = text_activations(model, positive, layer, reduce=reduce, progress=progress)
    neg = text_activations(model, negative, layer, reduce=reduce, progress=progress)
    meta = {"n_positive": len(positive), "n_negative": len(negative), "reduce": reduce}
    return SteeringVector(pos.mean(0) - neg.mean(0), layer, "mean_diff", meta)


def pca_vector(
    model: Model,
    positive: Sequence[str],
    negative: Sequence[str],
    layer: int,
    *,
    reduce: Reduce = "mean",
    progress: bool = True,
) -> SteeringVector:
    """The first principal component of the paired differences act(x+) − act(x−).

    The component is signed to agree with the mean difference and scaled to
    the mean difference's length along it, so coefficients compare with
    `mean_diff_vector`'s.

    Example: ``pca_vector(model, with_topic, without, 6).meta["explained_variance"]`` → a float.
    """
    _pairs_check(positive, negative, paired=True)
    diffs = text_activations(model, positive, layer, reduce=reduce, progress=progress) - (
        text_activations(model, negative, layer, reduce=reduce, progress=progress)
    )  # [n, d]
    mean = diffs.mean(0)
    centred = diffs - mean if len(diffs) > 1 else diffs
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    pc = vh[0]
    if float(pc @ mean) < 0:
        pc = -pc
    explained = float(s[0] ** 2 / (s**2).sum()) if s.numel() else 1.0
    scale = float(pc @ mean)
    meta = {"n_pairs": len(diffs), "reduce": reduce, "explained_variance": round(explained, 4)}
    return SteeringVector(pc * scale, layer, "pca", meta)


def from_direction(direction: object, scale: float, layer: int | None = None) -> SteeringVector:
    """A probe's direction (`mechscope.probes.LinearDirection`), unit length, times `scale`.

    Probes are fitted on normalised states; a direction that keeps its
    normaliser is first mapped to residual-stream coordinates
    (`LinearDirection.in_residual`). Probes read ``blocks.L.resid_post``,
    which is ``blocks.{L+1}.resid_pre``: without `layer`, the vector is added
    there.

    Example::

        d = probe_layers(model, pairs).directions["logistic"][16]  # read at resid_post 16
        v = from_direction(d, scale=8.0)  # v.layer == 17: added at blocks.17.resid_pre
    """
    weight = getattr(direction, "weight", None)
    if weight is not None and not isinstance(weight, Tensor):  # a direction opened with numpy
        weight = torch.as_tensor(weight)
    if not isinstance(weight, Tensor):
        raise InputError(
            "from_direction needs a probe direction (mechscope.probes.LinearDirection)"
        )
    if getattr(direction, "normaliser", None) is not None:
        weight = torch.as_tensor(direction.in_residual())  # type: ignore[attr-defined]
    if layer is None and getattr(direction, "layer", None) is not None:
        layer = int(direction.layer) + 1  # type: ignore[attr-defined]
    if layer is None:
        raise InputError("the direction records no layer; pass layer=…")
    unit = weight.float() / weight.float().norm()
    return SteeringVector(unit * scale, int(layer), f"probe:{getattr(direction, 'method', '')}")


def word_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """A regex matching any of `words` as a whole word, in any case.

    Example: ``word_pattern(["bride"]).search("The Bride arrived")`` matches; "bridesmaid" does not.
    """
    if not words:
        raise InputError("a topic needs at least one word")
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def topic_sentences(
    words: Sequence[str],
    corpus: str = "austen",
    *,
    n: int = 200,
    seed: int = 0,
    min_chars: int = 40,
    max_chars: int = 250,
) -> tuple[list[str], list[str]]:
    """Sentences of a corpus with any of `words` (whole words) and as many without, for a topic vector.

    The sentences mentioning the topic are the first `n` found; the others
    are sampled with `seed` from the same stretch of the corpus, so the two
    sets differ in topic and not in style.

    Example: ``with_topic, without = topic_sentences(WEDDING_WORDS, n=100)`` → 100 sentences each.
    """
    import random

    from ..corpus import open_corpus

    pattern = word_pattern(words)
    with_topic: list[str] = []
    without: list[str] = []
    for doc in open_corpus(corpus).documents():
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
            if min_chars <= len(sentence) <= max_chars:
                (with_topic if pattern.search(sentence) else without).append(sentence)
        if len(with_topic) >= n and len(without) >= 10 * n:
            break
    if not with_topic or len(without) < len(with_topic):
        raise InputError(f"the corpus {corpus!r} has too few sentences with {', '.join(words)}")
    with_topic = with_topic[:n]
    return with_topic, random.Random(seed).sample(without, len(with_topic))
