"""`mechscope tour`: the main job, a guided run of each technique on the default model.

Each section is a function taking the model and a console; later techniques
add their sections to `SECTIONS`. Results are written under ``runs/tour``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from . import Model, load
from .core import interventions as iv
from .display import (
    lm_weights,
    maze_behaviour,
    maze_steering,
    prompt_table,
    score_table,
    top_tokens,
)

PROMPTS = [
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "Albert Einstein was a famous",
]
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
OUT_DIR = Path("runs/tour")
TOUR_EXPLAIN_UNITS = 3
TOUR_HARVEST_TOKENS = 16_384  # a slice; `mechscope harvest` does 1M tokens by default
TOUR_SAE_TOKENS = 196_608  # a short run; `mechscope sae train` does 1M tokens by default
TOUR_TRACE_FACTS = 8  # a small average; the README's is over 60 facts
TOUR_EDIT_FACT = 0  # which known capital the tour rewrites (to the next one's capital)
TOUR_PROBE_PAIRS = 600  # 200 to fit, 400 held out; the README's run fits 600
TOUR_STEER = ("I talk about weddings constantly", "I do not talk about weddings constantly")
TOUR_STEER_LAYER, TOUR_STEER_COEF = 8, 1.0  # a cell of the README's sweep within 10% perplexity
TOUR_VIZ_BLOCKS = (1, 4, 8, 12, 15)  # EfficientNet-Lite0 blocks, early → late
TOUR_VIZ_STEPS = 128  # per grid image; the strip runs to 2048
TOUR_WEIGHTS = ("net._blocks.11", "net._blocks.12", 5)  # src, dst, unit of the weight circuit
TOUR_LM_WEIGHTS = {"heads": [(27, 1)], "neurons": [(12, 100)]}
TOUR_PROMPT_UNITS, TOUR_PROMPT_STEPS = 3, 20
TOUR_MAZE_STEPS = 3000  # imitation steps; `mechscope maze train` does 6000
TOUR_MAZE_EVAL, TOUR_MAZE_STEER = 500, 200  # mazes of each kind; mazes with a decision square


def next_tokens(model: Model, console: Console) -> None:
    """Top next tokens for a few prompts, in one batched run.

    Example: ``next_tokens(mechscope.load(), Console())``, one step of `run_tour`.
    """
    for prompt in PROMPTS:
        logits = model.run(prompt).logits
        console.print(top_tokens(model, prompt, logits[0, -1], 5))


def cache_shapes(model: Model, console: Console) -> None:
    """Save one of each kind of site and show the shapes; write the cache to disk.

    Example: ``cache_shapes(mechscope.load(), Console())``, one step of `run_tour`.
    """
    sites = [s.name for s in model.sites("blocks.0.*")] + ["embed", "final_norm", "logits"]
    out = model.run(PROMPTS[0], save=sites)
    table = Table(title=f"cached sites for {PROMPTS[0]!r}")
    table.add_column("site")
    table.add_column("shape")
    table.add_column("axes")
    for s in model.table.order(list(out.cache)):
        table.add_row(s, str(tuple(out.cache[s].shape)), model.table[s].shape)
    console.print(table)
    path = out.cache.save(OUT_DIR / "cache.safetensors")
    console.print(f"cache written to {path} (reopen with mechscope.ActivationCache.load)")


def ioi_patching(model: Model, console: Console) -> None:
    """IOI logit difference, then one batched forward patching resid_pre at S2 per layer.

    Example: ``ioi_patching(mechscope.load(), Console())``, one step of `run_tour`.
    """
    io, s = model.to_single_token(" Mary"), model.to_single_token(" John")
    clean_ids = model.to_tokens(IOI_CLEAN)
    corrupt_ids = model.to_tokens(IOI_CORRUPT)

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, io] - logits[:, -1, s]

    n = model.dims.n_layers if model.dims else 0
    sites = [f"blocks.{layer}.resid_pre" for layer in range(n)]
    clean = model.run(clean_ids, save=sites)
    corrupt = model.run(corrupt_ids)
    console.print(
        f"IOI {IOI_CLEAN!r}: logit(' Mary') − logit(' John') = "
        f"[bold]{logit_diff(clean.logits).item():+.2f}[/bold]; with S2 swapped to Mary: "
        f"{logit_diff(corrupt.logits).item():+.2f}"
    )
    s2 = [i for i, t in enumerate(model.to_str_tokens(IOI_CLEAN)) if t == " John"][-1]
    # one row per layer: row L patches the clean resid_pre at S2 into the corrupted run
    rows = corrupt_ids.repeat(n, 1)
    ivs = [iv.patch(sites[layer], clean.cache, rows=[layer], positions=[s2]) for layer in range(n)]
    start = time.perf_counter()
    patched = model.run(rows, interventions=ivs)
    took = time.perf_counter() - start
    diffs = logit_diff(patched.logits)
    table = Table(title=f"patching clean resid_pre at S2 (position {s2}) into the corrupted run")
    table.add_column("layer", justify="right")
    table.add_column("logit diff", justify="right")
    table.add_column("")
    lo, hi = logit_diff(corrupt.logits).item(), logit_diff(clean.logits).item()
    for layer, d in enumerate(diffs.tolist()):
        frac = (d - lo) / (hi - lo) if hi != lo else 0.0
        table.add_row(str(layer), f"{d:+.2f}", "█" * max(0, round(20 * frac)))
    console.print(table)
    console.print(f"{n} experiments in one batched forward: {took:.2f} s")


def generation(model: Model, console: Console) -> None:
    """Generation with an intervention active: a crude steering example.

    Example: ``generation(mechscope.load(), Console())``, one step of `run_tour`.
    """
    prompt = "My favourite food is"
    plain = model.generate(prompt, max_new_tokens=12)
    love = model.run("Love", save=["blocks.6.resid_pre"]).cache["blocks.6.resid_pre"][0, -1]
    hate = model.run("Hate", save=["blocks.6.resid_pre"]).cache["blocks.6.resid_pre"][0, -1]
    steer = iv.add("blocks.6.resid_pre", 8 * (hate - love), positions=slice(0, 2))
    steered = model.generate(prompt, max_new_tokens=12, interventions=[steer])
    console.print(f"generate {prompt!r} → {plain!r}")
    console.print(
        f"  with 8×(Hate − Love) added at blocks.6.resid_pre, positions 0-1 → {steered!r}"
    )


def ioi_heatmap(model: Model, console: Console) -> None:
    """The IOI patching heatmaps: resid_pre by layer × position, and every head.

    Example: ``ioi_heatmap(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from .patching import activation_patching

    io, s = model.to_single_token(" Mary"), model.to_single_token(" John")

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, io] - logits[:, -1, s]

    start = time.perf_counter()
    resid = activation_patching(model, IOI_CLEAN, IOI_CORRUPT, metric, "resid_pre")
    heads = activation_patching(model, IOI_CLEAN, IOI_CORRUPT, metric, "attn.z", per_position=False)
    took = time.perf_counter() - start
    figures = OUT_DIR / "figures"
    resid.heatmap(
        figures / "ioi_resid_pre", title="IOI: restoring clean resid_pre (layer × position)"
    )
    heads.heatmap(
        figures / "ioi_heads", title="IOI: restoring one head's clean output (layer × head)"
    )
    resid.save(OUT_DIR / "ioi_resid_pre.safetensors")
    heads.save(OUT_DIR / "ioi_heads.safetensors")
    console.print(resid)
    console.print(heads)
    console.print(
        f"{resid.meta['patches'] + heads.meta['patches']} patches in {took:.1f} s; heatmaps (PNG, SVG, "
        f"HTML) in {figures}/ioi_resid_pre.* and ioi_heads.*"
    )
    table = Table(title="resid_pre restoration by position (normalised; 1 = clean)")
    table.add_column("layer", justify="right")
    keep = [
        i
        for i, label in enumerate(resid.labels["pos"])
        if any(n in label for n in ("Mary", "John"))
    ]
    keep.append(len(resid.labels["pos"]) - 1)
    for i in keep:
        table.add_column(resid.labels["pos"][i], justify="right")
    for layer in range(0, resid.values.shape[0], 3):
        table.add_row(str(layer), *(f"{resid.values[layer, i]:.2f}" for i in keep))
    console.print(table)


def neuroscope(model: Model, console: Console) -> None:
    """Harvest a small slice of the default corpus for every MLP neuron; show a neuron and a search.

    Example: ``neuroscope(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from rich.text import Text

    from .harvest import harvest

    out = OUT_DIR / "harvest"
    store = harvest(model, "default", out=out, tokens=TOUR_HARVEST_TOKENS, batch_size=32)
    run = store.run
    console.print(repr(store), highlight=False)
    console.print(
        f"{run['harvested_tokens'] / run['timings']['harvest']:,.0f} tokens/s; "
        f"tables written in {run['timings']['tables']:.1f} s"
    )
    site = f"blocks.{model.dims.n_layers // 2}.mlp.post" if model.dims else store.sites[0]
    best = store.top_units(site, by="max", limit=1)[0]
    page = store.unit(site, best.unit)
    console.print(
        f"{site} neuron {best.unit}: max {best.max:.2f}, mean {best.mean:.3f}, "
        f"active on {best.frac_active:.1%} of tokens; its top 3 windows around the peak:"
    )
    for ex in page.top[:3]:
        lo, hi = max(ex.max_pos - 8, 0), ex.max_pos + 4
        line = Text("  … ")
        for tok, act in zip(ex.tokens[lo:hi], ex.acts[lo:hi], strict=True):
            share = max(act, 0.0) / best.max if best.max > 0 else 0.0
            style = "bold black on yellow" if share > 0.5 else ("on #665500" if share > 0.2 else "")
            line.append(tok.replace("\n", "⏎"), style=style)
        line.append(f" …  ({ex.max_act:.2f})")
        console.print(line)
    card = store.figure(
        site, best.unit, OUT_DIR / "figures" / f"neuron_{site.replace('.', '_')}_{best.unit}"
    )
    console.print(f"its card (histogram and top examples): {card['png']} and .html")
    word = " she"
    hits = store.search_token(word)[:5]
    console.print(
        f"units whose top examples peak on {word!r}: "
        + ", ".join(f"{h.site.removesuffix('.mlp.post')}#{h.unit} ({h.count}×)" for h in hits)
    )
    console.print(f"browse every neuron: [bold]mechscope serve {OUT_DIR}[/bold]")


def autointerp(model: Model, console: Console) -> None:
    """Explain, simulate and score a few neurons of the tour's harvest with the model itself.

    Example: ``autointerp(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from .autointerp import LocalBackend, explain_units
    from .autointerp.pipeline import read_jsonl
    from .harvest import open_harvest

    store = open_harvest(OUT_DIR / "harvest")
    site = f"blocks.{model.dims.n_layers // 2}.mlp.post" if model.dims else store.sites[0]
    units = [(site, s.unit) for s in store.top_units(site, limit=TOUR_EXPLAIN_UNITS)]
    result = explain_units(
        store, units, explainer=LocalBackend(model), out=OUT_DIR / "explain", n_show=4, n_test=3
    )
    console.print(score_table(result.summary, f"{len(units)} neurons of {site}"))
    for r in read_jsonl(result.path / "explanations.jsonl"):
        if r["method"] == "llm":
            text = r["text"] if not r["failed"] else f"(failed: {r['error']})"
            console.print(f"  {r['site']} #{r['unit']}: {text!r}", highlight=False)
    console.print(
        "a 135M model explains and simulates poorly (scores near chance); "
        "use --explainer URL@MODEL with `mechscope explain` for a strong one"
    )


def toy_superposition(model: Model, console: Console) -> None:
    """Toy models of superposition: more features than dimensions once features are sparse.

    Example: ``toy_superposition(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from .sae.runs import toy_run
    from .sae.toy import features_represented

    results = toy_run(OUT_DIR / "toy", steps=2000)
    relu, linear = results["relu"], results["linear"]
    table = Table(
        title=f"{relu.n_features} features in m = {relu.d_hidden} dimensions (importance 0.7^i)"
    )
    table.add_column("1 − S (feature density)", justify="right")
    table.add_column("features represented, ReLU", justify="right")
    table.add_column("linear", justify="right")
    counts = features_represented(relu.W).tolist()
    lin = features_represented(linear.W).tolist()
    for density, a, b in zip((1 - s for s in relu.grid["sparsity"]), counts, lin, strict=True):
        table.add_row(f"{density:.3g}", str(a), str(b))
    console.print(table)
    console.print(f"figures (WᵀW, norms, phase diagram): {OUT_DIR / 'toy' / 'figures'}")


def sparse_autoencoder(model: Model, console: Console) -> None:
    """Train a TopK SAE on the middle residual stream; evaluate it; read its latents as a site.

    Example: ``sparse_autoencoder(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from .harvest import open_harvest
    from .sae.fit import fit_sae
    from .sae.train import TrainConfig

    layer = model.dims.n_layers // 2 if model.dims else 0
    site = f"blocks.{layer}.resid_post"
    config = TrainConfig(
        width=8 * (model.dims.d_model if model.dims else 64), k=32, tokens=TOUR_SAE_TOKENS
    )
    run = fit_sae(model, site, config, out=OUT_DIR / "sae", eval_tokens=8192, harvest_tokens=16_384)
    console.print(
        f"{run.sae!r} trained on {TOUR_SAE_TOKENS:,} tokens in {run.history[-1]['tokens'] / run.history[-1]['tokens_per_s']:.0f} s"
    )
    assert run.eval is not None
    console.print(run.eval)
    store = open_harvest(run.path / "harvest")
    prompt = PROMPTS[1]
    with model.attach(run.sae) as sae_sites:
        latents = model.run(prompt, save=[sae_sites.latents]).cache[sae_sites.latents][0, -1]
        top = latents.topk(5)
        console.print(
            f"latents active on the last token of {prompt!r}, with their top harvested context:"
        )
        for value, unit in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            ex = store.unit(sae_sites.latents, unit).top[0]
            context = "".join(ex.tokens[max(ex.max_pos - 6, 0) : ex.max_pos + 1]).replace("\n", "⏎")
            console.print(f"  #{unit:<5} {value:6.2f}   … {context!r}", highlight=False)
        base = model.run(prompt).logits[0, -1].softmax(-1)
        ablated = model.run(
            prompt,
            interventions=[
                iv.zero_ablate(sae_sites.latents, positions=[-1], neurons=top.indices.tolist())
            ],
        )
        paris = model.to_single_token(" Paris")
        console.print(
            f"zero-ablating those 5 latents at the last position (error term kept): "
            f"P(' Paris') {base[paris]:.3f} → {ablated.logits[0, -1].softmax(-1)[paris]:.3f}"
        )
    console.print(f"latent pages: [bold]mechscope serve {run.path}[/bold]")


def tracing_and_rome(model: Model, console: Console) -> None:
    """Causal tracing of one fact and a small average; a ROME edit, evaluated, then undone.

    Example: ``tracing_and_rome(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from .tracing import Fact, geography_facts, known_facts
    from .tracing.facts import sample_facts
    from .tracing.rome import _down, default_layer
    from .tracing.runs import edit_run, trace_run

    fact = Fact("The Eiffel Tower", "{} is located in the city of", "Paris")
    trace = trace_run(model, fact, OUT_DIR / "trace-eiffel", samples=10, progress=False)
    console.print(trace)
    capitals = [k.fact for k in known_facts(model, geography_facts("country_capital", limit=80))]
    few = sample_facts(capitals, TOUR_TRACE_FACTS, seed=1)
    avg = trace_run(model, few, OUT_DIR / "trace-capitals", samples=3)
    console.print(avg)
    console.print("(the 60-fact average: mechscope trace --facts "
                  "country_capital,city_country,country_continent)")  # fmt: skip
    target, new = capitals[TOUR_EDIT_FACT], capitals[TOUR_EDIT_FACT + 1].object
    neighbours = [f for f in capitals if f.subject != target.subject][:20]
    layer = default_layer(model)
    weight = _down(model, layer).weight.detach().clone()
    report, _ = edit_run(model, target, new, neighbours, OUT_DIR / "edit", layer=layer)
    console.print(repr(report), highlight=False)
    s = report.scores()
    console.print(
        f"efficacy {s['efficacy_before']:.0%} → {s['efficacy']:.0%}, paraphrases "
        f"{s['paraphrase_before']:.0%} → {s['paraphrase']:.0%}, neighbourhood "
        f"{s['neighbourhood_before']:.0%} → {s['neighbourhood']:.0%}",
        highlight=False,
    )
    for p, b, a in zip(report.prompts["generation"], report.generations_before,
                       report.generations_after, strict=True):  # fmt: skip
        console.print(f"  {p!r}\n    before: {b.strip()[:90]!r}\n    after:  {a.strip()[:90]!r}",
                      highlight=False)  # fmt: skip
    same = torch.equal(_down(model, layer).weight, weight)
    console.print(f"edit undone; weights restored bit for bit: {same}")
    console.print(f"pages: [bold]mechscope serve {OUT_DIR}[/bold]")


def probes_and_steering(model: Model, console: Console) -> None:
    """CCS against supervised probes and zero-shot on tweets; one vector steering generation.

    Example: ``probes_and_steering(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from . import steering as st
    from .probes import sentiment_pairs
    from .probes.runs import probe_run
    from .steering.runs import steer_examples, steer_run

    assert model.dims is not None
    pairs = sentiment_pairs(limit=TOUR_PROBE_PAIRS)
    console.print(f"{len(pairs)} crowd-labelled tweets, each asked 'negative or positive?' and "
                  "answered both ways; probes read the last token's residual stream")  # fmt: skip
    res = probe_run(model, pairs, OUT_DIR / "probe-sentiment", dataset="sentiment", test=400,
                    layers=range(0, model.dims.n_layers, 3), restarts=5, epochs=500)  # fmt: skip
    console.print(res)
    vector = st.actadd(model, *TOUR_STEER, TOUR_STEER_LAYER)
    console.print(f"activation addition {TOUR_STEER[0]!r} − {TOUR_STEER[1]!r}: {vector!r}",
                  highlight=False)  # fmt: skip
    prompts = list(st.PROMPTS[:3])
    examples = steer_examples(model, prompts, vector, TOUR_STEER_COEF, max_new_tokens=30)
    table = Table(title=f"greedy, unsteered and steered (coef {TOUR_STEER_COEF:g})",
                  show_lines=True)  # fmt: skip
    for col in ("prompt", "unsteered", "steered"):
        table.add_column(col)
    for ex in examples:
        table.add_row(ex["prompt"], ex["unsteered"].strip(), ex["steered"].strip())
    console.print(table)
    sweep = steer_run(model, [vector, st.actadd(model, *TOUR_STEER, 2)], [0.5, 1.0, 2.0],
                      OUT_DIR / "steer-weddings", samples=2, progress=False)  # fmt: skip
    console.print(sweep)
    console.print(f"pages: [bold]mechscope serve {OUT_DIR}[/bold]")


def feature_visualisation(model: Model, console: Console) -> None:
    """Channel visualisations early → late and a 0/4/48/2048 strip on EfficientNet-Lite0, a weight
    circuit with its channels drawn beside it; OV/QK and virtual weights, and GCG prompts, on the LM.

    Example: ``feature_visualisation(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from .harvest import open_harvest
    from .prompts import prompts_run, sample_units
    from .vision import load_vision
    from .vision.runs import viz_run
    from .weights import conv_weights_run, lm_weights_run

    vision = load_vision("efficientnet-lite0")
    sites = [f"net._blocks.{b}" for b in TOUR_VIZ_BLOCKS]
    t0 = time.perf_counter()
    viz_run(vision, sites, [0, 1, 2, 3], OUT_DIR / "viz-layers", size=96, steps=TOUR_VIZ_STEPS,
            thresholds=(), progress=False)  # fmt: skip
    console.print(f"{vision.name}: channels 0–3 of blocks {', '.join(map(str, TOUR_VIZ_BLOCKS))} "
                  f"({TOUR_VIZ_STEPS} steps, 96 px) in {time.perf_counter() - t0:.0f} s: "
                  f"{OUT_DIR / 'viz-layers' / 'figures' / 'grid.png'}")  # fmt: skip
    t0 = time.perf_counter()
    (strip,) = viz_run(vision, "net._blocks.12", [5], OUT_DIR / "viz-strip", size=128, steps=2048,
                       thresholds=(0, 4, 48), progress=False)  # fmt: skip
    console.print(f"the 0/4/48/2048 strip of net._blocks.12 channel 5 in {time.perf_counter() - t0:.0f} s: "
                  f"objective {-strip.losses[0]:.2f} → {-strip.losses[-1]:.2f}; "
                  f"{OUT_DIR / 'viz-strip' / 'figures' / 'strip.png'}")  # fmt: skip
    src, dst, unit = TOUR_WEIGHTS
    weights = conv_weights_run(vision, src, dst, unit, OUT_DIR / "weights-conv", viz_steps=TOUR_VIZ_STEPS,
                               progress=False)  # fmt: skip
    console.print(weights.render(4))
    console.print(f"the circuit figure: {OUT_DIR / 'weights-conv' / 'figures' / 'circuit.png'}")
    heads, neurons = TOUR_LM_WEIGHTS["heads"], TOUR_LM_WEIGHTS["neurons"]
    summary = lm_weights_run(model, OUT_DIR / "weights-lm", heads=heads, neurons=neurons)
    console.print(lm_weights(summary, OUT_DIR / "weights-lm", neurons, 5))
    store = open_harvest(OUT_DIR / "harvest")
    units = (
        sample_units(store, [f"blocks.{model.dims.n_layers // 3}.mlp.post"], TOUR_PROMPT_UNITS)
        if model.dims
        else []
    )
    rows = prompts_run(model, units, store, OUT_DIR / "prompts", start="top", length=10,
                       steps=TOUR_PROMPT_STEPS, soft_steps=50, progress=False)  # fmt: skip
    console.print(prompt_table(rows))
    console.print(f"pages: [bold]mechscope serve {OUT_DIR}[/bold]")


def maze_agent(model: Model, console: Console) -> None:
    """Shard theory's maze agent: train, watch it misgeneralise, steer and retarget it.

    Example: ``maze_agent(mechscope.load(), Console())``, one step of `run_tour`.
    """
    import json

    from .maze import eval_run, steer_run, train_run

    train = OUT_DIR / "maze-train"
    train_run(train, steps=TOUR_MAZE_STEPS, progress=False)
    console.print(json.loads((train / "run.json").read_text())["summary"], highlight=False)
    eval_run(train, OUT_DIR / "maze-eval", n=TOUR_MAZE_EVAL, progress=False)
    console.print(
        maze_behaviour(json.loads((OUT_DIR / "maze-eval" / "behaviour.json").read_text()))
    )
    console.print(
        maze_steering(steer_run(train, OUT_DIR / "maze-steer", n=TOUR_MAZE_STEER, progress=False))
    )
    console.print(f"vector fields before and after: [bold]mechscope serve {OUT_DIR}[/bold]")


def _reload_spec(model: Model) -> str:
    """What to load the tour's model again from: its built-in name, else its source."""
    from .core.loading import BUILTIN_MODELS

    return model.name if model.name in BUILTIN_MODELS else str(model.source or model.name)


def precision_and_dispatch(model: Model, console: Console) -> None:
    """The same calls in bfloat16, and on a copy with the upper half of its blocks on disk.

    Example: ``precision_and_dispatch(mechscope.load(), Console())``, one step of `run_tour`.
    """
    if model.adapter is None or model.dims is None:
        return
    spec, n = _reload_spec(model), model.dims.n_layers
    ids = model.to_tokens(IOI_CLEAN)
    io, s = model.to_single_token(" Mary"), model.to_single_token(" John")
    table = Table(title="one prompt, three placements (IOI logit difference at the end)")
    for column in ("model", "dtype", "placement", "logits = plain HF", "logit(Mary) − logit(John)"):
        table.add_column(column)

    def row(m: Model, placement: str) -> Tensor:
        out = m.run(ids, save=["blocks.*.resid_pre"])
        with torch.no_grad():
            same = str(torch.equal(out.logits, m.hf(ids).logits))
        diff = float(out.logits[0, -1, io] - out.logits[0, -1, s])
        table.add_row(m.name, str(m.dtype).removeprefix("torch."), placement, same, f"{diff:+.3f}")
        return out.logits

    reference = row(model, str(model.device))
    row(load(spec, dtype="bfloat16"), "cpu")
    layers = model.adapter.layers
    dmap: dict[str, str] = {
        name: "cpu" for name, _ in model.hf.named_children() if name != layers.split(".")[0]
    }
    top = layers.split(".")[0]
    dmap.update(
        {f"{top}.{name}": "cpu" for name, _ in model.hf.get_submodule(top).named_children()}
    )
    del dmap[layers]
    dmap.update({f"{layers}.{i}": "cpu" if i < n // 2 else "disk" for i in range(n)})
    spread = load(spec, device_map=dmap, offload_folder=OUT_DIR / "offload")
    got = row(spread, f"blocks {n // 2}–{n - 1} on disk")
    console.print(table)
    console.print(
        f"dispatched over CPU and disk, the logits equal the model's: {torch.equal(got, reference)} "
        "(accelerate's own hooks; sites, interventions and gradients the same)"
    )


SECTIONS: list[tuple[str, Callable[[Model, Console], None]]] = [
    ("Next tokens", next_tokens),
    ("Sites and the cache", cache_shapes),
    ("Interventions: IOI and per-row patching", ioi_patching),
    ("Circuits: IOI patching heatmaps", ioi_heatmap),
    ("Generation with interventions", generation),
    ("Neuroscope: top-activating examples of every MLP neuron", neuroscope),
    ("Automated explanations: explain, simulate, score", autointerp),
    ("Superposition: toy models", toy_superposition),
    ("Sparse autoencoder on the residual stream", sparse_autoencoder),
    ("Causal tracing and ROME: where a fact lives, and rewriting it", tracing_and_rome),
    ("Latent knowledge and steering: CCS, probes, activation addition", probes_and_steering),
    ("Feature visualisation and circuits in the weights", feature_visualisation),
    ("Shard theory's maze agent: misgeneralisation, the cheese vector, retargeting", maze_agent),
    ("Scale: bfloat16, and a model spread over the CPU and the disk", precision_and_dispatch),
]


def run_tour(spec: str, console: Console, **placement: Any) -> None:
    """Load `spec` (placed by `placement`: device, dtype, device_map) and run every section.

    Example: ``run_tour("smollm2-135m", Console())`` (what ``mechscope tour`` runs).
    """
    start = time.perf_counter()
    model = load(spec, **placement)
    console.print(f"[bold]{model!r}[/bold] loaded in {time.perf_counter() - start:.1f} s")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for title, section in SECTIONS:
        console.rule(title)
        section(model, console)
    console.rule()
    console.print(f"tour done in {time.perf_counter() - start:.1f} s; outputs in {OUT_DIR}/")
