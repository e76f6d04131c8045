"""Training the transcoders of many layers at once, from one streamed forward per step.

Each step runs the model once over `batch_size // window` corpus windows
(stopping after the last chosen MLP), saves every chosen layer's MLP input
and output in that forward, and takes one Adam step for every layer's
transcoder on those positions (window-first and separator tokens left out,
as for SAEs). Each layer's loss is the fraction of variance of its MLP output
left unexplained on the batch,

    FVU = Σ‖y − ŷ‖² / Σ‖y − ȳ‖²

plus ``aux_coef`` × the AuxK loss of dead latents (TopK; Gao et al. 2024) or
``l0_coef`` × L0 through straight-through pseudo-derivatives (JumpReLU;
Rajamanoharan et al. 2024). Inputs and outputs are divided by one scale per
layer and side (so that E‖x‖² = d_in, E‖y‖² = d_out; folded back into the
weights at the end). The schedules, the decoder-norm constraint, the
learning rate and the JumpReLU kernels are `mechscope.sae.train`'s.

With a run folder (`out`), the whole state is checkpointed every
`checkpoint_every` steps and the run resumes from it, reading the corpus from
where it stopped: a killed run ends as the uninterrupted one, bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.interventions import stop
from ..core.model import Model
from ..core.placement import memory_room
from ..corpus import Corpus, boundary_tokens, open_corpus, window_batches
from ..sae.results import HISTORY_FILE, TrainingHistory
from ..sae.train import TrainConfig, config_dict
from ..store import model_record, new_run
from .checkpoint import TrainState, checkpoint_step, restore_state, save_state
from .evaluate import evaluate_transcoders
from .losses import fvu, resample_dead, transcoder_loss
from .model import TranscoderError, TranscoderSet, check_layers, mlp_sites, sae_checks
from .results import EVAL_FILE, TABLE_FILE, TranscoderEval

TRAIN_STATE_FILE = "train_state.safetensors"


@dataclass(frozen=True)
class TranscoderTrainConfig(TrainConfig):
    """`TrainConfig` for transcoders: `batch_size` tokens per step read as whole windows.

    ``kind`` is topk or jumprelu; ``l0_coef`` weighs L0 against the FVU (not against a
    summed squared error as for SAEs, hence its smaller default); ``skip`` adds the
    linear skip connection; ``checkpoint_every`` defaults to 100 steps.

    Example: ``TranscoderTrainConfig(width=4608, k=32, tokens=2_000_000, skip=True).steps``
    → 976 (2,048 tokens = 32 windows of 64 per step).
    """

    l0_coef: float = 2e-3
    checkpoint_every: int | None = 100
    skip: bool = False
    window: int = 64

    def __post_init__(self) -> None:
        sae_checks(self.kind, super().__post_init__)
        if self.window < 2 or self.batch_size % self.window:
            raise TranscoderError(
                f"batch_size ({self.batch_size}) must be a whole number of windows of "
                f"{self.window} tokens (window ≥ 2)"
            )
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise TranscoderError(f"width must be a positive integer, got {self.width!r}")
        if self.kind == "topk" and not 1 <= self.k <= self.width:
            raise TranscoderError(f"k must be in 1..width={self.width}, got {self.k}")
        # each layer's generators are seeded seed + 1000 · layer + step: keep that in torch's range
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or abs(self.seed) > 2**62:
            raise TranscoderError(f"seed must be an integer in -2**62..2**62, got {self.seed!r}")

    @property
    def windows_per_step(self) -> int:
        return self.batch_size // self.window


@dataclass(frozen=True)
class TrainedTranscoders:
    """What `train_transcoders` returns: the set (reading raw activations) and how it went.

    ``finished`` is False for a run paused by `max_steps` (its folder is then kept, to be
    resumed); ``eval`` and ``path`` are set for a finished run with held-out tokens / a folder.

    Example: ``train_transcoders(model, config=cfg).transcoders[3]`` → a `Transcoder`.
    """

    transcoders: TranscoderSet
    config: TranscoderTrainConfig
    history: list[dict[str, float]]
    steps: int
    finished: bool
    scales: dict[int, tuple[float, float]]  # layer → (input scale, output scale)
    seconds: float = 0.0
    eval: TranscoderEval | None = None
    path: Path | None = None

    def __repr__(self) -> str:
        rows = [r for r in self.history if "step" in r]
        last = rows[-1] if rows else {}
        shown = ", ".join(
            f"{k}={last[k]:.3g}" for k in ("eval_fvu", "eval_l0", "dead") if k in last
        )
        state = "" if self.finished else ", paused"
        return f"TrainedTranscoders({self.transcoders!r}, {self.steps} steps{state}, {shown})"


class _Paused(Exception):  # noqa: N818 (a control signal: leave the run folder to be resumed)
    pass


def train_transcoders(
    model: Model,
    corpus: Corpus | str = "default",
    *,
    layers: Sequence[int] | None = None,
    config: TranscoderTrainConfig | None = None,
    out: str | Path | None = None,
    eval_tokens: int = 16_384,
    max_steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    finish_early: bool = False,
) -> TrainedTranscoders:
    """Train one transcoder per layer of `layers` (None: all) on `corpus`, all in one stream.

    The first `eval_tokens` corpus tokens are held out: one batch of them is scored
    every `eval_every` steps (FVU, L0 per layer, in the history) and all of them by
    `evaluate_transcoders` at the end. With `out`, the run is a folder
    (``transcoders/``, ``eval.safetensors``, ``layers.parquet``,
    ``history.safetensors``) that checkpoints and resumes. `max_steps` pauses after that
    many steps (a folder is kept to be resumed by the same call without it), or with
    `finish_early` ends the run there: the set as it is after `max_steps` steps is
    saved and evaluated (the history records where it stopped); `on_step(steps_done)`
    is called after every step.

    Example::

        cfg = TranscoderTrainConfig(width=4608, k=32, tokens=2_000_000)
        trained = train_transcoders(model, layers=range(30), config=cfg, out="runs/tc")
        trained.eval.ce_recovered
    """
    config = config or TranscoderTrainConfig()
    if not isinstance(config, TranscoderTrainConfig):
        raise TranscoderError(
            f"config must be a TranscoderTrainConfig, got {type(config).__name__}"
        )
    layers = check_layers(model, layers)
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    if isinstance(eval_tokens, bool) or not isinstance(eval_tokens, int) or eval_tokens < 0:
        raise TranscoderError(f"eval_tokens must be an integer ≥ 0, got {eval_tokens!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 0):  # fmt: skip
        raise TranscoderError(f"max_steps must be an integer ≥ 0 or None, got {max_steps!r}")
    if model.context is not None and config.window > model.context:
        raise TranscoderError(
            f"window={config.window} is longer than {model.name}'s context of "
            f"{model.context} tokens; give a window of at most {model.context}"
        )
    _check_memory(model, config, len(layers))
    held = eval_tokens // config.window
    if finish_early and max_steps is None:
        raise TranscoderError("finish_early needs max_steps: the step to end the run at")
    go = _Training(model, corpus, layers, config, held, max_steps, on_step, progress)
    go.finish_early = finish_early
    if out is None:
        trained = go.run(None)
        return (
            dataclasses.replace(trained, eval=go.evaluate(trained)) if trained.finished else trained
        )
    record = {
        "model": model_record(model),
        "layers": layers,
        "sites": {str(layer): list(mlp_sites(model, layer)) for layer in layers},
        "corpus": corpus.record(),
        "eval_tokens": eval_tokens,
        "held_out_windows": [0, held],
        "train": config_dict(config),
    }
    run = new_run("transcoders", out, record, resume=True)
    try:
        with run:
            state_file = run.dir / TRAIN_STATE_FILE
            resumed_from = checkpoint_step(state_file) if run.resumed else None
            t0 = time.perf_counter()
            trained = go.run(state_file)
            if not trained.finished:
                raise _Paused
            run.timed("train", t0)
            trained.transcoders.save(run.dir / "transcoders")
            TrainingHistory(trained.history).save(run.dir / HISTORY_FILE)
            t0 = time.perf_counter()
            ev = go.evaluate(trained)
            run.timed("evaluate", t0)
            if ev is not None:
                ev.save(run.dir / EVAL_FILE)
                ev.write_table(run.dir / TABLE_FILE)
            run.extra.update({
                "eval": ev.metrics() if ev else None,
                "scales": {str(k): list(v) for k, v in trained.scales.items()},
                "train_seconds": trained.seconds,
                "resumed_from_step": resumed_from,
            })  # fmt: skip
            state_file.unlink()  # Adam's moments: twice the transcoders, not kept
            path = run.finish()
    except _Paused:
        return trained
    return dataclasses.replace(trained, eval=ev, path=path)


@dataclass(frozen=True)
class TranscoderRun:
    """A finished transcoder run folder, reopened.

    Example: ``open_transcoder_run("runs/tc").eval.rows()``.
    """

    path: Path
    transcoders: TranscoderSet
    eval: TranscoderEval | None
    history: list[dict[str, float]]
    config: dict[str, Any]

    def __repr__(self) -> str:
        return f"TranscoderRun({self.path}: {self.transcoders!r})"


def open_transcoder_run(path: str | Path, *, model: Model | None = None) -> TranscoderRun:
    """Reopen a folder written by `train_transcoders` (with `model`: checked against it).

    Example: ``open_transcoder_run("runs/tc", model=model).transcoders.layers``.
    """
    path = Path(path)
    if not (path / "transcoders").is_dir() or not (path / "config.json").is_file():
        raise TranscoderError(f"{path} is not a transcoder run folder (no transcoders/ inside)")
    ev = TranscoderEval.load(path / EVAL_FILE) if (path / EVAL_FILE).exists() else None
    history = (
        TrainingHistory.load(path / HISTORY_FILE).rows if (path / HISTORY_FILE).exists() else []
    )
    config = json.loads((path / "config.json").read_text())
    tcs = TranscoderSet.load(path / "transcoders", model=model)
    return TranscoderRun(path, tcs, ev, history, config)


# --- the loop ----------------------------------------------------------------------------


class _Training:
    """One run's fixed parts (model, corpus, sites) and, while it runs, its state."""

    def __init__(
        self,
        model: Model,
        corpus: Corpus,
        layers: list[int],
        config: TranscoderTrainConfig,
        held: int,
        max_steps: int | None,
        on_step: Callable[[int], None] | None,
        progress: bool,
    ) -> None:
        self.model, self.corpus, self.layers, self.config = model, corpus, layers, config
        self.held, self.max_steps, self.on_step, self.progress = held, max_steps, on_step, progress
        self.sites = {layer: mlp_sites(model, layer) for layer in layers}
        self.finish_early = False
        self.skip = torch.tensor([t for t in boundary_tokens(model) if t is not None])

    def capture(self, ids: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
        """Every layer's MLP (input, output) at the kept positions, from one forward."""
        model = self.model
        ids = ids.to(model.device)
        names = [s for pair in self.sites.values() for s in pair]
        last = self.sites[self.layers[-1]][1]  # nothing above the last MLP is needed
        cache = model.run(ids, save=names, interventions=[stop(last)]).cache
        keep = ~torch.isin(ids, self.skip.to(ids.device))
        return {
            layer: (cache[i][keep].float(), cache[o][keep].float())
            for layer, (i, o) in self.sites.items()
        }

    def evaluate(self, trained: TrainedTranscoders) -> TranscoderEval | None:
        if not self.held:
            return None
        return evaluate_transcoders(
            self.model, trained.transcoders, self.corpus, tokens=self.held * self.config.window,
            window=self.config.window, progress=self.progress,
        )  # fmt: skip

    def run(self, state_file: Path | None) -> TrainedTranscoders:
        """Train (from the checkpoint in `state_file` if there is one) to the end or `max_steps`."""
        cfg, device = self.config, self.model.device
        self.tcs = TranscoderSet.build(
            self.model, self.layers, width=cfg.width, kind=cfg.kind, k=cfg.k, skip=cfg.skip,
            seed=cfg.seed,
        ).to(device)  # fmt: skip
        self.opts = {
            layer: torch.optim.Adam(tc.parameters(), lr=cfg.learning_rate(), betas=(0.9, 0.999))
            for layer, tc in self.tcs.items()
        }
        self.fired = {
            layer: torch.zeros(cfg.width, dtype=torch.long, device=device) for layer in self.layers
        }
        state = TrainState(self.layers, 0, 0, self.held, None, [], False)
        if state_file is not None and state_file.exists():
            state = restore_state(state_file, self.tcs, self.opts, self.fired) or state
        start, self.seen, self.history = state.steps_done, state.seen, list(state.history)
        self.scales = {int(k): (v[0], v[1]) for k, v in (state.scales or {}).items()} or None
        self.monitor = None
        if self.held:
            n = min(self.held, cfg.windows_per_step)
            first = next(window_batches(self.model, self.corpus, cfg.window, n, limit=n))
            self.monitor = self.capture(first)
        stop_at = cfg.steps if self.max_steps is None else min(cfg.steps, self.max_steps)
        bar = tqdm(total=cfg.steps * cfg.batch_size, initial=start * cfg.batch_size, unit="tok",
                   unit_scale=True, desc="transcoders", disable=not self.progress)  # fmt: skip
        started = time.perf_counter()
        self.done, exhausted = start, False

        def where(finished: bool) -> TrainState:
            window = state.next_window + (self.done - start) * cfg.windows_per_step
            scales = {str(k): list(v) for k, v in (self.scales or {}).items()}
            return TrainState(self.layers, self.done, self.seen, window, scales, self.history,
                              finished)  # fmt: skip

        if not state.finished and start < stop_at:
            batches = window_batches(
                self.model, self.corpus, cfg.window, cfg.windows_per_step, start=state.next_window
            )
            for step in range(start, stop_at):
                ids = next(batches, None)
                if ids is None or len(ids) < cfg.windows_per_step:  # a short batch is no step
                    exhausted = True
                    break
                self.step(step, self.capture(ids))
                bar.update(len(ids) * cfg.window)
                if self.history and self.history[-1].get("step") == step:
                    shown = ("loss", "eval_fvu", "eval_l0", "dead")
                    bar.set_postfix({k: f"{self.history[-1][k]:.3g}" for k in shown
                                     if k in self.history[-1]})  # fmt: skip
                every = cfg.checkpoint_every
                if state_file is not None and every and self.done % every == 0:
                    save_state(state_file, self.tcs, self.opts, self.fired, where(False))
                if self.on_step is not None:
                    self.on_step(self.done)
        bar.close()
        if self.scales is None:
            raise TranscoderError(
                f"the corpus {self.corpus.spec!r} holds no whole batch of "
                f"{cfg.windows_per_step} windows of {cfg.window} tokens to train on after the "
                f"{self.held} windows held out for evaluation (eval_tokens); give a larger "
                "corpus, or fewer eval_tokens or a smaller batch_size"
            )
        early = self.finish_early and self.done >= stop_at and self.done < cfg.steps
        finished = state.finished or exhausted or early or self.done >= cfg.steps
        if not state.finished:
            if exhausted or early:
                self.history.append({"stopped_early_at_step": float(self.done)})
            if state_file is not None:  # the end, or a pause: the next call goes on from here
                save_state(state_file, self.tcs, self.opts, self.fired, where(finished))
        return TrainedTranscoders(
            _folded(self.tcs, self.scales), cfg, self.history, self.done, finished, self.scales,
            time.perf_counter() - started,
        )  # fmt: skip

    def step(self, step: int, acts: dict[int, tuple[Tensor, Tensor]]) -> None:
        """One Adam step for every layer's transcoder on one batch of MLP inputs and outputs."""
        cfg = self.config
        if self.scales is None:  # so that E‖x‖² = d_in and E‖y‖² = d_out
            self.scales = {layer: (_rms(x), _rms(y)) for layer, (x, y) in acts.items()}
        lr = cfg.learning_rate() * cfg.schedule(step)
        coef = cfg.l0_coef * min(1.0, (step + 1) / max(1, cfg.steps // 20))
        total: Tensor = torch.zeros((), device=self.model.device)
        parts: dict[str, float] = {}
        batch = {}
        for layer, tc in self.tcs.items():
            x, y = acts[layer][0] / self.scales[layer][0], acts[layer][1] / self.scales[layer][1]
            if step == 0:
                with torch.no_grad():
                    tc.b_dec.copy_(y.mean(0))
            age = self.seen - self.fired[layer]
            dead = age > cfg.dead_after_tokens if self.seen > cfg.dead_after_tokens else None
            loss, named, y_hat, hits = transcoder_loss(
                tc, x, y, l0_coef=coef, aux_coef=cfg.aux_coef, k_aux=cfg.k_aux, dead=dead,
                kernels=cfg.kernels,
            )  # fmt: skip
            total = total + loss
            parts |= {f"{k}.{layer}": float(v.detach()) for k, v in named.items()}
            batch[layer] = (x, y, y_hat.detach(), hits, dead)
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
            for group in opt.param_groups:
                group["lr"] = lr
        total.backward()  # the layers share no parameters: one backward gives each its gradient
        for layer, tc in self.tcs.items():
            with torch.no_grad():  # keep ‖W_dec,i‖ = 1: remove the gradient along each row
                grad = tc.W_dec.grad
                assert grad is not None
                grad -= (grad * tc.W_dec).sum(1, keepdim=True) * tc.W_dec
            self.opts[layer].step()
            tc.normalize_decoder()
        self.seen += len(acts[self.layers[0]][0])
        resample = cfg.kind == "jumprelu" and step % cfg.resample_every == cfg.resample_every - 1
        for layer, tc in self.tcs.items():
            x, y, y_hat, hits, dead = batch[layer]
            self.fired[layer][hits > 0] = self.seen
            if resample and dead is not None:
                seed = cfg.seed + 1000 * layer + step
                if resample_dead(tc, dead, x, y, y_hat, self.opts[layer], seed):
                    self.fired[layer][dead] = self.seen
        self.done = step + 1
        if step % cfg.eval_every == 0 or self.done == cfg.steps:
            row = {"step": float(step), "tokens": float(self.seen), "lr": lr,
                   "loss": float(total.detach()), **parts}  # fmt: skip
            self.history.append(row | self.measure())

    @torch.no_grad()
    def measure(self) -> dict[str, float]:
        """Per layer and averaged: dead share, and on the held-out batch FVU and L0."""
        cfg, scales = self.config, self.scales
        assert scales is not None
        row: dict[str, float] = {}
        for layer, tc in self.tcs.items():
            dead = (self.seen - self.fired[layer]) > min(self.seen, cfg.dead_after_tokens)
            row[f"dead.{layer}"] = float(dead.float().mean())
            if self.monitor is not None:
                x, y = self.monitor[layer]
                x, y = x / scales[layer][0], y / scales[layer][1]
                f = tc.encode(x)
                row[f"eval_fvu.{layer}"] = float(fvu(y, tc.decode(f, x)))
                row[f"eval_l0.{layer}"] = float((f > 0).sum(-1).float().mean())
        for name in ("dead", "eval_fvu", "eval_l0"):
            values = [row[f"{name}.{layer}"] for layer in self.layers if f"{name}.{layer}" in row]
            if values:
                row[name] = sum(values) / len(values)
        return row


def _check_memory(model: Model, config: TranscoderTrainConfig, n_layers: int) -> None:
    """Refuse a width whose transcoders cannot be held where they train (float32 weights, their
    gradients and Adam's two moments: four copies of W_enc, W_dec and the skip) before they are
    allocated, rather than fail inside torch with the run folder half made."""
    assert model.dims is not None
    d = model.dims.d_model
    need = 4 * 4 * n_layers * (2 * config.width * d + (d * d if config.skip else 0))
    device = torch.device(model.device)
    room = memory_room(device)
    if room is None:  # not known here: no guard
        return
    if need > room:
        raise TranscoderError(
            f"width {config.width} needs {need / 2**30:,.1f} GiB to train {n_layers} layers on "
            f"{device} (d_model {d}), more than its {room / 2**30:,.1f} GiB; give a smaller width "
            "or fewer layers"
        )


def _rms(x: Tensor) -> float:
    """√(E‖x‖² / d): the scale that makes E‖x / scale‖² = d."""
    return float(x.pow(2).sum(-1).mean().div(x.shape[-1]).sqrt().clamp_min(1e-12))


def _folded(tcs: TranscoderSet, scales: dict[int, tuple[float, float]]) -> TranscoderSet:
    """A CPU copy of `tcs` that reads raw MLP inputs and writes raw MLP outputs."""
    out = copy.deepcopy(tcs).cpu()
    for layer, tc in out.items():
        tc.fold_scales(*scales[layer])
    return out.requires_grad_(False)
