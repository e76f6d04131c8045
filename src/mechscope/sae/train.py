"""Training a sparse autoencoder on batches of activations.

The loop: activations are divided by one scale (so that E‖x‖² = d_in; folded
back into the weights at the end), the loss is the squared reconstruction
error summed over d_in and averaged over the batch plus the kind's sparsity
or auxiliary term, Adam takes a step with the decoder gradient projected off
each decoder row, and the rows are put back at unit norm. The learning rate
warms up linearly and decays linearly to zero over the last `decay_fraction`
of the steps; the L1 / L0 coefficient warms up over the first 5%.

Dead latents (no activation for `dead_after_tokens` tokens) are revived by
the AuxK loss for TopK (Gao et al. 2024: the top `k_aux` dead latents
reconstruct the residual error, weighted by `aux_coef`) and by resampling
for ReLU and JumpReLU (Bricken et al. 2023: re-initialised toward inputs the
SAE reconstructs worst).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from .._arrays import atomic_file, read_header, save_torch
from .model import KINDS, Kind, SAEConfig, SAEError, SparseAutoencoder
from .sparse import dense_decode, dense_topk_encode, sparse_decode, topk_encode

# TopK kernels, measured with benchmarks/sae_kernels.py (k=32, batch 4096): on an H100 the sparse
# ones run at 1.01x the dense ones at width 4608, 1.45x at 18432 and 1.92x at 73728; on 2 CPU
# cores 3.56x at 4608 and 3.79x at 18432. Dense stays available (kernels="dense") for checking and for other hardware.


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one SAE training run (saved in the run's config).

    Example: ``TrainConfig(kind="jumprelu", width=4608, tokens=500_000).steps`` → 244.
    """

    kind: Kind = "topk"
    width: int = 4608
    k: int = 32
    tokens: int = 1_000_000
    batch_size: int = 2048
    lr: float | None = None  # None: 0.07 / sqrt(width), 1e-3 at width 4608 (see learning_rate)
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    l1_coef: float = 5.0  # relu
    l0_coef: float = 0.05  # jumprelu
    aux_coef: float = 1 / 32  # topk
    k_aux: int | None = None  # None: d_in // 2
    dead_after_tokens: int = 200_000
    resample_every: int = 250  # relu / jumprelu: steps between resamplings
    eval_every: int = 25  # steps between evaluations on the held-out batch
    kernels: str = "sparse"  # topk: "sparse" or "dense" (same numbers; see the note above)
    checkpoint_every: int | None = None  # steps; None: only the final SAE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SAEError(f"unknown SAE kind {self.kind!r}; valid: {', '.join(KINDS)}")
        for name in ("width", "batch_size"):
            if getattr(self, name) < 1:
                raise SAEError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kind == "topk" and not 1 <= self.k <= self.width:
            raise SAEError(f"k must be in 1..width={self.width}, got {self.k}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise SAEError(
                f"lr must be a finite number > 0 (None: 0.07/sqrt(width)), got {self.lr}"
            )
        for name in ("l1_coef", "l0_coef", "aux_coef"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise SAEError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.tokens < self.batch_size:
            raise SAEError(f"tokens ({self.tokens}) must be at least one batch ({self.batch_size})")
        if self.kernels not in ("sparse", "dense"):
            raise SAEError(f"kernels must be sparse or dense, got {self.kernels!r}")
        if not 0 <= self.decay_fraction <= 1:
            raise SAEError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise SAEError(f"checkpoint_every must be at least 1 step, got {self.checkpoint_every}")

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_size

    def learning_rate(self) -> float:
        """`lr`, or 0.07/√width: Gao et al.'s 1/√width scaling, 2.7× their constant for our smaller
        batches and token budgets (SmolLM2 layer 15, width 4608, 600k tokens: CE loss recovered
        0.963 at 1e-3 against 0.932 at their 3.8e-4)."""
        return self.lr if self.lr is not None else 0.07 / math.sqrt(self.width)

    def schedule(self, step: int) -> float:
        """Multiplier of the learning rate at `step`: warm-up, constant, linear decay."""
        warm = min(1.0, (step + 1) / max(1, self.warmup_steps))
        decay_start = self.steps * (1 - self.decay_fraction)
        if step < decay_start or self.decay_fraction == 0:
            return warm
        return warm * max(0.0, (self.steps - step) / (self.steps - decay_start))


@dataclass(frozen=True)
class TrainedSAE:
    """An SAE fitted by `train_sae` (reading raw activations) and how training went.

    Example::

        trained = train_sae(buffer, TrainConfig(), d_in=576)
        TrainedSAE.load(trained.save("sae-l15")).sae
    """

    sae: SparseAutoencoder
    config: TrainConfig
    scale: float  # activations were divided by this during training (folded into `sae`)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    started_at_step: int = 0  # steps a checkpoint had done when training resumed (not saved)

    def __repr__(self) -> str:
        rows = [r for r in self.history if "step" in r]
        last = rows[-1] if rows else {}
        keys = {"eval_fvu": "fvu", "eval_l0": "L0", "dead": "dead"}
        summary = ", ".join(f"{name}={last[k]:.3g}" for k, name in keys.items() if k in last)
        return f"TrainedSAE({self.sae!r}, {self.config.steps} steps, {summary})"

    def save(self, folder: str | Path) -> Path:
        """``sae/`` (weights and config), ``training.json`` (hyper-parameters, scale, history)."""
        folder = Path(folder)
        self.sae.save(folder / "sae")
        record = {"train": dataclasses.asdict(self.config), "scale": self.scale,
                  "seconds": self.seconds, "history": self.history}  # fmt: skip
        (folder / "training.json").write_text(json.dumps(record, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TrainedSAE:
        folder = Path(folder)
        path = folder / "training.json"
        if not path.exists():
            raise SAEError(f"no trained SAE in {folder} (no training.json)")
        record = json.loads(path.read_text())
        config = TrainConfig(**record["train"])
        sae = SparseAutoencoder.load(folder / "sae")
        return cls(sae, config, record["scale"], record["history"], record["seconds"])


class _JumpReLU(torch.autograd.Function):
    """z · H(z − θ); ∂/∂θ through the rectangle pseudo-derivative of width ε."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, log_theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        theta = log_theta.exp()
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, theta = ctx.saved_tensors
        near = ((z - theta).abs() < ctx.eps / 2).to(g.dtype)
        d_theta = -(theta / ctx.eps) * near * g
        return g * (z > theta), (d_theta * theta).reshape(-1, theta.numel()).sum(0), None


class _Step(torch.autograd.Function):
    """H(z − θ), for the L0 penalty; gradient only to θ (rectangle pseudo-derivative)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, log_theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        theta = log_theta.exp()
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, theta = ctx.saved_tensors
        near = ((z - theta).abs() < ctx.eps / 2).to(g.dtype)
        d_theta = -(1 / ctx.eps) * near * g
        return None, (d_theta * theta).reshape(-1, theta.numel()).sum(0), None


def _losses(
    sae: SparseAutoencoder, x: Tensor, cfg: TrainConfig, coef: float, dead: Tensor | None
) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """(total loss, its parts, x̂, which latents fired [width] as counts)."""
    width = sae.cfg.width
    if sae.cfg.kind == "topk":
        k_aux = 0
        if dead is not None and bool(dead.any()):
            k_aux = min(cfg.k_aux or sae.cfg.d_in // 2, int(dead.sum()))
        sparse = cfg.kernels == "sparse"
        encode, decode = (
            (topk_encode, sparse_decode) if sparse else (dense_topk_encode, dense_decode)
        )
        vals, idx, aux_vals, aux_idx = encode(
            x, sae.b_dec, sae.W_enc, sae.b_enc, sae.cfg.k, k_aux, dead if k_aux else None
        )
        x_hat = decode(vals, idx, sae.W_dec) + sae.b_dec
        mse = (x_hat - x).pow(2).sum(-1).mean()
        parts = {"mse": mse}
        loss = mse
        if k_aux:
            err = (x - x_hat).detach()
            err_hat = decode(aux_vals, aux_idx, sae.W_dec)
            aux = (err_hat - err).pow(2).sum(-1).mean() / err.pow(2).sum(-1).mean().clamp_min(1e-12)
            parts["aux"] = aux
            loss = loss + cfg.aux_coef * aux
        fired = torch.bincount(
            idx.reshape(-1), (vals > 0).reshape(-1).to(x.dtype), minlength=width
        )  # no sync
        return loss, parts, x_hat, fired
    pre = sae.pre_activation(x)
    if sae.cfg.kind == "relu":
        f = torch.relu(pre)
        sparsity = (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    else:
        f = _JumpReLU.apply(pre, sae.log_threshold, sae.cfg.jump_bandwidth)
        sparsity = _Step.apply(pre, sae.log_threshold, sae.cfg.jump_bandwidth).sum(-1).mean()
    x_hat = sae.decode(f)
    mse = (x_hat - x).pow(2).sum(-1).mean()
    name = "l1" if sae.cfg.kind == "relu" else "l0_penalty"
    return mse + coef * sparsity, {"mse": mse, name: sparsity}, x_hat, (f > 0).sum(0).float()


@torch.no_grad()
def _resample(
    sae: SparseAutoencoder,
    dead: Tensor,
    x: Tensor,
    x_hat: Tensor,
    opt: torch.optim.Optimizer,
    seed: int,
) -> int:
    """Point dead latents at inputs the SAE reconstructs worst (chosen ∝ loss²); reset their Adam state."""
    n = int(dead.sum())
    if n == 0:
        return 0
    err = (x - x_hat).pow(2).sum(-1)
    g = torch.Generator().manual_seed(seed)
    weights = (err.pow(2) + 1e-12).cpu()
    rows = torch.multinomial(weights, n, replacement=n > len(err), generator=g).to(x.device)
    direction = x[rows] - sae.b_dec
    direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else 1.0
    which = dead.nonzero().squeeze(1)
    sae.W_dec[which] = direction
    sae.W_enc[:, which] = direction.t() * enc_norm * 0.2
    sae.b_enc[which] = 0.0
    for p in (sae.W_dec, sae.W_enc, sae.b_enc):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                view = state[key] if p is not sae.W_enc else state[key].t()
                view[which] = 0.0
    return n


@torch.no_grad()
def evaluate_batch(sae: SparseAutoencoder, x: Float[Tensor, "n d_in"]) -> dict[str, float]:
    """Fraction of variance unexplained, L0 and mean squared error of `sae` on `x`.

    Example: ``evaluate_batch(sae, x)["fvu"]`` → a float (also ``"l0"``, ``"mse"``).
    """
    f = sae.encode(x)
    x_hat = sae.decode(f)
    err = (x - x_hat).pow(2).sum(-1)
    var = (x - x.mean(0)).pow(2).sum(-1)
    return {
        "fvu": float(err.sum() / var.sum()),
        "l0": float((f > 0).sum(-1).float().mean()),
        "mse": float(err.mean()),
    }


def train_sae(
    batches: Iterable[Float[Tensor, "batch d_in"]],
    config: TrainConfig,
    *,
    d_in: int,
    eval_batch: Float[Tensor, "n d_in"] | None = None,
    on_eval: Callable[[SparseAutoencoder, int], dict[str, float]] | None = None,
    on_checkpoint: Callable[[SparseAutoencoder, int], None] | None = None,
    state_file: str | Path | None = None,
    site: str = "",
    model_name: str = "",
    scale: float | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainedSAE:
    """Fit an SAE to `batches` (raw activations, e.g. from a `ShuffleBuffer`) for `config.steps` steps.

    Every `eval_every` steps the held-out `eval_batch` is scored (FVU, L0) and
    `on_eval(sae, step)` may add metrics (it receives the SAE folded to raw
    units). Training stops early, with a clear record, if `batches` runs out.
    Training runs on `device` (batches are moved there); the SAE returned is on the CPU.

    With `state_file`, the whole training state (weights, Adam's moments, the
    dead-latent counters, the history) is written there atomically every
    `checkpoint_every` steps and at the end, and training resumes from it: the
    batches it has trained on are read again and skipped, and the SAE is the
    one of an uninterrupted run, bit for bit.

    Example::

        buffer = ShuffleBuffer(stream_activations(model, "blocks.15.resid_post"), 1 << 17, 4096)
        trained = train_sae(buffer, TrainConfig(width=4608, k=32, tokens=500_000), d_in=576)
    """
    torch.manual_seed(config.seed)
    sae = SparseAutoencoder(
        SAEConfig(
            d_in=d_in, width=config.width, kind=config.kind, k=config.k, site=site, model=model_name
        ),
        seed=config.seed,
    )
    sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=config.learning_rate(), betas=(0.9, 0.999))
    base_lr = config.learning_rate()
    coef_target = config.l1_coef if config.kind == "relu" else config.l0_coef
    last_fired = torch.zeros(config.width, dtype=torch.long, device=device)
    state = TrainState(0, 0, scale, [], False)
    if state_file is not None and Path(state_file).exists():
        state = _restore(Path(state_file), sae, opt, last_fired) or state
    start, seen, scale, history = state.steps_done, state.seen, state.scale, state.history
    seen_before = seen
    bar = tqdm(total=config.steps * config.batch_size, initial=start * config.batch_size,
               unit="tok", unit_scale=True, desc="sae", disable=not progress)  # fmt: skip
    started = time.perf_counter()
    trained = start
    if not state.finished:
        iterator = iter(batches)
        if sum(1 for _ in itertools.islice(iterator, start)) < start:
            raise SAEError(f"the training data ends before step {start}, where the checkpoint is")
        for step in range(start, config.steps):
            try:
                raw = next(iterator)
            except StopIteration:
                break
            trained = step + 1
            if raw.shape != (config.batch_size, d_in):
                raise SAEError(
                    f"batch {step} has shape {tuple(raw.shape)}; expected ({config.batch_size}, {d_in})"
                )
            if scale is None:  # so that E‖x‖² = d_in
                scale = float(raw.float().pow(2).sum(-1).mean().div(d_in).sqrt())
            x = raw.to(device, torch.float32, non_blocking=True) / scale
            if step == 0:
                with torch.no_grad():
                    sae.b_dec.copy_(x.mean(0))
            for group in opt.param_groups:
                group["lr"] = base_lr * config.schedule(step)
            coef = coef_target * min(1.0, (step + 1) / max(1, config.steps // 20))
            dead = (
                (seen - last_fired) > config.dead_after_tokens
                if seen > config.dead_after_tokens
                else None
            )
            loss, parts, x_hat, fired = _losses(sae, x, config, coef, dead)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep ‖W_dec,i‖ = 1: remove the gradient along each row
                w, grad = sae.W_dec, sae.W_dec.grad
                assert grad is not None
                grad -= (grad * w).sum(1, keepdim=True) * w
            opt.step()
            sae.normalize_decoder()
            seen += len(x)
            last_fired[fired > 0] = seen
            if (
                config.kind != "topk"
                and dead is not None
                and step % config.resample_every == config.resample_every - 1
            ):
                n = _resample(sae, dead, x, x_hat.detach(), opt, config.seed + step)
                if n:
                    last_fired[dead] = seen
            bar.update(len(x))
            last = step == config.steps - 1
            if step % config.eval_every == 0 or last:
                row = {"step": float(step), "tokens": float(seen), "lr": opt.param_groups[0]["lr"]}
                row |= {name: float(v.detach()) for name, v in parts.items()}
                row["loss"] = float(loss.detach())
                row["dead"] = float(
                    ((seen - last_fired) > min(seen, config.dead_after_tokens)).float().mean()
                )
                row["tokens_per_s"] = (seen - seen_before) / (time.perf_counter() - started)
                folded = _folded(sae, scale)
                if eval_batch is not None:
                    row |= {
                        f"eval_{k}": v
                        for k, v in evaluate_batch(folded, eval_batch.to(device)).items()
                    }
                if on_eval is not None:
                    row |= on_eval(folded, step)
                history.append(row)
                shown = {k: row[k] for k in ("loss", "eval_fvu", "eval_l0", "dead") if k in row}
                bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step:
                if on_checkpoint:
                    on_checkpoint(_folded(sae, scale), step)
                if state_file is not None:  # written last: the checkpoint is whole once it is
                    state = TrainState(step + 1, seen, scale, history, False)
                    _save(Path(state_file), sae, opt, last_fired, state)
        if scale is None:
            raise SAEError("no activations were given to train on")
        if trained < config.steps:
            history.append({"stopped_early_at_step": float(trained)})
        if state_file is not None:
            _save(
                Path(state_file),
                sae,
                opt,
                last_fired,
                TrainState(trained, seen, scale, history, True),
            )
    bar.close()
    assert scale is not None
    seconds = time.perf_counter() - started
    return TrainedSAE(_folded(sae, scale).cpu(), config, scale, history, seconds, start)


@dataclass(frozen=True)
class TrainState:
    """Where a training run stands at a checkpoint, besides its tensors (saved with them).

    Example: ``TrainState(steps_done=40, seen=81_920, scale=0.02, history=[], finished=False)``
    is the state after 40 steps of 2048 tokens.
    """

    steps_done: int
    seen: int  # training tokens
    scale: float | None
    history: list[dict[str, float]]
    finished: bool  # the loop ended: nothing is left to train


STATE_FORMAT = "mechscope.sae_train_state/1"


ADAM_KEYS = {"step", "exp_avg", "exp_avg_sq"}
"""The per-parameter state of `torch.optim.Adam` once it has taken a step."""


@dataclass(frozen=True)
class StateKeys:
    """Where one trained module's tensors lie in a training-state file: its weights under
    `weights`, Adam's moments under `adam` (``PREFIX.PARAM.MOMENT``), its counters at `fired`.

    Example: ``StateKeys("tc.3.", "adam.3.", "last_fired.3")`` (layer 3 of a transcoder set).
    """

    weights: str = "sae."
    adam: str = "adam."
    fired: str = "last_fired"

    def pack(self, module: torch.nn.Module, opt: torch.optim.Optimizer, fired: Tensor) -> dict:
        """The module's weights, Adam's moments and the counters, as named tensors.

        Example: ``StateKeys().pack(sae, opt, last_fired)`` → ``{"sae.W_enc": …, …}``.
        """
        tensors = {f"{self.weights}{k}": v for k, v in module.state_dict().items()}
        names = {p: name for name, p in module.named_parameters()}
        for p, moments in opt.state.items():
            for key, v in moments.items():
                tensors[f"{self.adam}{names[p]}.{key}"] = v
        tensors[self.fired] = fired
        return tensors

    def loader(
        self,
        tensors: dict[str, Tensor],
        module: torch.nn.Module,
        opt: torch.optim.Optimizer,
        fired: Tensor,
        *,
        stepped: bool,
    ) -> Callable[[], None] | None:
        """What puts `tensors` back into `module`, `opt` and `fired`, or None (nothing changed)
        when they are not exactly this module's (keys, shapes, Adam's moments once `stepped`).

        Example: ``load = keys.loader(tensors, sae, opt, fired, stepped=True); load and load()``.
        """
        own = module.state_dict()
        weights = {
            k.removeprefix(self.weights): v
            for k, v in tensors.items()
            if k.startswith(self.weights)
        }
        params = [name for name, _ in module.named_parameters()]
        moments: dict[str, dict[str, Tensor]] = {name: {} for name in params}
        for key, v in tensors.items():
            if key.startswith(self.adam):
                name, _, moment = key.removeprefix(self.adam).rpartition(".")
                moments.setdefault(name, {})[moment] = v
        counters = tensors.get(self.fired)
        fits = (
            weights.keys() == own.keys()
            and all(weights[k].shape == own[k].shape for k in own)
            and moments.keys() == set(params)
            and all(m.keys() == (ADAM_KEYS if stepped else set()) for m in moments.values())
            and counters is not None
            and counters.shape == fired.shape
        )
        if not fits:
            return None

        def load() -> None:
            module.load_state_dict(weights)
            saved = opt.state_dict()
            saved["state"] = {i: moments[name] for i, name in enumerate(params) if moments[name]}
            opt.load_state_dict(saved)
            fired.copy_(counters)

        return load


def write_state(path: Path, fmt: str, state: Any, tensors: dict[str, Tensor]) -> None:
    """Write a training state atomically: `tensors`, and the dataclass `state` as metadata.

    Example: ``write_state(path, STATE_FORMAT, state, StateKeys().pack(sae, opt, fired))``.
    """
    meta = {"format": fmt, "state": json.dumps(dataclasses.asdict(state))}
    with atomic_file(path) as tmp:
        save_torch(tmp, {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta)


def read_state(path: Path, fmt: str, cls: type) -> tuple[Any, dict[str, Tensor]] | None:
    """The `cls` state and the tensors of a training-state file of format `fmt`, or None when
    the file is damaged or of another format (the run then starts again).

    Example: ``state, tensors = read_state(path, STATE_FORMAT, TrainState) or (fresh, {})``.
    """
    try:
        meta, _ = read_header(path)
        if meta.get("format") != fmt:
            return None
        return cls(**json.loads(meta["state"])), load_file(str(path))
    except Exception:  # a damaged file: safetensors' or JSON's errors, a missing field
        return None


def _save(
    path: Path,
    sae: SparseAutoencoder,
    opt: torch.optim.Optimizer,
    last_fired: Tensor,
    state: TrainState,
) -> None:
    """Write the training state at `path` atomically: weights, Adam's state, the counters."""
    write_state(path, STATE_FORMAT, state, StateKeys().pack(sae, opt, last_fired))


def _restore(
    path: Path, sae: SparseAutoencoder, opt: torch.optim.Optimizer, last_fired: Tensor
) -> TrainState | None:
    """Load the training state at `path` into `sae`, `opt` and `last_fired`; None (nothing
    changed) when the file is not a whole state of this run, which then starts again."""
    read = read_state(path, STATE_FORMAT, TrainState)
    if read is None:
        return None
    state, tensors = read
    load = StateKeys().loader(tensors, sae, opt, last_fired, stepped=bool(state.steps_done))
    if load is None:
        return None
    load()
    return state


def _folded(sae: SparseAutoencoder, scale: float) -> SparseAutoencoder:
    """A copy of `sae` that reads raw activations (training saw them divided by `scale`)."""
    out = copy.deepcopy(sae)
    out.fold_input_scale(scale)
    return out.requires_grad_(False)


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """`config` as a dict, with its `steps` and the learning rate used (``lr_used``).

    Example: ``config_dict(TrainConfig(tokens=4096, batch_size=2048))["steps"]`` → 2.
    """
    return dataclasses.asdict(config) | {"steps": config.steps, "lr_used": config.learning_rate()}
