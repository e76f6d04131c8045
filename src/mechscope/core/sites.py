"""Sites: canonical names for activations, and where each one is found in the model.

A site is a string such as ``blocks.3.attn.z``, the same on every supported
family (see design.md). `SiteTable` maps each name to a `Site`: the module
whose output (or input) carries it, or the virtual/attention-internal kind,
plus its named axes. Any ``nn.Module`` path (``model.layers.3.mlp.act_fn``)
is a site too: the output of that module.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from torch import nn

from ..errors import InputError, SiteError, closest
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
    """One named activation: where it lives and its axes (names and sizes, None = varies).

    Example: ``model.table["blocks.3.attn.z"].shape`` → ``"batch pos head=9 d_head=64"``.
    """

    name: str
    kind: Kind
    module: str
    axes: tuple[str, ...]
    sizes: tuple[int | None, ...]
    layer: int | None = None
    doc: str = ""
    # sites of an attached dictionary (an SAE): read off `base` through `attachment`
    base: str | None = None
    attachment: Any = field(default=None, compare=False, repr=False)

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


@runtime_checkable
class Dictionary(Protocol):
    """What `Model.attach` needs of an SAE (or transcoder, or any dictionary): width, encode, decode.

    A dictionary may also have ``reads``, the name of a site earlier in the forward than
    the one it is attached to: its latents are then ``encode(x_reads)``, its
    reconstruction ``decode(f, x_reads)`` (two arguments), and the error is the attached
    site minus that reconstruction (a transcoder reads an MLP's input, stands for its output).

    Example: ``isinstance(sae, Dictionary)`` → True for a `mechscope.sae` SparseAutoencoder, so
    ``model.attach(sae, "blocks.3.resid_post")`` takes it.
    """

    width: int

    def encode(self, x: Any) -> Any: ...

    def decode(self, f: Any) -> Any: ...


ATTACHED_PARTS = ("latents", "error")
PATTERN_AXES = ("batch", "head", "q_pos", "k_pos")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


class SiteTable:
    """All sites of one model, canonical ones in forward order, plus module paths.

    Example::

        model.table.expand("blocks.*.resid_post")   # ["blocks.0.resid_post", …] in order
        model.table["blocks.0.mlp.post"].axes       # ("batch", "pos", "d_mlp")
    """

    def __init__(self, model: nn.Module, adapter: Adapter | None, dims: Dims | None) -> None:
        self.model = model
        self.adapter = adapter
        self.dims = dims
        self._canonical: dict[str, Site] = {}
        if adapter is not None and dims is not None:
            for site in _canonical_sites(adapter, dims):
                self._canonical[site.name] = site
        names = [name for name, _ in model.named_modules() if name]
        self._modules = set(names)
        # a module's output is ready after its whole subtree ran: rank by the subtree's last
        # module in registration order (a proxy for forward order), children before parents
        self._module_rank: dict[str, tuple[int, int]] = {}
        for i, name in enumerate(names):
            end = i
            while end + 1 < len(names) and names[end + 1].startswith(name + "."):
                end += 1
            self._module_rank[name] = (end, -name.count("."))
        self._attached: dict[str, Site] = {}

    def canonical(self) -> list[Site]:
        return list(self._canonical.values())

    def attached(self) -> list[Site]:
        """Sites of attached dictionaries (``….sae.latents``, ``….sae.error``)."""
        return list(self._attached.values())

    def attach(
        self, dictionary: Dictionary, base: str, name: str = "sae", prefix: str | None = None
    ) -> list[str]:
        """Add ``{prefix}.latents`` and ``{prefix}.error`` (`prefix` defaults to
        ``{base}.{name}``), read off `base`; returns their names."""
        if prefix is None:
            if not name or not name.replace("_", "").isalnum():
                raise SiteError(f"attachment name must be letters, digits or _, got {name!r}")
            prefix = f"{base}.{name}"
        else:
            self._check_prefix(prefix)
        site = self[base]
        if site.base is not None:
            raise SiteError(f"{base!r} is itself an attached site; attach to a model site")
        if site.axes == PATTERN_AXES:
            raise SiteError(f"cannot attach a dictionary to attention patterns ({base!r})")
        if any(n.startswith(prefix + ".") for n in self._attached):
            raise SiteError(
                f"{prefix!r} is already attached; detach it first or choose another name"
            )
        lead = site.axes[:2] if site.axes[:2] == ("batch", "pos") else site.axes[:1]
        inner = site.sizes[len(lead) :]
        reads = self._reads_of(dictionary, base, lead)
        cfg = getattr(dictionary, "cfg", None)
        # with `reads`, the reconstruction stands for `base`: the output width is what must fit
        d_site = getattr(cfg, "d_out" if reads else "d_in", None)
        if isinstance(d_site, int) and inner and None not in inner and math.prod(inner) != d_site:  # type: ignore[arg-type]
            what = "writes" if reads else "reads"
            raise InputError(
                f"the dictionary {what} {d_site} values per position, but {base!r} has "
                f"{math.prod(inner)} ({site.shape}); attach it to a site of its width"  # type: ignore[arg-type]
            )
        width = int(dictionary.width)
        label = prefix.rsplit(".", 1)[-1]
        source = f"{reads}, standing for {base}" if reads else base
        made = {
            "latents": replace(
                site, name=f"{prefix}.latents", axes=(*lead, "latent"),
                sizes=(*site.sizes[: len(lead)], width), base=base, attachment=dictionary,
                doc=f"latents of the dictionary {label!r} reading {source}",
            ),
            "error": replace(
                site, name=f"{prefix}.error", base=base, attachment=dictionary,
                doc=f"{base} minus the reconstruction of {label!r} (the error term)",
            ),
        }  # fmt: skip
        for s in made.values():
            self._attached[s.name] = s
        return [s.name for s in made.values()]

    def _check_prefix(self, prefix: str) -> None:
        """An explicit attachment prefix: dotted names, no site's name, under no attachment."""
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            raise SiteError(
                "an attachment prefix is dot-separated names of letters, digits or _ "
                f"(e.g. blocks.3.mlp.tc), got {prefix!r}"
            )
        for name in (prefix, f"{prefix}.latents", f"{prefix}.error"):
            if name in self._canonical or name in self._modules:
                raise SiteError(
                    f"the attachment prefix {prefix!r} would shadow the site {name!r}; "
                    "choose another prefix"
                )
        for other in dict.fromkeys(n.rsplit(".", 1)[0] for n in self._attached):
            if other == prefix:
                raise SiteError(
                    f"{prefix!r} is already attached; detach it first or choose another prefix"
                )
            if prefix.startswith(other + ".") or other.startswith(prefix + "."):
                raise SiteError(
                    f"the attachment prefix {prefix!r} overlaps {other!r}, already attached; "
                    "detach it first or choose another prefix"
                )

    def _reads_of(self, dictionary: Dictionary, base: str, lead: tuple[str, ...]) -> str | None:
        """The site a dictionary with ``reads`` reads, checked; None for one reading `base`."""
        reads = getattr(dictionary, "reads", None)
        if reads is None:
            return None
        if not isinstance(reads, str) or not reads:
            raise SiteError(
                f"the dictionary attached at {base!r} has reads={reads!r}; reads must name "
                "the site it reads (or be absent for a dictionary reading its own site)"
            )
        try:
            source = self[reads]
        except SiteError as e:
            raise SiteError(f"the dictionary attached at {base!r} reads {reads!r}: {e}") from None
        if reads == base:
            raise SiteError(
                f"the dictionary reads {base!r}, the site it is attached to: a dictionary "
                "reading its own site needs no reads"
            )
        if source.base is not None:
            raise SiteError(
                f"the dictionary attached at {base!r} reads {reads!r}, itself an attached site; "
                "it must read a site of the model"
            )
        order = {n: i for i, n in enumerate(self._canonical)}
        if order.get(reads, -1) > order.get(base, len(order)):  # module paths: checked in the run
            raise SiteError(
                f"the dictionary attached at {base!r} reads {reads!r}, which comes later in the "
                "forward; it must read a site computed before the one it is attached to"
            )
        if source.axes == PATTERN_AXES or (
            len(source.axes) >= len(lead) > 1 and source.axes[: len(lead)] != lead
        ):
            raise SiteError(
                f"the dictionary attached at {base!r} ({' '.join(lead)} …) reads {reads!r} "
                f"({source.shape}): it must read a site with the same leading axes"
            )
        cfg = getattr(dictionary, "cfg", None)
        d_in, inner = getattr(cfg, "d_in", None), source.sizes[len(lead) :]
        known = len(source.axes) > len(lead) and None not in inner
        if isinstance(d_in, int) and known and math.prod(inner) != d_in:  # type: ignore[arg-type]
            raise InputError(
                f"the dictionary reads {d_in} values per position, but {reads!r} (what it "
                f"reads) has {math.prod(inner)} ({source.shape})"  # type: ignore[arg-type]
            )
        return reads

    def detach(self, prefix: str) -> None:
        """Remove the sites of the attachment ``{base}.{name}``."""
        names = [n for n in self._attached if n.startswith(prefix + ".")]
        if not names:
            attached = sorted({n.rsplit(".", 1)[0] for n in self._attached}) or ["none"]
            raise SiteError(f"nothing attached as {prefix!r}; attached: {', '.join(attached)}")
        for n in names:
            del self._attached[n]

    def __contains__(self, name: str) -> bool:
        return name in self._canonical or name in self._modules or name in self._attached

    def __getitem__(self, name: str) -> Site:
        site = self._canonical.get(name) or self._attached.get(name)
        if site is not None:
            return site
        if name in self._modules:
            return Site(name, "output", name, ("batch",), (None,), doc="module output")
        raise SiteError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        candidates = [*(list(self._canonical) or sorted(self._modules)), *self._attached]
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
            if not isinstance(name, str):
                raise SiteError(f"site names are strings, got {type(name).__name__} {name!r}")
            if any(ch in name for ch in "*?["):
                pool = [*(list(self._canonical) or sorted(self._modules)), *self._attached]
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
        pos: dict[str, float] = {n: i for i, n in enumerate(self._canonical)}
        # just before the site they read: the site's own saves and interventions see their effect
        for n, site in self._attached.items():
            assert site.base is not None
            part = ATTACHED_PARTS.index(n.rsplit(".", 1)[1])
            pos[n] = pos.get(site.base, len(self._canonical) + 1) - 0.2 + 0.1 * part
        rank = self._module_rank
        return sorted(
            names, key=lambda n: (pos.get(n, len(self._canonical) + 1), rank.get(n, (0, 0)), n)
        )


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
    """``blocks.3.attn.z`` -> (3, "attn.z"); None for non-block sites.

    Example: ``split_block_site("blocks.3.attn.z")`` → ``(3, "attn.z")``;
    ``split_block_site("embed")`` → None.
    """
    m = _BLOCK_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None
