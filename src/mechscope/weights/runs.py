"""Run folders for weight circuits, which the viewer serves.

A ``weights-conv`` run holds ``weights.safetensors`` (the `ConvWeights`; its
``table(k)`` ranks the top exciting and inhibiting channels), the renderings
of the unit and of those channels (``unit.safetensors``,
``inputs.safetensors``: `Rendering` each), and the figure ``circuit``
(PNG/SVG/HTML).

A ``weights-lm`` run holds ``heads.safetensors`` (the `HeadCircuits`: per
head, OV and QK circuits on tokens and the earlier heads composing with it
most), ``neurons/L-N/wiring.safetensors`` (a `NeuronWiring` each; the
config's ``k`` is how many upstream units its pages rank) with
``wiring.json`` beside it (its top-``k`` rankings as JSON),
``copying.safetensors`` (the `CopyingScores` of every head) and the figure
``copying``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.model import Model
from ..errors import InputError
from ..store import model_record, new_run
from . import lm
from .conv import ConvWeights, expanded_weights
from .results import CopyingScores, HeadCircuit, HeadCircuits, head_name, wiring_file

# source tokens whose OV images and query tokens whose QK keys a head page shows
DEFAULT_TOKENS = (" Paris", " cat", " John", " Mary", " the", " red", " (", " walked")


def conv_weights_run(
    model: Model,
    src: str,
    dst: str,
    unit: int,
    out: str | Path,
    *,
    k: int = 6,
    size: int = 224,
    viz_size: int = 96,
    viz_steps: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> ConvWeights:
    """Expanded weights from `src` into `dst`:`unit`, with the unit and its top `k` exciting and
    inhibiting input channels visualised (one batched render each), written to `out`.

    Example::

        w = conv_weights_run(load_vision(), "net._blocks.11", "net._blocks.12", 5, "runs/w")
    """
    from ..vision.featureviz import channel, channels, render

    config = {"model": model_record(model), "src": src, "dst": dst, "unit": unit, "k": k,
              "size": size, "viz_size": viz_size, "viz_steps": viz_steps, "seed": seed}  # fmt: skip
    with new_run("weights-conv", out, config) as run:
        t0 = time.perf_counter()
        weights = expanded_weights(model, src, dst, unit, size=size)
        run.timed("weights", t0)
        weights.save(run.dir / "weights.safetensors")
        images: dict[int, torch.Tensor] = {}
        unit_image = None
        if viz_steps > 0:
            t0 = time.perf_counter()
            chosen = list(dict.fromkeys(weights.top(k) + weights.top(k, "inhibition")))
            inputs = render(model, channels(src, chosen), size=viz_size, batch=len(chosen),
                            steps=viz_steps, seed=seed, progress=progress)  # fmt: skip
            target = render(model, channel(dst, unit), size=viz_size, steps=viz_steps, seed=seed,
                            progress=progress)  # fmt: skip
            run.timed("visualisations", t0)
            inputs.save(run.dir / "inputs.safetensors")
            target.save(run.dir / "unit.safetensors")
            images = dict(zip(chosen, inputs.final, strict=True))
            unit_image = target.final[0]
        weights.figure(run.figures / "circuit", images=images or None,
                       unit_image=unit_image, k=k,
                       title=f"{model.name}: {src} → {dst}:{unit}")  # fmt: skip
        top = weights.top(1)[0]
        run.extra["summary"] = (f"{src} → {dst}:{unit}, {weights.maps.shape[0]} input channels "
                                f"over {weights.maps.shape[1]}×{weights.maps.shape[2]}; "
                                f"most exciting: channel {top}")  # fmt: skip
        run.finish()
    return weights


def _pairs(items: Sequence[tuple[int, int]] | None, what: str) -> list[tuple[int, int]]:
    out = []
    for item in items or ():
        if len(item) != 2:
            raise InputError(f"each {what} is (layer, index), got {item!r}")
        out.append((int(item[0]), int(item[1])))
    return out


def _default_tokens(model: Model) -> list[str]:
    single = [t for t in DEFAULT_TOKENS if len(model.to_tokens(t, prepend_bos=False)[0]) == 1]
    if single:
        return single
    # a character-level vocabulary: the last character of each word
    return list(dict.fromkeys(t[-1] for t in DEFAULT_TOKENS))


def lm_weights_run(
    model: Model,
    out: str | Path,
    *,
    neurons: Sequence[tuple[int, int]] = (),
    heads: Sequence[tuple[int, int]] = (),
    tokens: Sequence[str] | None = None,
    k: int = 10,
    via: str | None = None,
) -> HeadCircuits:
    """Weight circuits of a language model's chosen `neurons` and `heads` (each (layer, index)),
    plus the copying score of every head, written to `out`; returns the heads' circuits.

    `tokens` are the source (OV) and query (QK) tokens shown per head, each one
    token; by default those of `DEFAULT_TOKENS` that are one token for the model.

    Example: ``lm_weights_run(model, "runs/wlm", heads=[(5, 1)], neurons=[(3, 100)])``.
    """
    neurons, heads = _pairs(neurons, "neuron"), _pairs(heads, "head")
    vocab = model.dims.d_vocab if model.dims else None
    if k < 1 or (vocab is not None and k > vocab):
        raise InputError(
            f"k (entries per ranking) must be 1 to the vocabulary size {vocab}, got {k}"
        )
    tokens = list(tokens) if tokens is not None else _default_tokens(model)
    config = {"model": model_record(model), "neurons": neurons, "heads": heads,
              "tokens": list(tokens), "k": k, "via": via}  # fmt: skip
    with new_run("weights-lm", out, config) as run:
        t0 = time.perf_counter()
        copying = lm.copying_scores(model)
        CopyingScores(copying).save(run.dir / "copying.safetensors")
        from ..figures import heatmap

        heatmap(copying, run.figures / "copying", title=f"{model.name}: copying score of each head",
                x_title="head", y_title="layer", value_title="copying score", center=0.0)  # fmt: skip
        circuits = []
        for layer, head in heads:
            comp = lm.composition_scores(model, layer, head)
            strongest = {}
            for kind, scores in comp.items():
                values, idx = scores.flatten().topk(min(5, scores.numel()))
                width = scores.shape[1]
                strongest[kind] = [(int(i) // width, int(i) % width, float(v))
                                   for v, i in zip(values, idx, strict=True) if v > 0]  # fmt: skip
            circuits.append(HeadCircuit(
                layer, head, float(copying[layer, head]),
                ov=lm.token_ov(model, layer, head, list(tokens), k),
                qk=lm.token_qk(model, layer, head, list(tokens), k),
                composition=strongest,
            ))  # fmt: skip
        summary = HeadCircuits(circuits)
        summary.save(run.dir / "heads.safetensors")
        for layer, neuron in neurons:
            wiring = lm.neuron_wiring(model, layer, neuron, via=via, k=k)
            saved = wiring.save(run.dir / wiring_file(layer, neuron))
            # its top-k rankings as JSON beside it, for readers without mechscope
            run.write_json(str(saved.relative_to(run.dir).with_suffix(".json")), wiring.to_json(k))
        run.timed("weights", t0)
        best = copying.flatten().argmax()
        n_heads = copying.shape[1]
        run.extra["summary"] = (f"{len(heads)} heads, {len(neurons)} neurons; highest copying "
                                f"score: head {head_name(int(best) // n_heads, int(best) % n_heads)} "
                                f"({float(copying.flatten()[best]):.3f})")  # fmt: skip
        run.finish()
    return summary
