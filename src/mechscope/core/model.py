"""Model: an unmodified HF causal LM (or any torch module) with named sites.

`Model.run` does one forward with hooks for exactly the sites it needs and
returns the logits and a cache; `Model.trace` is the same as a context
manager that collects saves and interventions line by line, each checked at
once; `Model.generate` generates with interventions active. With no
interventions the numbers are HF's numbers, bit for bit.

Example::

    model = mechscope.load("smollm2-135m")
    out = model.run("The capital of France is", save=["blocks.*.resid_post"])
    out.logits.shape                      # [1, 6, 49152]
    out.cache["blocks.3.resid_post"].shape  # [1, 6, 576]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..errors import InputError
from . import interventions as iv_lib
from .adapters import Adapter, Dims, adapter_for, dims_of
from .cache import ActivationCache
from .hooks import HookSession
from .interventions import Intervention, StopForward
from .placement import model_dtype, module_device
from .sites import Dictionary, Site, SiteTable
from .tokens import Tokens

if TYPE_CHECKING:
    from .resume import ForwardContext
    from .trace import Trace

Inputs = str | Sequence[str] | Tensor | dict[str, Tensor]


class RunOutput(NamedTuple):
    """What `Model.run` returns; unpacks as ``logits, cache = model.run(...)``.

    Example::

        out = model.run("Hello", save=["blocks.0.resid_post"])
        out.logits.shape          # [1, pos, d_vocab]
        out.cache["blocks.0.resid_post"].shape    # [1, pos, d_model]
    """

    logits: (
        Tensor  # [batch, pos, d_vocab] for LMs; the module's output otherwise (None after ms.stop)
    )
    cache: ActivationCache


class Model(Tokens):
    """A model with named sites. Build with `mechscope.load` (LMs) or ``Model(module)``.

    Example::

        model = Model(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()))
        model.run(torch.randn(2, 4), save=["0"]).cache["0"].shape   # [2, 8]: paths are sites
    """

    def __init__(
        self,
        hf: nn.Module,
        tokenizer: Any | None = None,
        *,
        name: str | None = None,
        source: str | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.name = name or type(hf).__name__
        self.source = source
        self.weights_sha256 = weights_sha256
        self.adapter: Adapter | None = adapter_for(hf)
        self.dims: Dims | None = dims_of(hf, self.adapter) if self.adapter else None
        self.table = SiteTable(hf, self.adapter, self.dims)

    # --- description -------------------------------------------------------------------

    def sites(self, pattern: str | None = None) -> list[Site]:
        """Canonical sites in forward order (all module paths for a plain torch model).

        `pattern` filters with globs, e.g. ``"blocks.0.*"``.
        """
        names = [s.name for s in self.table.canonical()]
        if not names:
            names = [n for n, _ in self.hf.named_modules() if n]
        names += [s.name for s in self.table.attached()]
        if pattern is not None:
            names = self.table.expand(pattern)
        return [self.table[n] for n in names]

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (its execution device when dispatched)."""
        if self.adapter is not None:
            return module_device(self.hf.get_submodule(self.adapter.embed))
        return module_device(self.hf)

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating precision (of its first floating parameter)."""
        return model_dtype(self.hf)

    @property
    def device_map(self) -> dict[str, Any] | None:
        """accelerate's map from module path to device or ``"disk"``, for a dispatched model."""
        dmap = getattr(self.hf, "hf_device_map", None)
        return dict(dmap) if dmap and len(set(map(str, dmap.values()))) > 1 else None

    @property
    def offloaded(self) -> bool:
        """Whether some weights live off their device (disk or CPU offload: meta parameters)."""
        return any(p.device.type == "meta" for p in self.hf.parameters())

    def __repr__(self) -> str:
        if self.dims is None:
            return f"Model({self.name}, {type(self.hf).__name__})"
        d = self.dims
        gqa = f", kv_heads={d.n_kv_heads}" if d.n_kv_heads != d.n_heads else ""
        return (
            f"Model({self.name}: {self.adapter.family if self.adapter else '?'}, layers={d.n_layers}, "
            f"d_model={d.d_model}, heads={d.n_heads}{gqa}, d_head={d.d_head}, d_mlp={d.d_mlp}, "
            f"vocab={d.d_vocab})"
        )

    # --- inputs (the token methods are Tokens', in core.tokens) ------------------------

    @property
    def context(self) -> int | None:
        """The most positions the model was built for (its config's limit), None if unknown.

        Example: ``mechscope.load("smollm2-135m").context`` → 8192.
        """
        config = getattr(self.hf, "config", None)
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def check_length(self, n_tokens: int, what: str = "the input") -> None:
        """Fail in one line when `n_tokens` positions do not fit in the model's context."""
        limit = self.context if self.adapter is not None else None
        if limit is not None and n_tokens > limit:
            raise InputError(
                f"{what} is {n_tokens} tokens but {self.name}'s context is {limit}; "
                "shorten it or split it into windows"
            )

    def _prepare(self, inputs: Inputs, prepend_bos: bool | None) -> tuple[Any, dict[str, Tensor]]:
        """Turn run inputs into the positional input and keyword arguments of the forward."""
        ids, kwargs = self._prepare_unchecked(inputs, prepend_bos)
        if self.adapter is not None and isinstance(ids, Tensor):
            self._check_ids(ids)
        if isinstance(ids, Tensor) and ids.ndim >= 2 and ids.dtype == torch.long:
            self.check_length(ids.shape[-1])
        return ids, kwargs

    def _check_ids(self, ids: Tensor) -> None:
        """Token ids a language model can embed: integers in [0, vocab), [batch, pos]."""
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise InputError(f"token ids must be an integer tensor, got {ids.dtype}")
        if ids.ndim != 2 or ids.numel() == 0:
            raise InputError(
                f"token ids must be [batch, pos] (or [pos]) and not empty, got shape "
                f"{tuple(ids.shape)}"
            )
        vocab = self.hf.get_input_embeddings().num_embeddings
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            raise InputError(
                f"token id {bad} out of range: {self.name}'s vocabulary is 0…{vocab - 1}"
            )

    def _prepare_unchecked(
        self, inputs: Inputs, prepend_bos: bool | None
    ) -> tuple[Any, dict[str, Tensor]]:
        if isinstance(inputs, dict):
            if not isinstance(inputs.get("input_ids"), Tensor):
                raise InputError(
                    f"a dict of inputs needs an 'input_ids' tensor, got keys {sorted(inputs)}"
                )
            device = self.device
            kwargs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
            return kwargs.pop("input_ids"), kwargs
        if isinstance(inputs, str) or (
            isinstance(inputs, Sequence) and inputs and all(isinstance(t, str) for t in inputs)
        ):
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            rows = [self.ids(t, prepend_bos) for t in texts]
            if max(len(r) for r in rows) == 0:
                raise InputError("the text is empty and no BOS token was prepended")
            ids, mask = self.pad(rows)
            if len({len(r) for r in rows}) > 1:
                return ids, {"attention_mask": mask}
            return ids, {}
        if isinstance(inputs, Tensor):
            if self.adapter is not None and inputs.dtype == torch.long and inputs.ndim == 1:
                inputs = inputs[None]
            return inputs.to(self.device), {}
        got = (
            "an empty list"
            if isinstance(inputs, Sequence) and not inputs
            else type(inputs).__name__
        )
        raise InputError(
            f"inputs must be a string, a list of strings, a tensor or a dict of tensors, got {got}"
        )

    # --- runs --------------------------------------------------------------------------

    def attach(
        self,
        dictionary: Dictionary,
        site: str | None = None,
        name: str = "sae",
        *,
        prefix: str | None = None,
    ) -> Attached:
        """Make a dictionary's (an SAE's) latents and error term sites of this model.

        Adds ``{site}.{name}.latents`` [batch pos latent] and ``{site}.{name}.error``
        (site minus reconstruction); with `prefix`, ``{prefix}.latents`` and
        ``{prefix}.error`` instead (still read off `site`). Saving them changes
        nothing; an intervention on either makes the site read decode(latents) +
        error, so with the error kept the rest of the forward sees only the change
        made. `site` defaults to the one the SAE was trained on. A dictionary with
        a ``reads`` attribute (a transcoder) encodes that earlier site and stands for
        `site`, which must then be given (see `Dictionary`). Use as a context
        manager to detach.

        Example::

            with model.attach(sae) as sae_sites:          # blocks.15.resid_post.sae.*
                logits, cache = model.run(text, save=[sae_sites.latents])
                model.run(text, interventions=[ms.zero_ablate(sae_sites.latents, neurons=[7])])
        """
        reads = getattr(dictionary, "reads", None)
        if site is None and reads is not None:
            raise InputError(
                f"this dictionary reads {reads!r} and stands for another site: pass site=… "
                "(the site its reconstruction replaces)"
            )
        site = site or getattr(getattr(dictionary, "cfg", None), "site", "") or ""
        if not site:
            raise InputError("the dictionary records no site; pass site=… to say where it reads")
        names = self.table.attach(dictionary, site, name, prefix)
        return Attached(self, prefix or f"{site}.{name}", names[0], names[1])

    def detach(self, prefix: str) -> None:
        """Remove an attachment's sites, e.g. ``model.detach("blocks.15.resid_post.sae")``."""
        self.table.detach(prefix)

    def _interventions(
        self, save: str | Sequence[str], interventions: Sequence[Intervention]
    ) -> list[Intervention]:
        if isinstance(interventions, Intervention) or not isinstance(interventions, Sequence):
            raise InputError(
                "interventions must be a list of Intervention objects (ms.add, ms.patch, …), "
                f"got {type(interventions).__name__}"
                + ("; wrap it in a list" if isinstance(interventions, Intervention) else "")
            )
        ivs = list(interventions)
        for iv in ivs:
            if not isinstance(iv, Intervention):
                raise InputError(
                    f"interventions must be mechscope Intervention objects (ms.add, ms.patch, …), "
                    f"got {type(iv).__name__}"
                )
            self.table[iv.site]  # unknown site: error with the closest names
        return ivs + [iv_lib.save(s) for s in self.table.expand(save or [])]

    @contextlib.contextmanager
    def hooks(
        self,
        interventions: Sequence[Intervention] = (),
        save: str | Sequence[str] = (),
        save_grad: str | Sequence[str] = (),
        track_positions: bool = False,
        keep_graph: bool = False,
    ) -> Iterator[ActivationCache]:
        """Hooks active for any forward inside the block (baukit style); yields the cache.

        Example::

            with model.hooks(save=["blocks.0.resid_post"]) as cache:
                model.hf(ids)
        """
        cache = ActivationCache(model_name=self.name)
        ivs = self._interventions(save, interventions)
        grads = self.table.expand(save_grad or [])
        session = HookSession(self.hf, self.table, ivs, cache, grads, track_positions, keep_graph)
        # StopForward: an ms.stop site was reached, the forward is done
        with session, contextlib.suppress(StopForward):
            yield cache

    def run(
        self,
        inputs: Inputs,
        save: str | Sequence[str] = (),
        interventions: Sequence[Intervention] = (),
        *,
        save_grad: str | Sequence[str] = (),
        backward: Callable[[Tensor], Tensor] | None = None,
        keep_graph: bool = False,
        prepend_bos: bool | None = None,
    ) -> RunOutput:
        """One forward with `interventions` applied and `save` sites cached.

        `save` takes site names and globs (``"blocks.*.resid_post"``). With
        `save_grad`, gradients of those sites are kept in ``cache.grads``:
        they arrive when a backward runs, either ``backward(logits)`` (a
        function returning a scalar metric, run here) or your own later
        ``.backward()`` on the returned logits. `keep_graph` runs with
        gradients on and also keeps the saved tensors attached to the graph in
        ``cache.live`` (for vector-Jacobian products between sites).

        Example::

            logits, cache = model.run("When Mary and John went", save=["blocks.5.attn.pattern"])
        """
        x, kwargs = self._prepare(inputs, prepend_bos)
        grad = bool(save_grad) or backward is not None or keep_graph
        with (
            self.hooks(interventions, save, save_grad, keep_graph=keep_graph) as cache,
            torch.set_grad_enabled(grad),
        ):
            try:
                out = self.hf(x, **kwargs)
            except StopForward:  # ms.stop: the saved sites are all there is
                return RunOutput(None, cache)
            logits = out.logits if hasattr(out, "logits") else out
            if backward is not None:
                metric = backward(logits)
                if not isinstance(metric, Tensor) or metric.numel() != 1:
                    raise InputError("backward must return a scalar tensor (the metric)")
                # only the saved sites' gradients: the weights' would double the backward's cost
                # (and pile up in their .grad); with no site to differentiate, everything's
                inputs, cache._grad_inputs = cache._grad_inputs, []
                metric.backward(inputs=inputs or None)
        return RunOutput(logits.detach() if backward is not None else logits, cache)

    def _blocks(self) -> list[nn.Module]:
        if self.adapter is None:
            raise InputError(f"{self.name} has no transformer blocks to resume from")
        return list(self.hf.get_submodule(self.adapter.layers))

    def capture(
        self,
        inputs: Inputs,
        save: str | Sequence[str] = (),
        interventions: Sequence[Intervention] = (),
        *,
        prepend_bos: bool | None = None,
    ) -> tuple[RunOutput, ForwardContext]:
        """Run once and record what every block received, so `resume` can start from any block.

        The cache always holds ``blocks.*.resid_pre`` besides `save`; with
        `interventions`, those are the intervened run's states.
        """
        from .resume import capture

        return capture(self, inputs, save, interventions, prepend_bos=prepend_bos)

    def resume(
        self,
        layer: int,
        resid_pre: Float[Tensor, "batch pos d_model"],
        context: ForwardContext,
        interventions: Sequence[Intervention] = (),
        save: str | Sequence[str] = (),
        *,
        logits_at: int | None = None,
    ) -> RunOutput:
        """Run blocks `layer`… and the unembedding from a given ``blocks.{layer}.resid_pre``
        (`mechscope.core.resume.resume`, which says how rows and `logits_at` work).

        Example: ``model.resume(3, out.cache["blocks.3.resid_pre"], ctx).logits`` after
        ``out, ctx = model.capture(prompts)``: ``out.logits`` again.
        """
        from .resume import resume

        return resume(self, layer, resid_pre, context, interventions, save, logits_at=logits_at)

    def unembed(self, normed: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows d_vocab"]:
        """Logits from the final norm's output (``final_norm`` site), as the model's head computes.

        Lets a caller unembed only the positions it reads: a full [batch, pos,
        vocab] tensor is what dominates memory at Gemma's 262k-token vocabulary.
        """
        assert self.adapter is not None
        logits = self.hf.get_submodule(self.adapter.unembed)(normed)
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def trace(
        self,
        inputs: Inputs,
        *,
        prepend_bos: bool | None = None,
        save_grad: str | Sequence[str] = (),
    ) -> Trace:
        """A context that collects saves and interventions, then runs on exit.

        Each call inside the block is checked at once (a wrong site name fails
        on its own line). After the block, ``t.logits`` and ``t.cache`` hold the
        result.

        Example::

            with model.trace("The Eiffel Tower is in") as t:
                t.save("blocks.10.resid_post")
                t.zero_ablate("blocks.10.mlp.post", neurons=[42])
            t.logits[0, -1].argmax()
        """
        from .trace import Trace

        return Trace(self, inputs, prepend_bos=prepend_bos, save_grad=save_grad)

    def generate(
        self,
        prompt: str | Sequence[str],
        max_new_tokens: int = 20,
        interventions: Sequence[Intervention] = (),
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int = 0,
        prepend_bos: bool | None = None,
    ) -> str | list[str]:
        """Generate a continuation with interventions active at every step.

        Positions are absolute (0 is the first prompt token); a selector of
        None reaches the generated tokens too.
        """
        single = isinstance(prompt, str)
        if not single and not (
            isinstance(prompt, Sequence) and prompt and all(isinstance(p, str) for p in prompt)
        ):
            raise InputError(
                f"generate takes a prompt string or a non-empty list of them, got {prompt!r:.80}"
            )
        prompts = [prompt] if single else list(prompt)
        tok = self._need_tokenizer()
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise InputError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be 0 or more, got {max_new_tokens}")
        if do_sample and not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
            raise InputError(f"temperature must be a positive number, got {temperature!r}")
        rows = [self.ids(p, prepend_bos) for p in prompts]
        if any(len(r) == 0 for r in rows):
            raise InputError("a prompt to generate from is empty (and no BOS token is prepended)")
        ids, mask = self.pad(rows, side="left")
        width = ids.shape[1]
        self.check_length(width + max_new_tokens, f"the prompt plus {max_new_tokens} new tokens")
        torch.manual_seed(seed)
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "pad_token_id": self.pad_token_id,
        }
        if do_sample:
            gen_kwargs["temperature"] = temperature
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        with self.hooks(interventions, track_positions=True), torch.no_grad():
            out = self.hf.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
        texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
        return texts[0] if single else texts


@dataclass(frozen=True)
class Attached:
    """The sites an attached dictionary added; `remove` (or leaving a ``with`` block) detaches it.

    Example::

        sae_sites = model.attach(sae)     # Attached(blocks.15.resid_post.sae.latents, …)
        model.run(text, save=[sae_sites.latents])
        sae_sites.remove()
    """

    model: Model
    prefix: str
    latents: str
    error: str

    def remove(self) -> None:
        self.model.detach(self.prefix)

    def __enter__(self) -> Attached:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Attached({self.latents}, {self.error})"
