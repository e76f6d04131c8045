"""The tour's sections on the core: next tokens, sites and the cache, interventions, patching.

Also generation with an intervention active, and the last section: the
same calls in bfloat16 and on a copy spread over the CPU and the disk.

Example::

    from rich.console import Console
    from mechscope.tour.basics import ioi_patching
    ioi_patching(mechscope.load(), Console())   # one batched forward, a patch per layer
"""

from __future__ import annotations

import time

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from .. import Model, load
from ..core import interventions as iv
from ..display import top_tokens
from .settings import IOI_CLEAN, IOI_CORRUPT, OUT_DIR, PROMPTS


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
    from ..patching import activation_patching

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


def _reload_spec(model: Model) -> str:
    """What to load the tour's model again from: its built-in name, else its source."""
    from ..core.loading import BUILTIN_MODELS

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
