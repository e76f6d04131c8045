"""`mechscope ioi`: the whole IOI reproduction on one model, written to a run folder.

Steps (Wang et al. 2022, on any supported model): the data set and its logit
difference (clean, ABC, S2↔IO); residual-stream patching by layer × position
(where the name information sits, and when it moves to the final position);
patching every head; attribution patching and its agreement with real
patching; direct logit attribution; path patching to the logits and to the
name movers' queries; head diagnostics and classes; circuit discovery with its
faithfulness; figures (PNG, SVG, HTML) and a terminal summary. The
prompt-level measures (logit differences, DLA, copying and attention scores
over all prompts) are `mechscope.ioi.measures`'s.

Example::

    report = ioi_run(model, "runs/ioi", n_prompts=100)
    report.summary["circuit"]["faithfulness"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from ..core.model import Model
from ..errors import InputError
from ..figures import patterns as draw_patterns
from ..patching import activation_patching, attribution_patching, path_patching, rank_agreement
from ..store import hf_agreement, model_record, new_run
from .dataset import IOIDataset, ioi_dataset
from .heads import (
    classify_heads,
    duplicate_token_scores,
    induction_scores,
    previous_token_scores,
)
from .measures import _rows, prompt_measures


def ioi_metric(ds: IOIDataset) -> Callable[[Tensor], Tensor]:
    """logit(IO) − logit(S) at the last position, per row; rows are experiment-major copies of `ds`.

    Example::

        ds = ioi_dataset(model, 16)
        ioi_metric(ds)(model.run(ds.tokens).logits)  # [16]: logit(IO) − logit(S) per prompt
        activation_patching(model, ds.tokens, ds.corrupt("ABC").tokens, ioi_metric(ds), "attn.z")
    """
    n = len(ds.prompts)

    def metric(logits: Tensor) -> Tensor:
        reps = logits.shape[0] // n
        io, s = ds.io_ids.repeat(reps), ds.s_ids.repeat(reps)
        last = logits[:, -1]
        rows = torch.arange(last.shape[0])
        return last[rows, io] - last[rows, s]

    return metric


@dataclass(frozen=True)
class IOIReport:
    """What `ioi_run` found; the full results are in the run folder `path`.

    Example: ``ioi_run(model, "runs/ioi").summary["circuit"]["faithfulness"]`` → a float.
    """

    path: Path
    summary: dict[str, Any]

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"IOIReport({s['model']}: logit diff {s['logit_diff']['clean']:+.2f} on "
            f"{s['prompts']} prompts; circuit {s['circuit']['heads']} heads, faithfulness "
            f"{s['circuit']['faithfulness']:.2f}; {self.path})"
        )


def ioi_run(
    model: Model,
    out: str | Path = "runs/ioi",
    *,
    n_prompts: int = 100,
    sweep_prompts: int = 16,
    resid_prompts: int = 4,
    threshold: float = 0.025,
    seed: int = 0,
    console: Console | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> IOIReport:
    """Run the IOI reproduction and write it to `out` (see the module docstring).

    `n_prompts` feed the logit differences, direct logit attribution and the
    copying and attention scores (the prompt-level measures, in blocks of
    `PROMPT_BLOCK` prompts: with ``engine="ray"`` the blocks are spread over
    Ray tasks, see `prompt_measures`); `sweep_prompts` (a subset) every
    patching experiment on heads, paths and the circuit; `resid_prompts` (one
    template, so positions line up) the residual-stream sweeps by layer × position.

    Example: ``ioi_run(model, "runs/ioi", n_prompts=100)`` → ``IOIReport(smollm2-135m: …)``.
    """
    from ..engine import check_engine

    check_engine(engine, address=address, workers=workers, threads=threads)
    if model.dims is None:
        raise InputError("the IOI reproduction needs a transformer language model")
    for name, value, least in (
        ("n_prompts", n_prompts, 2),
        ("sweep_prompts", sweep_prompts, 1),
        ("resid_prompts", resid_prompts, 1),
    ):
        if value < least:
            raise InputError(f"{name} must be at least {least}, got {value}")
    if not math.isfinite(threshold) or threshold < 0:
        raise InputError(f"threshold must be a finite number ≥ 0, got {threshold}")
    console = console or Console()
    config = {
        "model": model_record(model),
        "prompts": n_prompts,
        "sweep_prompts": sweep_prompts,
        "resid_prompts": resid_prompts,
        "threshold": threshold,
        "seed": seed,
    }
    with new_run("ioi", out, config) as run:
        figures = run.figures
        t = time.perf_counter()
        ds = ioi_dataset(model, n_prompts, seed=seed)
        abc = ds.corrupt("ABC")
        swap = ds.corrupt("S2_IO")
        ds.save(run.dir / "dataset.safetensors")
        measures = prompt_measures(
            model, ds, abc, swap, engine=engine, address=address, workers=workers, threads=threads
        )
        if engine == "ray":
            run.extra["engine"] = measures.engine
        diffs = measures.diffs
        run.extra["hf_max_logit_difference"] = hf_agreement(model, ds.tokens[:8])
        run.timed("dataset and prompt-level measures", t)
        _print_logit_diffs(console, model, ds, diffs)

        # a sweep subset whose name positions line up: one template
        t = time.perf_counter()
        template = int(ds.template_ids[0])
        one = ioi_dataset(model, resid_prompts, seed=seed + 1, templates=[ds.templates[template]])
        resid = {
            kind: activation_patching(
                model,
                one.tokens,
                one.corrupt(kind).tokens,
                ioi_metric(one),
                "resid_pre",
                position_labels=_ioi_labels(model, one),
            )
            for kind in ("ABC", "S2_IO")
        }
        for kind, result in resid.items():
            result.save(run.dir / f"patch_resid_pre_{kind}.safetensors")
            result.heatmap(
                figures / f"patch_resid_pre_{kind}",
                title=f"IOI: restoring clean resid_pre into the {kind} run (layer × position)",
            )
        run.timed("resid sweeps", t)
        _print_resid(console, resid["ABC"])

        t = time.perf_counter()
        sub, sub_abc = _subset(ds, sweep_prompts), _subset(abc, sweep_prompts)
        sub_metric = ioi_metric(sub)
        heads = activation_patching(
            model, sub.tokens, sub_abc.tokens, sub_metric, "attn.z", per_position=False
        )
        heads.save(run.dir / "patch_heads.safetensors")
        heads.heatmap(
            figures / "patch_heads", title="IOI: restoring one head's clean output (ABC → clean)"
        )
        approx = attribution_patching(model, sub.tokens, sub_abc.tokens, sub_metric)
        approx.save(run.dir / "attribution_patching.safetensors")
        agreement = rank_agreement(approx.heads, heads.values, k=10)
        from ..figures import heatmap

        heatmap(
            approx.heads,
            figures / "attribution_heads",
            title="IOI: attribution patching per head (linear estimate)",
            x_title="head",
            y_title="layer",
            value_title="normalised metric",
        )
        run.timed("head patching + attribution", t)
        console.print(f"attribution patching vs real patching over heads: {agreement}")

        t = time.perf_counter()
        dla = measures.dla
        dla.heatmap(figures / "dla_heads", title="IOI: direct logit attribution per head (IO − S)")
        direct = path_patching(model, sub.tokens, sub_abc.tokens, sub_metric, "logits")
        direct.save(run.dir / "path_to_logits.safetensors")
        direct.heatmap(
            figures / "path_to_logits", title="IOI: path patching sender → logits (1 = no effect)"
        )
        run.timed("direct effects", t)

        t = time.perf_counter()
        scores = {
            "induction": induction_scores(model, seed=seed),
            "duplicate_token": duplicate_token_scores(model, seed=seed),
            "previous_token": previous_token_scores(model, seed=seed),
            "copying": measures.copying,
        }
        attention = measures.attention
        for name, score in scores.items():
            score.save(run.dir / f"scores_{name}.safetensors")
        attention.save(run.dir / "scores_ioi_attention.safetensors")
        first = classify_heads(ioi_attention=attention, copying=scores["copying"])
        movers = [(h.layer, h.head) for h in first.of("name_mover")]
        s_effect = None
        if movers:
            to_movers = path_patching(
                model, sub.tokens, sub_abc.tokens, sub_metric, movers, receiver_input="q"
            )
            to_movers.save(run.dir / "path_to_name_mover_queries.safetensors")
            to_movers.heatmap(
                figures / "path_to_name_mover_queries",
                title="IOI: path patching sender → name movers' queries (1 = no effect)",
            )
            s_effect = torch.nan_to_num(to_movers.raw - to_movers.clean_metric, nan=0.0)
        classes = classify_heads(
            induction=scores["induction"],
            duplicate_token=scores["duplicate_token"],
            previous_token=scores["previous_token"],
            ioi_attention=attention,
            copying=scores["copying"],
            s_inhibition_effect=s_effect,
        )
        classes.save(run.dir / "head_classes.safetensors")
        run.timed("head classes", t)
        console.print(classes)

        t = time.perf_counter()
        circuit = _discover_circuit(
            model, sub, sub_abc, sub_metric, threshold, classes, figures, run.dir
        )
        run.timed("circuit", t)

        key = [(h.layer, h.head, h.cls) for h in classes.labels][:12]
        if key:
            cache = model.run(
                ds.tokens[:1], save=[f"blocks.{layer}.attn.pattern" for layer, _, _ in key]
            ).cache
            pats = torch.stack(
                [cache[f"blocks.{layer}.attn.pattern"][0, head] for layer, head, _ in key]
            )
            draw_patterns(
                pats,
                model.to_str_tokens(ds.tokens[0]),
                [f"L{layer}H{head} {cls}" for layer, head, cls in key],
                figures / "key_head_patterns",
                title=f"attention patterns of the classified heads on {ds.prompts[0]!r}",
            )

        summary = {
            "model": model.name,
            "prompts": n_prompts,
            "sweep_prompts": sweep_prompts,
            "logit_diff": {k: float(v.mean()) for k, v in diffs.items()},
            "logit_diff_std": {k: float(v.std()) for k, v in diffs.items()},
            "share_positive": {k: float((v > 0).float().mean()) for k, v in diffs.items()},
            "attribution_vs_patching": {
                "spearman": agreement.spearman,
                "pearson": agreement.pearson,
                "top10_overlap": agreement.top_k_overlap,
            },
            "dla_total": dla.total,
            "top_patched_heads": heads.top(10),
            "head_classes": [list(h) for h in classes.labels],
            "circuit": circuit,
        }
        run.write_json("summary.json", summary)
        path = run.finish()
    _print_circuit(console, summary["circuit"])
    console.print(
        f"IOI reproduction written to [bold]{path}[/bold] (figures in {path / 'figures'})"
    )
    return IOIReport(path, summary)


def _discover_circuit(
    model: Model,
    ds: IOIDataset,
    abc: IOIDataset,
    metric: Callable[[Tensor], Tensor],
    threshold: float,
    classes: Any,
    figures: Path,
    folder: Path,
) -> dict[str, Any]:
    from ..patching.circuit import acdc
    from ..patching.eap import edge_attribution_patching

    scores = edge_attribution_patching(model, ds.tokens, abc.tokens, metric)
    # MLPs stay in the circuit (the issue counts heads); within a layer the least important go first
    circuit = acdc(
        model,
        ds.tokens,
        abc.tokens,
        metric,
        threshold,
        edge_scores=scores,
        last_only=True,
        include_mlps=False,
        order="scores",
    )
    labels = {f"L{h.layer}H{h.head}": h.cls for h in classes.labels}
    circuit.save(folder / "circuit.safetensors")
    circuit.figure(figures / "circuit", node_labels=labels)
    n_heads = model.dims.n_layers * model.dims.n_heads if model.dims else 0
    return {
        "heads": circuit.n_heads,
        "head_fraction": circuit.n_heads / n_heads if n_heads else math.nan,
        "nodes": list(circuit.nodes),
        "edges": len(circuit.edges),
        "faithfulness": circuit.ratio,
        "faithfulness_normalised": circuit.faithfulness,
        "metric_model": circuit.metric_model,
        "metric_circuit": circuit.metric_circuit,
        "threshold": threshold,
    }


def _subset(ds: IOIDataset, n: int) -> IOIDataset:
    """The first `n` prompts of a data set."""
    return _rows(ds, 0, min(n, len(ds)))


def _ioi_labels(model: Model, ds: IOIDataset) -> list[str]:
    tokens = model.to_str_tokens(ds.tokens[0])
    names = {int(ds.positions[k][0]): k for k in ("IO", "S1", "S2", "END")}
    return [f"{i}:{t}" + (f" ({names[i]})" if i in names else "") for i, t in enumerate(tokens)]


def _print_logit_diffs(
    console: Console, model: Model, ds: IOIDataset, diffs: dict[str, Tensor]
) -> None:
    table = Table(title=f"IOI on {model.name}: {len(ds.prompts)} prompts, e.g. {ds.prompts[0]!r}")
    table.add_column("input")
    table.add_column("mean logit(IO) − logit(S)", justify="right")
    table.add_column("std", justify="right")
    table.add_column("share > 0", justify="right")
    for name, v in diffs.items():
        table.add_row(name, f"{v.mean():+.2f}", f"{v.std():.2f}", f"{(v > 0).float().mean():.0%}")
    console.print(table)


def _print_resid(console: Console, result: Any) -> None:
    table = Table(title="restoring clean resid_pre into the ABC run (normalised; 1 = clean)")
    table.add_column("layer", justify="right")
    keep = [i for i, label in enumerate(result.labels["pos"]) if "(" in label]
    for i in keep:
        table.add_column(result.labels["pos"][i], justify="right")
    step = max(1, result.values.shape[0] // 10)
    for layer in range(0, result.values.shape[0], step):
        table.add_row(str(layer), *(f"{result.values[layer, i]:+.2f}" for i in keep))
    console.print(table)


def _print_circuit(console: Console, c: dict[str, Any]) -> None:
    console.print(
        f"circuit: {c['heads']} heads ({c['head_fraction']:.1%} of all), {len(c['nodes'])} nodes, "
        f"{c['edges']} edges; metric {c['metric_circuit']:+.2f} vs model {c['metric_model']:+.2f}: "
        f"faithfulness {c['faithfulness']:.2f} (normalised {c['faithfulness_normalised']:.2f}) "
        f"at threshold {c['threshold']}"
    )
