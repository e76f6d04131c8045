"""One SAE run on a model: stream a site's activations, train, evaluate, write a run folder.

The first `eval_tokens` corpus tokens are held out (periodic FVU and L0, and
the final evaluation with CE loss recovered); training reads the windows
after them through a shuffling buffer, or a folder written by
`store_activations`. The run folder holds ``sae/`` (weights and config),
``checkpoints/`` (the SAE every `checkpoint_every` steps),
``history.safetensors`` (the `TrainingHistory`), ``eval.safetensors`` (the
`SAEEval`: metrics and each latent's firing frequency; a copy of the metrics
is in ``run.json``) and the figures (training curves, latent density), and is
served by ``mechscope serve``. A killed run started again with the same
arguments resumes from its last checkpoint (the training state, kept in the
unfinished folder until the run finishes) and ends as the uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import figures
from ..core.activations import ShuffleBuffer, activations_meta, load_activations, stream_activations
from ..core.model import Model
from ..core.placement import memory_room
from ..corpus import Corpus, open_corpus
from ..errors import InputError
from ..store import model_record, new_run
from .evaluate import SAEEval, evaluate_sae
from .model import SparseAutoencoder
from .results import EVAL_FILE, HISTORY_FILE, TrainingHistory
from .train import TrainConfig, TrainedSAE, config_dict, train_sae

TRAIN_STATE_FILE = "train_state.safetensors"


@dataclass(frozen=True)
class SAERun:
    """A finished SAE run folder, reopened: the SAE, its evaluation and training history.

    Example: ``open_sae_run("runs/sae").sae`` → the trained `SparseAutoencoder`.
    """

    path: Path
    sae: SparseAutoencoder
    eval: SAEEval | None
    history: list[dict[str, float]]
    config: dict[str, Any]

    def __repr__(self) -> str:
        return f"SAERun({self.path}: {self.sae!r}, {self.eval!r})"


def open_sae_run(path: str | Path) -> SAERun:
    """Reopen a folder written by `sae_run`.

    Example::

        run = open_sae_run("runs/sae")
        run.eval.ce_recovered, run.history[-1]["eval_fvu"]
    """
    path = Path(path)
    if not (path / "sae").is_dir():
        raise InputError(f"{path} is not an SAE run folder (no sae/ inside)")
    ev = SAEEval.load(path / EVAL_FILE) if (path / EVAL_FILE).exists() else None
    history = (
        TrainingHistory.load(path / HISTORY_FILE).rows if (path / HISTORY_FILE).exists() else []
    )
    config = json.loads((path / "config.json").read_text())
    return SAERun(path, SparseAutoencoder.load(path / "sae"), ev, history, config)


def _repeat(acts: Tensor, batch: int, seed: int) -> Iterator[Tensor]:
    """Batches of stored activations, reshuffled on each pass."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=g)
        for i in range(0, len(acts) - batch + 1, batch):
            yield acts[order[i : i + batch]]


def sae_run(
    model: Model,
    site: str,
    config: TrainConfig,
    *,
    out: str | Path,
    corpus: Corpus | str = "default",
    activations: str | Path | None = None,
    eval_tokens: int = 16_384,
    window: int = 64,
    buffer_tokens: int = 1 << 17,
    harvest_tokens: int = 0,
    progress: bool = True,
) -> SAERun:
    """Train an SAE on `site` of `model`, evaluate it on held-out tokens, write the run to `out`.

    `activations` trains on a folder from `store_activations` (recorded from the
    same site) instead of streaming from the model. With `harvest_tokens`,
    the latents are harvested over that many held-out corpus tokens into
    ``harvest/`` (top examples per latent: the viewer's latent pages).

    Example::

        run = sae_run(model, "blocks.15.resid_post", TrainConfig(width=4608, k=32), out="runs/sae")
        run.eval.ce_recovered
    """
    if eval_tokens < 1:
        raise InputError(f"eval_tokens must be at least 1 (the held-out tokens), got {eval_tokens}")
    if harvest_tokens < 0:
        raise InputError(f"harvest_tokens must be >= 0 (0: no harvest), got {harvest_tokens}")
    info = model.table[site]
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    held_out_windows = max(1, eval_tokens // window)
    record: dict[str, Any] = {
        "model": model_record(model),
        "site": site,
        "site_doc": info.doc,
        "corpus": corpus.record(),
        "window": window,
        "eval_tokens": eval_tokens,
        "held_out_windows": [0, held_out_windows],
        "buffer_tokens": buffer_tokens,
        "train": config_dict(config),
    }
    batches: Iterable[Tensor]
    if activations is not None:
        meta = activations_meta(activations)
        if meta["site"] != site:
            raise InputError(f"{activations} holds {meta['site']!r}, not {site!r}")
        record["activations"] = {"folder": str(activations), **meta}
        batches = _repeat(load_activations(activations), config.batch_size, config.seed)
    else:
        chunks = stream_activations(
            model, site, corpus, window=window, start_window=held_out_windows
        )
        batches = ShuffleBuffer(chunks, buffer_tokens, config.batch_size, seed=config.seed)
    run = new_run("sae", out, record, resume=True)
    with run:
        started = time.perf_counter()
        held = torch.cat(
            list(stream_activations(model, site, corpus, tokens=eval_tokens, window=window))
        )
        d_in = held.shape[1]
        _check_memory(config.width, d_in, torch.device(model.device))

        def checkpoint(sae: SparseAutoencoder, step: int) -> None:
            sae.save(run.dir / "checkpoints" / f"step-{step:06d}")

        trained = train_sae(
            batches,
            config,
            d_in=d_in,
            eval_batch=held,
            on_checkpoint=checkpoint,
            state_file=run.dir / TRAIN_STATE_FILE,
            site=site,
            model_name=model.name,
            device=model.device,
            progress=progress,
        )
        run.timed("train", started)
        trained.sae.save(run.dir / "sae")
        TrainingHistory(trained.history).save(run.dir / HISTORY_FILE)
        t0 = time.perf_counter()
        ev = evaluate_sae(
            model, trained.sae, corpus, tokens=eval_tokens, window=window, progress=progress
        )
        run.timed("evaluate", t0)
        ev.save(run.dir / EVAL_FILE)
        _figures(trained, ev, run.figures)
        if harvest_tokens:
            t0 = time.perf_counter()
            harvest_latents(model, trained.sae, run.dir / "harvest", corpus, tokens=harvest_tokens,
                            window=window, progress=progress)  # fmt: skip
            run.timed("harvest", t0)
        run.extra.update(
            {
                "eval": ev.metrics(),
                "scale": trained.scale,
                "train_seconds": trained.seconds,
                "resumed_from_step": trained.started_at_step or None,
            }
        )
        (run.dir / TRAIN_STATE_FILE).unlink()  # Adam's moments: twice the SAE, not kept
        path = run.finish()
    return open_sae_run(path)


def _check_memory(width: int, d_in: int, device: torch.device) -> None:
    """Refuse a width whose SAE cannot be held where it trains (float32 weights, their gradients
    and Adam's two moments: four copies of W_enc and W_dec) before it is allocated."""
    need = 4 * 4 * 2 * width * d_in
    room = memory_room(device)
    if room is None:  # not known here: no guard
        return
    if need > room:
        raise InputError(
            f"width {width} needs {need / 2**30:,.1f} GiB to train on {device} ({d_in} inputs), "
            f"more than its {room / 2**30:,.1f} GiB; give a smaller width"
        )


def harvest_latents(
    model: Model,
    sae: SparseAutoencoder,
    out: str | Path,
    corpus: Corpus | str = "default",
    *,
    tokens: int = 65_536,
    window: int = 64,
    progress: bool = True,
) -> Any:
    """Harvest every latent of `sae` (attached at its site) over `tokens` corpus tokens into `out`.

    Latents read zero at each window's first token (the document boundary the
    SAE was not trained on, whose huge norm would top every latent's list).

    Example: ``harvest_latents(model, run.sae, "runs/sae/harvest").sites`` →
    ``["blocks.15.resid_post.sae.latents"]`` (a `HarvestStore`).
    """
    from ..harvest import harvest

    with model.attach(_FirstTokenSkipped(sae), site=sae.cfg.site) as sites:
        return harvest(model, corpus, out=out, sites=[sites.latents], tokens=tokens, window=window,
                       progress=progress, keep_state=False)  # fmt: skip


class _FirstTokenSkipped:
    """`sae` with its latents zeroed at position 0 of [batch, pos, d] inputs (for harvests)."""

    def __init__(self, sae: SparseAutoencoder) -> None:
        self.sae, self.width = sae, sae.cfg.width

    def encode(self, x: Tensor) -> Tensor:
        f = self.sae.encode(x)
        if f.ndim == 3:
            f[:, 0] = 0
        return f

    def decode(self, f: Tensor) -> Tensor:
        return self.sae.decode(f)


def _figures(trained: TrainedSAE, ev: SAEEval, folder: Path) -> None:
    rows = [r for r in trained.history if "tokens" in r]
    labels = [f"{int(r['tokens']):,}" for r in rows]
    figures.line(
        {"held-out FVU": [r.get("eval_fvu", float("nan")) for r in rows]},
        folder / "fvu",
        title="Fraction of variance unexplained (held-out)",
        x_labels=labels,
        x_title="training tokens",
    )
    figures.line(
        {"L0": [r.get("eval_l0", float("nan")) for r in rows]},
        folder / "l0",
        title="Active latents per token (held-out)",
        x_labels=labels,
        x_title="training tokens",
    )
    figures.line(
        {"dead fraction": [r["dead"] for r in rows]},
        folder / "dead",
        title="Dead latents (no activation in the last dead_after_tokens)",
        x_labels=labels,
        x_title="training tokens",
    )
    live = ev.frequencies[ev.frequencies > 0].log10()
    edges = torch.linspace(-6, 0, 31)
    counts = torch.histc(live.clamp(-6, 0), bins=30, min=-6, max=0)
    figures.line(
        {f"latents ({int((ev.frequencies == 0).sum())} dead not shown)": counts},
        folder / "latent_density",
        title="Latent firing frequency (held-out tokens)",
        x_labels=[f"{float(e):.1f}" for e in edges[:-1]],
        x_title="log10 frequency",
        y_title="latents",
    )
