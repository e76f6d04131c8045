"""HookSession: installs the few PyTorch hooks a list of interventions needs, and removes them.

This is the only place in mechscope that calls ``register_forward_hook``.
Interventions are grouped by site and sites by module, so each module gets
at most one forward hook and one pre-hook whatever the number of
interventions. A hook that only saves returns None, so the model's numbers
are untouched. Everything added (hooks, attributes on attention modules, the
attention implementation switch) is removed on exit, also when the forward
raises.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..errors import SiteError
from . import attention
from .cache import ActivationCache
from .execution import Step, apply_intervention
from .interventions import Intervention, StopForward
from .sites import Site, SiteTable


def generic_axes(ndim: int) -> tuple[str, ...]:
    """Axis names for a module path's output: batch first, channels next (NCHW) or last.

    Example: ``generic_axes(4)`` → ``("batch", "channel", "spatial0", "spatial1")``.
    """
    if ndim == 1:
        return ("batch",)
    if ndim == 2:
        return ("batch", "channel")
    if ndim == 3:
        return ("batch", "pos", "channel")
    return ("batch", "channel", *(f"spatial{i}" for i in range(ndim - 2)))


class HookSession:
    """Context manager: hooks for `interventions` (saves included) on `model`.

    ``track_positions`` makes position selectors absolute across the several
    forwards of a generation (the embedding's input length is counted).

    Example (what `Model.hooks` does)::

        cache = ActivationCache()
        with HookSession(model.hf, model.table, [ms.save("blocks.0.resid_post")], cache):
            model.hf(model.to_tokens("Hello"))     # cache["blocks.0.resid_post"] is filled
    """

    def __init__(
        self,
        model: nn.Module,
        table: SiteTable,
        interventions: Sequence[Intervention],
        cache: ActivationCache,
        save_grad: Sequence[str] = (),
        track_positions: bool = False,
        keep_graph: bool = False,
    ) -> None:
        self.model = model
        self._keep_graph = keep_graph
        self.table = table
        self.cache = cache
        self.step = Step(0)
        self._seen = 0
        self._track = track_positions
        self._handles: list[RemovableHandle] = []
        self._attn_modules: list[nn.Module] = []
        self._configs: list[tuple[Any, str]] = []
        self._resid_pre: dict[int, Tensor] = {}

        self.ops: dict[str, list[Intervention]] = defaultdict(list)
        for iv in interventions:
            self.ops[iv.site].append(iv)
        self.grad_sites = set(save_grad)
        wanted = list(dict.fromkeys([*self.ops, *self.grad_sites]))
        # a dictionary that reads another site (a transcoder): that site's tensor of the same
        # forward is captured, to encode; `_used` catches a capture left from an earlier forward
        self._reads = dict.fromkeys(r for n in wanted if (r := _reads(table[n])))
        self._captured: dict[str, Tensor] = {}
        self._used: dict[str, set[str]] = {}
        names = table.order(list(dict.fromkeys([*wanted, *self._reads])))
        self.sites: list[Site] = [table[n] for n in names]
        self._site_names = set(names)

    # --- what each site does to its tensor -------------------------------------------

    def _process(self, site: Site, x: Tensor) -> Tensor:
        if site.base is not None:
            return self._process_attached(site, x)
        axes = site.axes if len(site.axes) == x.ndim else generic_axes(x.ndim)
        stop = False
        owned = False  # x is our own copy, that nothing else holds: write it in place
        for iv in self.ops.get(site.name, ()):
            if iv.op == "stop":
                stop = True
            elif iv.op == "save":
                self._save(site, x)
                owned = False  # the cache holds it now
            elif iv.op == "observe":
                assert iv.fn is not None
                iv.fn(x)
            else:
                new = apply_intervention(iv, x, axes, self.step, owned=owned)
                owned = owned or new is not x
                x = new
        if site.name in self.grad_sites:
            x = self._watch_grad(site.name, x)
        if site.name in self._reads:  # the value the forward goes on with, as a dictionary reads it
            self._captured[site.name] = x
            self._used[site.name] = set()
        if stop:
            raise StopForward(site.name)
        return x

    def _process_attached(self, site: Site, x: Tensor) -> Tensor:
        """x = decode(f) + error with f = encode(x): interventions on f and on the error.

        Both parts of one attachment are handled together, at whichever comes
        first; with no change to either, x is returned untouched (exact). A
        dictionary that ``reads`` another site encodes that site's tensor r of this
        forward instead, and decodes with it: decode(f, r).
        """
        prefix, part = site.name.rsplit(".", 1)
        sibling = f"{prefix}.{'error' if part == 'latents' else 'latents'}"
        if part == "error" and sibling in self._site_names:
            return x  # done with the latents
        dictionary = site.attachment
        lead = 2 if site.axes[:2] == ("batch", "pos") else 1
        flat = x.reshape(*x.shape[:lead], -1)  # e.g. attn.z: heads concatenated
        source = self._source(site, prefix, flat, lead)

        def decode(f: Tensor) -> Tensor:
            out = dictionary.decode(f) if source is None else dictionary.decode(f, source)
            return out.to(x.dtype)

        f = dictionary.encode(flat if source is None else source)
        x_hat = decode(f)
        err = flat - x_hat
        parts = {"latents": f, "error": err}
        changed = dict(parts)
        for name in (f"{prefix}.latents", f"{prefix}.error"):
            if name in self._site_names:
                short = name.rsplit(".", 1)[1]
                plain = dataclasses.replace(self.table[name], base=None, attachment=None)
                value = parts[short]
                if name in self.grad_sites and value.requires_grad:
                    # a node of its own (same values) that the site is routed through, so the
                    # site's gradient reaches it; its two routes back to `value` cancel, and
                    # gradients further upstream stay the model's
                    value = value.view_as(value)
                changed[short] = self._process(plain, value)
        if changed["latents"] is f and changed["error"] is err:
            return x
        # x + the changes (not decode(f') + error), so untouched rows and positions stay exact
        new = flat
        if changed["latents"] is not f:
            new = new + (decode(changed["latents"]) - x_hat)
        if changed["error"] is not err:
            new = new + (changed["error"] - err)
        return new.reshape(x.shape)

    def _source(self, site: Site, prefix: str, flat: Tensor, lead: int) -> Tensor | None:
        """The tensor a dictionary with ``reads`` encodes, captured earlier in this forward."""
        reads = _reads(site)
        if reads is None:
            return None
        if reads not in self._captured or prefix in self._used[reads]:
            raise SiteError(
                f"{prefix!r} reads {reads!r}, which this forward did not compute before "
                f"{site.base!r}: a dictionary must read a site earlier in the forward than the "
                "one it is attached to"
            )
        self._used[reads].add(prefix)
        source = self._captured[reads]
        source = source.reshape(*source.shape[:lead], -1)
        if source.shape[:lead] != flat.shape[:lead]:
            raise SiteError(
                f"{prefix!r} reads {reads!r} of shape {list(source.shape)}, but {site.base!r} "
                f"is {list(flat.shape)}: their leading (batch, position) axes must agree"
            )
        return source

    def _save(self, site: Site, x: Tensor) -> None:
        concat = None
        if self.step.offset > 0:
            if "pos" not in site.axes:
                return  # e.g. a pattern of a later generation step: keep the prompt's
            concat = site.axes.index("pos")
        self.cache.store(site.name, x, concat)
        if self._keep_graph:
            self.cache.live[site.name] = x

    def _watch_grad(self, name: str, x: Tensor) -> Tensor:
        if not x.requires_grad:
            # frozen weights: make the site a leaf of its own so the gradient still reaches it
            x = x.detach().requires_grad_(True)
        grads = self.cache.grads

        def keep(g: Tensor) -> None:
            grads[name] = g.detach() if name not in grads else grads[name] + g.detach()

        x.register_hook(keep)
        self.cache._grad_inputs.append(x)
        return x

    # --- installation ----------------------------------------------------------------

    def __enter__(self) -> HookSession:
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()
        self.cache._grad_inputs = []  # a later backward of the caller's own still reaches the hooks

    def _install(self) -> None:
        out_sites: dict[str, list[Site]] = defaultdict(list)
        in_sites: dict[str, list[Site]] = defaultdict(list)
        attn_sites: dict[str, dict[str, list[Site]]] = defaultdict(lambda: defaultdict(list))
        capture_pre: dict[str, int] = {}
        for site in self.sites:
            if site.kind == "output":
                out_sites[site.module].append(site)
            elif site.kind == "input":
                in_sites[site.module].append(site)
            elif site.kind == "resid_mid":
                out_sites[site.module].append(site)
                assert self.table.adapter is not None and site.layer is not None
                block = f"{self.table.adapter.layers}.{site.layer}"
                in_sites.setdefault(block, [])
                capture_pre[block] = site.layer
            else:  # attention-internal
                short = (site.base or site.name).rsplit(".", 1)[1]
                attn_sites[site.module][short].append(site)

        if self._track and self.table.adapter is not None:
            embed = self.model.get_submodule(self.table.adapter.embed)
            self._handles.append(embed.register_forward_pre_hook(self._count_positions))
        for path, sites in in_sites.items():
            module = self.model.get_submodule(path)
            hook = self._make_pre_hook(sites, capture_pre.get(path))
            self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        for path, sites in out_sites.items():
            module = self.model.get_submodule(path)
            self._handles.append(module.register_forward_hook(self._make_out_hook(sites)))
        if attn_sites:
            for path, by_short in attn_sites.items():
                module = self.model.get_submodule(path)
                setattr(module, attention.HOOK_ATTR, self._attn_hooks(by_short))
                self._attn_modules.append(module)
            self._switch_attention()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self._attn_modules:
            if hasattr(module, attention.HOOK_ATTR):
                delattr(module, attention.HOOK_ATTR)
        self._attn_modules.clear()
        for config, previous in self._configs:
            config._attn_implementation = previous
            if previous != attention.NAME and hasattr(config, attention.PREVIOUS_ATTR):
                delattr(config, attention.PREVIOUS_ATTR)
        self._configs.clear()
        self._resid_pre.clear()
        self._captured.clear()
        self._used.clear()

    def _switch_attention(self) -> None:
        """Point every config of the model at mechscope's attention for this session."""
        seen: set[int] = set()
        for module in self.model.modules():
            config = getattr(module, "config", None)
            if config is None or id(config) in seen or not hasattr(config, "_attn_implementation"):
                continue
            seen.add(id(config))
            previous = config._attn_implementation
            self._configs.append((config, previous))
            if previous != attention.NAME:  # a nested session keeps the outer one's record
                setattr(config, attention.PREVIOUS_ATTR, previous)
            config._attn_implementation = attention.NAME

    # --- hook factories ----------------------------------------------------------------

    def _count_positions(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        ids = args[0] if args else None
        length = ids.shape[-1] if isinstance(ids, Tensor) and ids.ndim >= 1 else 0
        self.step = Step(self._seen)
        self._seen += length

    def _make_pre_hook(self, sites: list[Site], capture_layer: int | None):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]):
            positional = bool(args)
            x = args[0] if positional else kwargs.get("hidden_states")
            if not isinstance(x, Tensor):
                return None
            new = x
            for site in sites:
                new = self._process(site, new)
            if capture_layer is not None:
                self._resid_pre[capture_layer] = new
            if new is x:
                return None
            if positional:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return hook

    def _make_out_hook(self, sites: list[Site]):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any):
            is_tuple = isinstance(output, tuple)
            x = output[0] if is_tuple else output
            if not isinstance(x, Tensor):
                return None
            new = x
            for site in sites:
                if site.kind == "resid_mid":
                    assert site.layer is not None
                    pre = self._resid_pre[site.layer]
                    mid = pre + new
                    changed = self._process(site, mid)
                    if changed is not mid:
                        new = changed - pre
                else:
                    new = self._process(site, new)
            if new is x:
                return None
            return (new, *output[1:]) if is_tuple else new

        return hook

    def _attn_hooks(self, by_short: dict[str, list[Site]]):
        def run(x: Tensor, sites: list[Site]) -> Tensor:
            for site in sites:
                x = self._process(site, x)
            return x

        return {short: (lambda x, s=sites: run(x, s)) for short, sites in by_short.items()}


def _reads(site: Site) -> str | None:
    """The site an attached site's dictionary reads, when it is not the one attached to."""
    if site.base is None:
        return None
    return getattr(site.attachment, "reads", None)


class BlockInputs:
    """Context manager recording what each block receives (hidden states and keyword arguments).

    Used to resume a forward from any block: the keyword arguments (attention
    mask, rotary embeddings, position ids) are the ones HF computed.

    Example::

        with BlockInputs(model._blocks()) as rec:
            model.hf(model.to_tokens("Hello"))
        rec.hidden[3].shape, list(rec.kwargs[3])    # [1, pos, d_model], ["attention_mask", …]
    """

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self.blocks = list(blocks)
        self.kwargs: list[dict[str, Any]] = [{} for _ in self.blocks]
        self.args: list[tuple[Any, ...]] = [() for _ in self.blocks]
        self.hidden: list[Tensor | None] = [None for _ in self.blocks]
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> BlockInputs:
        for i, block in enumerate(self.blocks):

            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], i: int = i):
                self.hidden[i] = args[0] if args else kwargs.get("hidden_states")
                self.args[i] = tuple(args[1:])
                self.kwargs[i] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

            self._handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
