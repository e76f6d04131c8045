"""Sites: canonical names for activations, and where each one is found in the model.

A site is a string such as ``blocks.3.attn.z``, the same on every supported
family (see design.md). `SiteTable` maps each name to a `Site`: the module
whose output (or input) carries it, or the virtual/attention-internal kind,
plus its named axes. Any ``nn.Module`` path (``model.layers.3.mlp.act_fn``)
is a site too: the output of that module.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..errors import SiteError, closest
from .adapters import Adapter, Dims

# How a site's tensor is reached:
#   output  - the output of `module` (first element of a tuple output)
#   input   - the first input of `module` (hidden_states positional or keyword)
#   resid_mid - resid_pre + attn.out of a block, handled at the attn.out module
#   attn    - inside mechscope's attention function (q, k, v, pattern, z)
Kind = Literal["output", "input", "resid_mid", "attn"]

BLOCK_SITES = (
    "resid_pre",
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.pattern",
    "attn.z",
    "attn.out",
    "resid_mid",
    "mlp.post",
    "mlp.out",
    "resid_post",
)
ATTN_INTERNAL = ("q", "k", "v", "pattern", "z")


@dataclass(frozen=True)
class Site:
    """One named activation: where it lives and its axes (names and sizes, None = varies)."""

    name: str
    kind: Kind
    module: str
    axes: tuple[str, ...]
    sizes: tuple[int | None, ...]
    layer: int | None = None
    doc: str = ""

    @property
    def shape(self) -> str:
        """E.g. ``batch pos head=9 d_head=64``."""
        return " ".join(
            a if s is None else f"{a}={s}" for a, s in zip(self.axes, self.sizes, strict=True)
        )


_DOCS = {
    "embed": "token embeddings",
    "pos_embed": "learned position embeddings",
    "resid_pre": "residual stream entering the block",
    "attn.q": "queries per head, after rotary embedding",
    "attn.k": "keys per key/value head, after rotary embedding",
    "attn.v": "values per key/value head",
    "attn.pattern": "attention probabilities (rows sum to 1)",
    "attn.z": "per-head attention output, before the output projection",
    "attn.out": "attention output added to the residual stream",
    "resid_mid": "resid_pre + attn.out",
    "mlp.post": "MLP neurons (input of the output projection)",
    "mlp.out": "MLP output added to the residual stream",
    "resid_post": "residual stream leaving the block (resid_mid + mlp.out)",
    "final_norm": "final normalisation's output (input of the unembedding)",
    "logits": "next-token logits",
}


class SiteTable:
    """All sites of one model, canonical ones in forward order, plus module paths."""

    def __init__(self, model: nn.Module, adapter: Adapter | None, dims: Dims | None) -> None:
        self.model = model
        self.adapter = adapter
        self.dims = dims
        self._canonical: dict[str, Site] = {}
        if adapter is not None and dims is not None:
            for site in _canonical_sites(adapter, dims):
                self._canonical[site.name] = site
        self._modules = {name for name, _ in model.named_modules() if name}

    def canonical(self) -> list[Site]:
        return list(self._canonical.values())

    def __contains__(self, name: str) -> bool:
        return name in self._canonical or name in self._modules

    def __getitem__(self, name: str) -> Site:
        site = self._canonical.get(name)
        if site is not None:
            return site
        if name in self._modules:
            return Site(name, "output", name, ("batch",), (None,), doc="module output")
        raise SiteError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        candidates = list(self._canonical) or sorted(self._modules)
        near = closest(name, candidates) or closest(name, sorted(self._modules))
        msg = f"unknown site {name!r}"
        if near:
            msg += f"; closest: {', '.join(near)}"
        elif candidates:
            more = ", …" if len(candidates) > 10 else ""
            msg += f"; valid sites include: {', '.join(candidates[:10])}{more}"
        if self.dims is not None:
            msg += (
                f". Block sites are blocks.{{0..{self.dims.n_layers - 1}}}."
                f"{{{','.join(BLOCK_SITES)}}}; also embed, final_norm, logits, or any module path"
            )
        return msg

    def expand(self, names: str | Iterable[str]) -> list[str]:
        """Resolve names and glob patterns (``blocks.*.resid_post``) to site names, in order."""
        if isinstance(names, str):
            names = [names]
        out: list[str] = []
        for name in names:
            if any(ch in name for ch in "*?["):
                pool = list(self._canonical) or sorted(self._modules)
                found = fnmatch.filter(pool, name)
                if not found:
                    raise SiteError(f"pattern {name!r} matches no site; " + self._example())
                out.extend(found)
            else:
                self[name]  # raises with the closest names
                out.append(name)
        return list(dict.fromkeys(out))

    def _example(self) -> str:
        if self.dims is None:
            return "module paths look like " + ", ".join(sorted(self._modules)[:5])
        return "e.g. blocks.*.resid_post, blocks.3.attn.*"

    def order(self, names: Sequence[str]) -> list[str]:
        """Sort site names in forward order (canonical first by position, then modules)."""
        pos = {n: i for i, n in enumerate(self._canonical)}
        return sorted(names, key=lambda n: (pos.get(n, len(pos)), n))


def _canonical_sites(a: Adapter, d: Dims) -> list[Site]:
    sites = [Site("embed", "output", a.embed, ("batch", "pos", "d_model"), (None, None, d.d_model))]
    if a.pos_embed is not None:
        sites.append(
            Site(
                "pos_embed",
                "output",
                a.pos_embed,
                ("batch", "pos", "d_model"),
                (None, None, d.d_model),
            )
        )
    resid = (("batch", "pos", "d_model"), (None, None, d.d_model))
    for layer in range(d.n_layers):
        block = f"{a.layers}.{layer}"
        p = f"blocks.{layer}."
        heads = (("batch", "pos", "head", "d_head"), (None, None, d.n_heads, d.d_head))
        kv = (("batch", "pos", "kv_head", "d_head"), (None, None, d.n_kv_heads, d.d_head))
        pattern = (("batch", "head", "q_pos", "k_pos"), (None, d.n_heads, None, None))
        attn = f"{block}.{a.attn}"
        table: list[tuple[str, Kind, str, tuple[tuple[str, ...], tuple[int | None, ...]]]] = [
            ("resid_pre", "input", block, resid),
            ("attn.q", "attn", attn, heads),
            ("attn.k", "attn", attn, kv),
            ("attn.v", "attn", attn, kv),
            ("attn.pattern", "attn", attn, pattern),
            ("attn.z", "attn", attn, heads),
            ("attn.out", "output", f"{block}.{a.attn_out}", resid),
            ("resid_mid", "resid_mid", f"{block}.{a.attn_out}", resid),
            (
                "mlp.post",
                "input",
                f"{block}.{a.mlp_down}",
                (("batch", "pos", "d_mlp"), (None, None, d.d_mlp)),
            ),
            ("mlp.out", "output", f"{block}.{a.mlp_out}", resid),
            ("resid_post", "output", block, resid),
        ]
        for short, kind, module, (axes, sizes) in table:
            sites.append(Site(p + short, kind, module, axes, sizes, layer, _DOCS[short]))
    sites.append(Site("final_norm", "output", a.final_norm, *resid, doc=_DOCS["final_norm"]))
    sites.append(
        Site(
            "logits",
            "output",
            a.unembed,
            ("batch", "pos", "d_vocab"),
            (None, None, d.d_vocab),
            doc=_DOCS["logits"],
        )
    )
    for i, s in enumerate(sites):
        if not s.doc:
            sites[i] = Site(
                s.name, s.kind, s.module, s.axes, s.sizes, s.layer, _DOCS.get(s.name, "")
            )
    return sites


_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def split_block_site(name: str) -> tuple[int, str] | None:
    """``blocks.3.attn.z`` -> (3, "attn.z"); None for non-block sites."""
    m = _BLOCK_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None
