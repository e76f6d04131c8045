"""ROME (Meng et al. 2022): rewrite one fact with a rank-one update of one MLP's output projection.

The MLP's output projection W is read as a key-value memory, v = W k + b,
where the key k is the projection's input (``blocks.L.mlp.post``). ROME

1. takes the key k* of the subject: the key at the subject's last token,
   averaged over the prompt behind several short random prefixes;
2. finds a value change δ: added to the projection's output at the subject's
   last token, it makes the new object likely after every prefixed prompt,
   while a KL term keeps the model's next-token distribution after
   "{subject} is a" (what the subject is) and a decay term keeps δ small;
3. writes it with the update ΔW = δ uᵀ / (uᵀ k*), u = C⁻¹ k*, where C = E[k kᵀ]
   is the second moment of keys over a corpus (cached on disk): of all W'
   with W' k* = W k* + δ, this one changes the outputs for typical keys least.

`edit` applies it and returns an `Edit` whose `undo` restores the weight
bit for bit; `evaluate_edit` measures efficacy, paraphrase generalisation,
neighbourhood specificity and generation fluency on held-out prompts.
`Edit` and `EditReport` live in `tracing.edits` (no torch) and are
re-exported here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from ..core.interventions import apply
from ..core.loading import default_cache_dir
from ..core.model import Model
from ..errors import InputError
from .edits import Edit, EditReport, _down, ngram_entropy
from .facts import Fact, subject_span

__all__ = [
    "Edit",
    "EditReport",
    "RomeConfig",
    "context_prefixes",
    "default_layer",
    "edit",
    "evaluate_edit",
    "key_covariance",
    "ngram_entropy",
    "object_logprobs",
    "subject_key",
]

PREFIX_STARTS = ("The", "Therefore", "However", "I", "You", "Because", "In", "She", "We", "It")


# --- the MLP's output projection ------------------------------------------------------


# --- keys and their second moment ---------------------------------------------------------


def key_covariance(
    model: Model,
    layer: int,
    corpus: str = "default",
    *,
    tokens: int = 100_000,
    use_cache: bool = True,
    progress: bool = True,
) -> Float[Tensor, "d_mlp d_mlp"]:
    """E[k kᵀ] of the MLP keys at `layer` over `tokens` corpus tokens, cached on disk.

    The cache is keyed by the model's weights (its SHA-256 when it was loaded
    from a file, else a hash of this layer's projection), corpus, layer and
    token count: ``$MECHSCOPE_CACHE/rome/``.

    Example: ``key_covariance(model, 5, tokens=10_000).shape`` → [d_mlp, d_mlp].
    """
    from ..core.activations import stream_activations

    _down(model, layer)
    ident = (
        model.weights_sha256
        or hashlib.sha256(
            _down(model, layer).weight.detach().float().cpu().numpy().tobytes()
        ).hexdigest()
    )
    key = hashlib.sha256(f"{ident}|{corpus}|{layer}|{tokens}".encode()).hexdigest()[:16]
    path = default_cache_dir() / "rome" / f"{model.name}-L{layer}-{key}.safetensors"
    if use_cache and path.exists():
        return load_file(str(path))["cov"]
    site = f"blocks.{layer}.mlp.post"
    total: Tensor | None = None
    n = 0
    for chunk in stream_activations(model, site, corpus, tokens=tokens, progress=progress):
        # each chunk's product in float32 on the model's device, summed over chunks in float64
        # (the sum over 10⁵ tokens is where float32 loses digits)
        part = (chunk.T @ chunk).double()
        total = part if total is None else total + part
        n += chunk.shape[0]
    if total is None or n == 0:
        raise InputError(f"the corpus {corpus!r} gave no tokens for the key covariance")
    cov = (total / n).float().cpu()
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"cov": cov.contiguous()}, str(tmp), metadata={"tokens": str(n)})
        tmp.replace(path)
    return cov


def context_prefixes(model: Model, n: int = 10, length: int = 10, seed: int = 0) -> list[str]:
    """`n` short texts sampled from the model (plus the empty prefix first), to average keys over.

    Example: ``context_prefixes(model, n=2, length=5)`` → ``["", "The …. ", "Therefore …. "]``.
    """
    if n <= 0:
        return [""]
    starts = [PREFIX_STARTS[i % len(PREFIX_STARTS)] for i in range(n)]
    texts = model.generate(starts, max_new_tokens=length, do_sample=True, seed=seed)
    out = [""]
    for start, text in zip(starts, texts, strict=True):
        clean = " ".join(f"{start}{text}".replace("{", "(").replace("}", ")").split())
        out.append(clean.rstrip(".") + ". ")
    return out


def _prefixed(fact: Fact, prefix: str) -> Fact:
    return Fact(fact.subject, prefix + fact.template, fact.object, fact.relation)


@torch.no_grad()
def subject_key(model: Model, fact: Fact, layer: int, prefixes: Sequence[str]) -> Tensor:
    """k*: the MLP key at the subject's last token, averaged over the prefixed prompts.

    Example: ``subject_key(model, fact, 5, context_prefixes(model)).shape`` → [d_mlp].
    """
    facts = [_prefixed(fact, p) for p in prefixes]
    ids, mask = model.pad([model.ids(f.prompt, None) for f in facts])
    last = torch.tensor([subject_span(model, f)[1] - 1 for f in facts])
    keys = model.run({"input_ids": ids, "attention_mask": mask}, save=[f"blocks.{layer}.mlp.post"])
    k = keys.cache[f"blocks.{layer}.mlp.post"][torch.arange(len(facts)), last]
    return k.float().mean(0)


# --- the new value --------------------------------------------------------------------------


@dataclass(frozen=True)
class RomeConfig:
    """Hyper-parameters of the value search: ROME's, with less decay and a looser clamp.

    On SmolLM2 the paper's decay (0.5) and clamp (4‖v‖) left δ too small to
    carry to paraphrases whose subject opens the prompt; 0.1 and 8 did.

    Example: ``edit(model, fact, "Rome", config=RomeConfig(weight_decay=0.5, clamp=4.0))``
    (the paper's decay and clamp).
    """

    steps: int = 30
    lr: float = 0.025  # Adam's step, in units of ‖v‖ (0.5 for ‖v‖ ≈ 20, as in ROME)
    kl_weight: float = 0.0625
    weight_decay: float = 0.1  # on ‖δ‖² / ‖v‖² (ROME: 0.5)
    clamp: float = 8.0  # ‖δ‖ ≤ clamp · ‖v‖ (ROME: 4)
    stop_loss: float = 0.05  # stop once the new object's NLL is below this
    prefixes: int = 10
    prefix_length: int = 10
    covariance_tokens: int = 100_000
    corpus: str = "default"
    essence: str = "{} is a"
    seed: int = 0


def _optimise_delta(
    model: Model,
    fact: Fact,
    new_object: str,
    layer: int,
    prefixes: Sequence[str],
    cfg: RomeConfig,
    progress: bool,
) -> tuple[Tensor, list[dict[str, float]], float]:
    """δ, the loss history and ‖v‖ (the projection's output at the subject's last token)."""
    target = model.ids(" " + new_object, False)
    facts = [_prefixed(fact, p) for p in prefixes]
    texts = [model.ids(f.prompt, None) + target[:-1] for f in facts]
    essence = Fact(fact.subject, cfg.essence, "", fact.relation)
    texts.append(model.ids(essence.prompt, None))
    ids, mask = model.pad(texts)
    n_rw = len(facts)
    subj_last = [subject_span(model, f)[1] - 1 for f in [*facts, essence]]
    # positions whose next token is an object token, and those tokens
    starts = [len(model.ids(f.prompt, None)) - 1 for f in facts]
    rows = torch.tensor([i for i in range(n_rw) for _ in target])
    cols = torch.tensor([s + j for s in starts for j in range(len(target))])
    goal = torch.tensor(target * n_rw, device=model.device)
    ess_last = len(texts[-1]) - 1
    d_model = model.dims.d_model  # type: ignore[union-attr]
    delta = torch.zeros(d_model, device=model.device, requires_grad=True)
    where = torch.tensor(subj_last)
    seen: dict[str, Tensor] = {}

    def add_delta(out: Tensor) -> Tensor:  # the projection's output, δ added at the subject
        at = (torch.arange(out.shape[0]), where)
        if "v" not in seen:
            seen["v"] = out[at].detach()
        return out.index_put(at, delta.to(out.dtype), accumulate=True)

    # the projection module's path is a site: δ goes in through the core's hooks
    site = f"{model.adapter.layers}.{layer}.{model.adapter.mlp_down}"  # type: ignore[union-attr]
    inputs = {"input_ids": ids, "attention_mask": mask}
    ivs = [apply(site, add_delta)]
    params = [p for p in model.hf.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    opt: torch.optim.Adam | None = None
    ref: Tensor | None = None  # the essence prompt's next-token distribution with δ = 0
    history: list[dict[str, float]] = []
    try:
        bar = tqdm(range(cfg.steps), desc="ROME value", unit="step", disable=not progress)
        for step in bar:
            logits = model.run(inputs, interventions=ivs, keep_graph=True).logits.float()
            if ref is None:  # δ is still zero at the first step
                ref = logits[-1, ess_last].detach().log_softmax(-1)
            logp = logits[rows, cols].log_softmax(-1)
            nll = -logp.gather(-1, goal[:, None]).mean()
            kl = torch.nn.functional.kl_div(
                logits[-1, ess_last].log_softmax(-1), ref, log_target=True, reduction="sum"
            )
            v_norm = float(seen["v"][0].norm())
            decay = delta.norm() ** 2 / v_norm**2
            loss = nll + cfg.kl_weight * kl + cfg.weight_decay * decay
            history.append({"step": step, "nll": nll.item(), "kl": kl.item(), "loss": loss.item()})
            bar.set_postfix(nll=f"{nll.item():.3f}", kl=f"{kl.item():.3f}")
            if nll.item() < cfg.stop_loss:
                break
            if opt is None:  # the step size scales with ‖v‖, known after the first forward
                opt = torch.optim.Adam([delta], lr=cfg.lr * v_norm)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # keep δ within clamp · ‖v‖
                limit = cfg.clamp * v_norm
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    finally:
        for p in params:
            p.requires_grad_(True)
    return delta.detach(), history, float(seen["v"][0].norm())


# --- the edit -------------------------------------------------------------------------------


def default_layer(model: Model) -> int:
    """The MLP ROME edits unless told: early-middle, about a sixth of the way through.

    Example: ``default_layer(model)`` → ``5`` on SmolLM2 (30 layers).
    """
    if model.dims is None:
        raise InputError("ROME needs a transformer language model")
    return max(0, round(model.dims.n_layers / 6))


def check_edit(model: Model, fact: Fact, new_object: str, layer: int | None = None) -> int:
    """The layer an edit of `fact` to `new_object` would rewrite, or one line saying why not.

    Example: ``check_edit(model, france, "Rome")`` → ``5`` on SmolLM2 (its default layer).
    """
    if not new_object.strip():
        raise InputError("the new object (--new) is empty")
    if new_object.strip() == fact.object.strip():
        raise InputError(f"the new object {new_object!r} is the fact's object already")
    layer = default_layer(model) if layer is None else layer
    _down(model, layer)
    return layer


def edit(
    model: Model,
    fact: Fact,
    new_object: str,
    *,
    layer: int | None = None,
    config: RomeConfig | None = None,
    covariance: Tensor | None = None,
    progress: bool = True,
) -> Edit:
    """Rewrite `fact` so the model answers `new_object`; returns the applied `Edit`.

    Example::

        with edit(model, Fact("France", "The capital of {} is the city of", "Paris"), "Rome"):
            model.generate("The capital of France is the city of")
    """
    cfg = config or RomeConfig()
    layer = check_edit(model, fact, new_object, layer)
    assert model.dims is not None  # check_edit checked it
    if covariance is not None:
        d_mlp = model.dims.d_mlp
        if tuple(covariance.shape) != (d_mlp, d_mlp):
            raise InputError(
                f"the key covariance must be [d_mlp, d_mlp] = [{d_mlp}, {d_mlp}], got "
                f"{list(covariance.shape)}"
            )
        if not bool(torch.isfinite(covariance).all()):
            raise InputError("the key covariance holds NaN or infinite entries")
    subject_span(model, fact)  # the subject must be found
    t0 = time.perf_counter()
    cov = (
        covariance
        if covariance is not None
        else key_covariance(
            model, layer, cfg.corpus, tokens=cfg.covariance_tokens, progress=progress
        )
    )
    prefixes = context_prefixes(model, cfg.prefixes, cfg.prefix_length, seed=cfg.seed)
    key = subject_key(model, fact, layer, prefixes)
    delta, history, v_norm = _optimise_delta(
        model, fact, new_object, layer, prefixes, cfg, progress
    )
    c = cov.double().to(key.device)
    ridge = 1e-6 * float(c.diagonal().mean())
    u = torch.linalg.solve(
        c + ridge * torch.eye(c.shape[0], dtype=c.dtype, device=c.device), key.double()
    )
    key_dir = (u / (u @ key.double())).float()
    seconds = time.perf_counter() - t0
    return Edit(fact, new_object, layer, delta.float(), key_dir, key, history, v_norm,
                seconds).apply(model)  # fmt: skip


# --- evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def object_logprobs(
    model: Model, prompts: Sequence[str], objects: Sequence[str], batch_size: int = 32
) -> Float[Tensor, "prompt object"]:
    """Mean log-probability per token of each object (with a leading space) after each prompt.

    Example::

        object_logprobs(model, ["The capital of France is the city of"], ["Paris", "Rome"])
        # [1 prompt, 2 objects]: tensor([[-0.04, -6.64]]) on SmolLM2
    """
    pairs = [(p, o) for p in prompts for o in objects]
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        texts, spans = [], []
        for p, o in chunk:
            head, tail = model.ids(p, None), model.ids(" " + o, False)
            texts.append(head + tail)
            spans.append((len(head), tail))
        ids, mask = model.pad(texts)
        logp = model.run({"input_ids": ids, "attention_mask": mask}).logits.float().log_softmax(-1)
        for j, (start, tail) in enumerate(spans):
            pos = torch.arange(start - 1, start - 1 + len(tail))
            out.append(float(logp[j, pos, torch.tensor(tail)].mean()))
    return torch.tensor(out).view(len(prompts), len(objects))


def evaluate_edit(
    model: Model,
    fact: Fact,
    new_object: str,
    neighbours: Sequence[Fact],
    *,
    layer: int | None = None,
    config: RomeConfig | None = None,
    covariance: Tensor | None = None,
    generation_tokens: int = 40,
    progress: bool = True,
) -> tuple[EditReport, Edit]:
    """Edit `fact`, score held-out prompts before and after, and leave the edit applied.

    Paraphrases are the relation's other templates, each after an unrelated
    sampled sentence as in CounterFact (and also scored bare); `neighbours` are
    other subjects' facts of the same relation, which must keep their objects.

    Example::

        fact = Fact("France", "The capital of {} is the city of", "Paris", "country_capital")
        report, e = evaluate_edit(model, fact, "Rome", geography_facts("country_capital", limit=10))
        report.scores()["efficacy"]  # the edit stays applied until e.undo()
    """
    neighbours = [
        n
        for n in neighbours
        if n.subject != fact.subject and n.object.strip() != new_object.strip()
    ]  # a neighbour whose answer is the new object cannot tell keeping from moving
    if not neighbours:
        raise InputError(
            "give neighbour facts (other subjects of the same relation, answered other than "
            f"{new_object!r})"
        )
    cfg = config or RomeConfig()
    bare = fact.paraphrases()
    if not bare:
        raise InputError(f"the relation {fact.relation!r} has no paraphrase templates")
    # as in CounterFact, each paraphrase follows an unrelated sentence (sampled with another
    # seed than the edit's prefixes); the bare templates are scored too
    held_out = context_prefixes(model, len(bare), cfg.prefix_length, seed=cfg.seed + 1000)[1:]
    prompts = {
        "edited": [fact.prompt],
        "paraphrase": [p + t for p, t in zip(held_out, bare, strict=True)],
        "paraphrase_bare": bare,
        "neighbourhood": [n.prompt for n in neighbours],
        "generation": [f"{fact.subject} is", f"{fact.subject} is known for", fact.prompt],
    }
    objs = [n.object for n in neighbours]
    scored = ("edited", "paraphrase", "paraphrase_bare", "neighbourhood")

    def measure() -> tuple[dict[str, list[list[float]]], dict[str, list[str]], list[str]]:
        scores = {}
        for group in ("edited", "paraphrase", "paraphrase_bare"):
            lp = object_logprobs(model, prompts[group], [fact.object, new_object])
            scores[group] = lp.tolist()
        scores["neighbourhood"] = [
            object_logprobs(model, [n.prompt], [n.object, new_object])[0].tolist()
            for n in neighbours
        ]
        tops = {g: _top_tokens(model, prompts[g]) for g in scored}
        gens = model.generate(prompts["generation"], max_new_tokens=generation_tokens)
        return scores, tops, list(gens)

    before, top_before, gen_before = measure()
    e = edit(model, fact, new_object, layer=layer, config=cfg, covariance=covariance,
             progress=progress)  # fmt: skip
    after, top_after, gen_after = measure()
    report = EditReport(
        fact=fact.to_dict(), new_object=new_object, layer=e.layer, prompts=prompts,
        neighbour_objects=objs, before=before, after=after, top_before=top_before,
        top_after=top_after, generations_before=gen_before, generations_after=gen_after,
        seconds=e.seconds,
    )  # fmt: skip
    return report, e


@torch.no_grad()
def _top_tokens(model: Model, prompts: Sequence[str]) -> list[str]:
    rows = [model.ids(p, None) for p in prompts]
    ids, mask = model.pad(rows)
    logits = model.run({"input_ids": ids, "attention_mask": mask}).logits
    last = torch.tensor([len(r) - 1 for r in rows])
    top = logits[torch.arange(len(rows)), last].argmax(-1).tolist()
    tok = model._need_tokenizer()
    return [tok.decode([t]) for t in top]
