"""The tour's sections on features: Neuroscope harvesting, automated explanations, superposition, SAEs.

The harvest the first section writes under ``runs/tour/harvest`` is what the
explanations (and, later, the prompt search) read.

Example::

    from rich.console import Console
    from mechscope.tour.features import neuroscope
    neuroscope(mechscope.load(), Console())   # harvest 16,384 tokens; show a neuron and a search
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .. import Model
from ..core import interventions as iv
from ..display import score_table
from .settings import OUT_DIR, PROMPTS, TOUR_EXPLAIN_UNITS, TOUR_HARVEST_TOKENS, TOUR_SAE_TOKENS


def neuroscope(model: Model, console: Console) -> None:
    """Harvest a small slice of the default corpus for every MLP neuron; show a neuron and a search.

    Example: ``neuroscope(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from rich.text import Text

    from ..harvest import harvest

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
    name = f"neuron_{site.replace('.', '_')}_{best.unit}"
    card = store.figure(site, best.unit, OUT_DIR / "figures" / name)[name]
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
    from ..autointerp import LocalBackend, explain_run
    from ..autointerp.results import ExplainRun
    from ..harvest import open_harvest

    store = open_harvest(OUT_DIR / "harvest")
    site = f"blocks.{model.dims.n_layers // 2}.mlp.post" if model.dims else store.sites[0]
    units = [(site, s.unit) for s in store.top_units(site, limit=TOUR_EXPLAIN_UNITS)]
    result = explain_run(
        store, units, explainer=LocalBackend(model), out=OUT_DIR / "explain", n_show=4, n_test=3
    )
    console.print(score_table(result.summary.records(), f"{len(units)} neurons of {site}"))
    run = ExplainRun.open(result.path)
    for r in (run.explanation(u, "llm") for u in run.units):
        if r is not None:
            text = r.text if not r.failed else f"(failed: {r.error})"
            console.print(f"  {r.site} #{r.unit}: {text!r}", highlight=False)
    console.print(
        "a 135M model explains and simulates poorly (scores near chance); "
        "use --explainer URL@MODEL with `mechscope explain` for a strong one"
    )


def toy_superposition(model: Model, console: Console) -> None:
    """Toy models of superposition: more features than dimensions once features are sparse.

    Example: ``toy_superposition(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from ..sae.runs import toy_run
    from ..sae.toy import features_represented

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
    from ..harvest import open_harvest
    from ..sae.fit import sae_run
    from ..sae.train import TrainConfig

    layer = model.dims.n_layers // 2 if model.dims else 0
    site = f"blocks.{layer}.resid_post"
    config = TrainConfig(
        width=8 * (model.dims.d_model if model.dims else 64), k=32, tokens=TOUR_SAE_TOKENS
    )
    run = sae_run(model, site, config, out=OUT_DIR / "sae", eval_tokens=8192, harvest_tokens=16_384)
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
