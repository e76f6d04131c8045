"""Optimised inputs for language models: the text that most excites a neuron or SAE latent.

Feature visualisation needs a continuous input; text is discrete, the
obstacle the lecture names. Two answers:

- `soft_prompt` optimises the input *embeddings* with Adam. It reaches
  activations no text reaches, and its nearest tokens, read back as text,
  usually lose most of it: the gap is the obstacle, measured.
- `hard_prompt` searches token sequences by greedy coordinate gradient
  (GCG, Zou et al. 2023): the gradient of the objective with respect to
  one-hot tokens proposes, at each position, the `topk` most promising
  swaps; a batch of random single swaps among them is evaluated exactly and
  the best taken.

The objective is the unit's activation at the prompt's last token, minus
`fluency` × the prompt's mean negative log-likelihood under the model itself,
so the search prefers text the model finds plausible. Prompts start with the
token that starts every harvest window (``<|endoftext|>`` for SmolLM2), so
the activation is comparable with the unit's top dataset examples.

The results (`PromptResult`, `UnitComparison`, `PromptComparisons`) are in
`mechscope.prompts_results`, readable without torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .core.interventions import stop
from .core.model import Model
from .errors import InputError
from .prompts_results import PromptComparisons, PromptResult, UnitComparison


def _check_unit(model: Model, site: str, unit: int) -> int:
    s = model.table[site]  # unknown site: error naming the closest ones
    width = s.sizes[-1] if s.sizes else None
    if s.axes[:2] != ("batch", "pos"):
        raise InputError(
            f"{site!r} has axes {s.axes}; prompt optimisation needs a [batch pos unit] site"
        )
    if width is not None and not 0 <= unit < width:
        raise InputError(f"{site!r} has {width} units; unit {unit} is out of range")
    return unit


def prefix_ids(model: Model) -> list[int]:
    """The token(s) every prompt starts with: the harvest windows' first token.

    Example: ``prefix_ids(model)`` → ``[0]`` for SmolLM2 (``<|endoftext|>``).
    """
    from .corpus import boundary_tokens

    first, _ = boundary_tokens(model)
    return [first] if first is not None else []


def allowed_tokens(model: Model) -> Tensor:
    """A bool mask [vocab] of tokens a prompt may use: no special tokens, and decodable alone.

    Example: ``allowed_tokens(model).sum()`` → how many tokens a prompt may use (48,816 of
    SmolLM2's 49,152).
    """
    tok = model._need_tokenizer()
    vocab = model.hf.get_input_embeddings().weight.shape[0]
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[: min(vocab, len(tok))] = True
    for i in tok.all_special_ids:
        if i < vocab:
            mask[i] = False
    for i in range(min(vocab, len(tok))):
        if mask[i]:
            text = tok.decode([i])
            if not text or "\ufffd" in text or not text.isprintable() and text.strip():
                mask[i] = False
    return mask


def _objective(
    acts: Tensor,
    logits: Tensor | None,
    ids_or_probs: Tensor,
    n_prefix: int,
    unit: int,
    fluency: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(objective, activation, nll) per row. `ids_or_probs` is [b n] ids or [b n vocab] probabilities."""
    act = acts[:, -1, unit].float()
    if logits is None:
        zero = torch.zeros_like(act)
        return act, act, zero
    logp = F.log_softmax(logits[:, n_prefix - 1 : -1].float(), dim=-1)  # predicts the free tokens
    if ids_or_probs.ndim == 2:
        nll = -logp.gather(-1, ids_or_probs[:, n_prefix:, None])[..., 0].mean(-1)
    else:
        nll = -(logp * ids_or_probs[:, n_prefix:]).sum(-1).mean(-1)
    return act - fluency * nll, act, nll


def _forward(
    model: Model, site: str, fluency: float, **inputs: Tensor
) -> tuple[Tensor, Tensor | None]:
    """The site's value and (if the fluency term needs them) the logits."""
    ivs = [] if fluency > 0 else [stop(site)]
    with model.hooks(ivs, save=[site], keep_graph=torch.is_grad_enabled()) as cache:
        out = model.hf(**inputs, use_cache=False)
    acts = cache.live[site] if torch.is_grad_enabled() else cache[site]
    return acts, (out.logits if fluency > 0 else None)


def _roundtrips(model: Model, rows: Tensor) -> Tensor:
    """Rows whose free tokens decode to text that tokenises back to the same tokens."""
    tok = model._need_tokenizer()
    texts = tok.batch_decode(rows.tolist())
    again = tok(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([a == r for a, r in zip(again, rows.tolist(), strict=True)])


def hard_prompt(
    model: Model,
    site: str,
    unit: int,
    *,
    length: int = 8,
    steps: int = 60,
    candidates: int = 64,
    topk: int = 64,
    fluency: float = 0.1,
    init: str | list[int] | None = None,
    allowed: Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> PromptResult:
    """Greedy coordinate gradient search for `length` tokens maximising unit `unit` of `site`.

    Each step: one gradient through one-hot tokens, then `candidates` prompts
    that each swap one position for one of its `topk` best tokens, evaluated
    in one batch; the best becomes the current prompt. Swaps whose text would
    not tokenise back to the same tokens are dropped, so the reported text
    reproduces the reported activation. `init` starts the search from a text
    or token ids (its length then replaces `length`); by default from random
    allowed tokens.

    Example::

        r = hard_prompt(model, "blocks.10.mlp.post", 42, steps=30, fluency=0.2)
        r.text, r.activation     # activation_of(model, "blocks.10.mlp.post", 42, [r.text]) agrees
    """
    _check_unit(model, site, unit)
    if length < 1 or steps < 1 or candidates < 1 or topk < 1 or not 0 <= fluency < math.inf:
        raise InputError(
            "hard_prompt needs length, steps, candidates, topk ≥ 1 and a finite fluency ≥ 0"
        )
    g = torch.Generator().manual_seed(seed)
    dev = model.device
    embed = model.hf.get_input_embeddings().weight  # [vocab d_model]
    allowed = allowed_tokens(model) if allowed is None else allowed
    pool = allowed.nonzero()[:, 0]
    prefix = torch.tensor(prefix_ids(model), dtype=torch.long)
    if init is not None:
        if isinstance(init, str):
            init = model._need_tokenizer()(init, add_special_tokens=False)["input_ids"]
        free = torch.tensor(list(init), dtype=torch.long)
        if len(free) == 0:
            raise InputError("init must contain at least one token")
        length = len(free)
    else:
        free = pool[torch.randint(len(pool), (length,), generator=g)]
    n_prefix = len(prefix)
    if n_prefix == 0:
        raise InputError("the model has no BOS or document-boundary token to start prompts with")

    def evaluate(rows: Int[Tensor, "b length"]) -> tuple[Tensor, Tensor, Tensor]:
        ids = torch.cat([prefix.expand(len(rows), -1), rows], 1).to(dev)
        with torch.no_grad():
            acts, logits = _forward(model, site, fluency, input_ids=ids)
            return _objective(acts, logits, ids, n_prefix, unit, fluency)

    best_obj, best_act, best_nll = (float(v[0]) for v in evaluate(free[None]))
    best = free.clone()
    history = []
    bar = tqdm(range(steps), desc=f"GCG {site}:{unit}", disable=not progress)
    for _ in bar:
        ids = torch.cat([prefix, free]).to(dev)
        onehot = F.one_hot(ids, embed.shape[0]).to(embed.dtype).requires_grad_()
        with torch.enable_grad():
            acts, logits = _forward(model, site, fluency, inputs_embeds=(onehot @ embed)[None])
            obj, _, _ = _objective(acts, logits, ids[None], n_prefix, unit, fluency)
            (grad,) = torch.autograd.grad(obj.sum(), onehot)
        grad = grad[n_prefix:].float().cpu()  # [length vocab]: the ascent direction per swap
        grad[:, ~allowed] = -math.inf
        top = grad.topk(min(topk, len(pool)), dim=-1).indices  # [length topk]
        pos = torch.randint(length, (candidates,), generator=g)
        pick = top[pos, torch.randint(top.shape[1], (candidates,), generator=g)]
        rows = free.expand(candidates, -1).clone()
        rows[torch.arange(candidates), pos] = pick
        rows = rows[_roundtrips(model, rows)]
        if len(rows) == 0:
            history.append(best_obj)
            continue
        obj, act, nll = evaluate(rows)
        i = int(obj.argmax())
        free = rows[i]
        if float(obj[i]) > best_obj:
            best_obj, best_act, best_nll, best = (
                float(obj[i]),
                float(act[i]),
                float(nll[i]),
                free.clone(),
            )
        history.append(best_obj)
        bar.set_postfix(act=f"{best_act:.3g}")
    text = model._need_tokenizer().decode(best.tolist())
    return PromptResult(site, unit, "gcg", best.tolist(), text, best_act, best_nll, history)


def soft_prompt(
    model: Model,
    site: str,
    unit: int,
    *,
    length: int = 8,
    steps: int = 200,
    lr: float = 0.01,
    fluency: float = 0.1,
    temperature: float = 0.05,
    allowed: Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> PromptResult:
    """Adam on `length` free input embeddings (after the prefix) to maximise the unit.

    The fluency term is the expected NLL under each position's nearest-token
    distribution softmax(cos(embedding, token embeddings) / `temperature`).
    The result's ``text`` is the nearest tokens, and ``projected_activation``
    the unit's activation on them: the price of going back to text.

    Example::

        r = soft_prompt(model, "blocks.10.mlp.post", 42, steps=100)
        r.activation, r.projected_activation, r.text   # embeddings' value, nearest tokens' value
    """
    _check_unit(model, site, unit)
    if length < 1 or steps < 1 or lr <= 0 or not 0 <= fluency < math.inf or temperature <= 0:
        raise InputError(
            "soft_prompt needs length, steps ≥ 1, lr > 0, fluency ≥ 0, temperature > 0"
        )
    g = torch.Generator().manual_seed(seed)
    dev = model.device
    embed = model.hf.get_input_embeddings().weight.detach()
    allowed = (allowed_tokens(model) if allowed is None else allowed).to(dev)
    pool = allowed.nonzero()[:, 0].cpu()
    prefix = torch.tensor(prefix_ids(model), dtype=torch.long, device=dev)
    if len(prefix) == 0:
        raise InputError("the model has no BOS or document-boundary token to start prompts with")
    start = pool[torch.randint(len(pool), (length,), generator=g)].to(dev)
    soft = embed[start].float().clone().requires_grad_()
    opt = torch.optim.Adam([soft], lr=lr)
    unit_embed = F.normalize(embed.float(), dim=-1)
    n_prefix = len(prefix)

    def nearest_probs(x: Tensor) -> Tensor:  # [length vocab]
        sim = F.normalize(x, dim=-1) @ unit_embed.T / temperature
        return torch.softmax(sim.masked_fill(~allowed, -math.inf), dim=-1)

    history, best_obj, best, best_act, best_nll = [], -math.inf, soft.detach().clone(), 0.0, 0.0
    for _ in tqdm(range(steps), desc=f"soft {site}:{unit}", disable=not progress):
        opt.zero_grad()
        with torch.enable_grad():
            x = torch.cat([embed[prefix].float(), soft])[None].to(embed.dtype)
            acts, logits = _forward(model, site, fluency, inputs_embeds=x)
            probs = torch.cat([F.one_hot(prefix, embed.shape[0]).float(), nearest_probs(soft)])[
                None
            ]
            obj, act, nll = _objective(acts, logits, probs, n_prefix, unit, fluency)
            (-obj.sum()).backward()
        opt.step()
        obj, act, nll = obj.detach(), act.detach(), nll.detach()
        if float(obj) > best_obj:
            best_obj, best, best_act, best_nll = (
                float(obj),
                soft.detach().clone(),
                float(act),
                float(nll),
            )
        history.append(best_obj)
    with torch.no_grad():
        sim = F.normalize(best, dim=-1) @ unit_embed.T
        ids = sim.masked_fill(~allowed, -math.inf).argmax(-1)
        acts, _ = _forward(model, site, 0.0, input_ids=torch.cat([prefix, ids])[None])
    text = model._need_tokenizer().decode(ids.tolist())
    return PromptResult(site, unit, "soft", ids.tolist(), text, best_act, best_nll, history,
                        projected_activation=float(acts[0, -1, unit]))  # fmt: skip


def activation_of(model: Model, site: str, unit: int, texts: list[str]) -> Float[Tensor, " n"]:
    """The unit's activation at the last token of each text (each after the prompt prefix).

    Example: ``activation_of(model, "blocks.10.mlp.post", 42, [r.text, "Hello"])`` → [2].
    """
    _check_unit(model, site, unit)
    tok = model._need_tokenizer()
    prefix = prefix_ids(model)
    out = []
    for text in texts:
        ids = torch.tensor(
            [prefix + tok(text, add_special_tokens=False)["input_ids"]], device=model.device
        )
        with torch.no_grad():
            acts, _ = _forward(model, site, 0.0, input_ids=ids)
        out.append(float(acts[0, -1, unit]))
    return torch.tensor(out)


# ---------------------------------------------------------------------------- against the data


def sample_units(
    store: Any, sites: list[str], per_site: int, seed: int = 0
) -> list[tuple[str, int]]:
    """`per_site` units of each site drawn at random (seeded) among those active on some token.

    Example: ``sample_units(open_harvest("runs/harvest"), ["blocks.10.mlp.post"], 4)``
    → ``[("blocks.10.mlp.post", 17), …]`` (4 pairs).
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for site in sites:
        alive = [
            u.unit for u in store.top_units(site, by="max", limit=store.n_units(site)) if u.max > 0
        ]
        if len(alive) < per_site:
            raise InputError(f"{site} has only {len(alive)} units that were ever active")
        pick = torch.randperm(len(alive), generator=g)[:per_site].sort().values
        out += [(site, alive[int(i)]) for i in pick]
    return out


def compare_units(
    model: Model,
    units: list[tuple[str, int]],
    store: Any,
    *,
    soft_steps: int = 0,
    start: str = "random",
    progress: bool = True,
    **gcg: Any,
) -> list[UnitComparison]:
    """GCG (and, with `soft_steps`, a soft prompt) for each (site, unit), beside its top example
    in the harvest `store`. `gcg` passes options to `hard_prompt` (length, steps, fluency…).

    `start` is ``"random"`` (random tokens) or ``"top"``: the search starts from the
    last `length` tokens of the top example's document up to its peak, so it
    edits real text (the top example keeps its whole window as context).

    Example::

        store = open_harvest("runs/harvest")
        units = sample_units(store, ["blocks.10.mlp.post"], 4)
        rows = compare_units(model, units, store, start="top", steps=30, length=10)
    """
    if start not in ("random", "top"):
        raise InputError(f"start must be 'random' or 'top', got {start!r}")
    if soft_steps < 0:
        raise InputError(f"soft_steps must be >= 0 (0: no soft prompt), got {soft_steps}")
    allowed = allowed_tokens(model)
    tok = model._need_tokenizer()
    boundary = set(prefix_ids(model)) | set(tok.all_special_ids)
    out = []
    for site, unit in tqdm(units, desc="units", disable=not progress):
        record = store.unit(site, unit)
        if not record.top:
            raise InputError(f"the harvest has no examples of {site}:{unit}")
        top = record.top[0]
        context = top.tokens[max(0, top.max_pos - 15) : top.max_pos + 1]
        init = None
        if start == "top":
            ids = tok("".join(top.tokens[: top.max_pos + 1]), add_special_tokens=False)["input_ids"]
            cut = max(
                [i + 1 for i, t in enumerate(ids) if t in boundary], default=0
            )  # same document
            init = ids[cut:][-gcg.get("length", 8) :] or None
        result = hard_prompt(model, site, unit, allowed=allowed, progress=False, init=init, **gcg)
        soft = None
        if soft_steps:
            soft = soft_prompt(model, site, unit, steps=soft_steps, allowed=allowed,
                               fluency=gcg.get("fluency", 0.1), progress=False)  # fmt: skip
        out.append(UnitComparison(site, unit, result, top.max_act, context, soft))
    return out


def prompts_run(
    model: Model,
    units: list[tuple[str, int]],
    store: Any,
    out: str | Path,
    *,
    soft_steps: int = 0,
    start: str = "random",
    progress: bool = True,
    **gcg: Any,
) -> PromptComparisons:
    """`compare_units` written as a run folder: ``comparisons.safetensors`` (`PromptComparisons`)
    and the figure ``prompts`` (each unit's top-example activation beside its GCG and soft
    prompts').

    Example: ``prompts_run(model, units, store, "runs/prompts", soft_steps=50)`` → the
    `PromptComparisons`, with runs/prompts/comparisons.safetensors and figures/prompts.png
    written.
    """
    import time

    from .figures import grouped_bars
    from .store import model_record, new_run

    config = {"model": model_record(model), "units": [list(u) for u in units],
              "harvest": str(getattr(store, "path", "")), "soft_steps": soft_steps, "start": start,
              "gcg": gcg}  # fmt: skip
    with new_run("prompts", out, config) as run:
        t0 = time.perf_counter()
        rows = compare_units(model, units, store, soft_steps=soft_steps, start=start,
                             progress=progress, **gcg)  # fmt: skip
        run.timed("search", t0)
        found = PromptComparisons(rows)
        found.save(run.dir / "comparisons.safetensors")  # PromptComparisons.load reopens it
        series = {"top dataset example": [r.top_act for r in rows],
                  "GCG prompt": [r.gcg.activation for r in rows]}  # fmt: skip
        if soft_steps:
            series["soft prompt → nearest tokens"] = [
                r.soft.projected_activation or 0.0 for r in rows if r.soft
            ]
        labels = [f"{r.site.split('.')[1]}.{r.unit}" for r in rows]
        grouped_bars(series, labels, run.figures / "prompts", y_title="activation at the last token",
                     title=f"{model.name}: optimised prompts against the top dataset example")  # fmt: skip
        run.extra["summary"] = found.summary()
        run.finish()
    return found
