"""ActivationCache: the tensors a run saved, by site name, with their gradients.

Saved as one safetensors file (activations under their site names, gradients
under ``grad:<site>``) with the model name and the site order in its
metadata, and reopened with `ActivationCache.load`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from .._arrays import write_safetensors
from ..errors import MechscopeError, SiteError, closest

GRAD_PREFIX = "grad:"


class ActivationCache(Mapping[str, Tensor]):
    """Site name -> saved tensor (detached); ``cache.grads`` holds gradients by site.

    Example::

        _, cache = model.run("Hello", save=["blocks.0.resid_post"])
        cache.save("acts.safetensors")
        ActivationCache.load("acts.safetensors")["blocks.0.resid_post"]   # [1, pos, d_model]
    """

    def __init__(
        self,
        tensors: dict[str, Tensor] | None = None,
        grads: dict[str, Tensor] | None = None,
        model_name: str | None = None,
    ) -> None:
        self._tensors: dict[str, Tensor] = dict(tensors or {})
        self.grads: dict[str, Tensor] = dict(grads or {})
        # with keep_graph: the saved tensors still attached to the autograd graph (not saved)
        self.live: dict[str, Tensor] = {}
        # during a run with save_grad: the site tensors whose gradients are wanted (not saved)
        self._grad_inputs: list[Tensor] = []
        self.model_name = model_name

    def __getitem__(self, site: str) -> Tensor:
        try:
            return self._tensors[site]
        except KeyError:
            near = closest(site, self._tensors)
            hint = f"; closest: {', '.join(near)}" if near else ""
            saved = ", ".join(list(self._tensors)[:8]) or "nothing"
            raise SiteError(
                f"site {site!r} was not saved in this run{hint} (saved: {saved}"
                f"{', …' if len(self._tensors) > 8 else ''})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def store(self, site: str, value: Tensor, concat_dim: int | None = None) -> None:
        """Record `value`; with `concat_dim`, append to an earlier value (generation steps)."""
        value = value.detach()
        if concat_dim is not None and site in self._tensors:
            value = torch.cat([self._tensors[site], value], dim=concat_dim)
        self._tensors[site] = value

    def stack(self, sites: list[str]) -> Tensor:
        """Stack several sites of equal shape along a new first axis, e.g. all resid_post."""
        return torch.stack([self[s] for s in sites])

    def to(self, device: str | torch.device) -> ActivationCache:
        """The same cache on `device` (one this machine has)."""
        from .placement import parse_device

        device = parse_device(device)
        return ActivationCache(
            {k: v.to(device) for k, v in self._tensors.items()},
            {k: v.to(device) for k, v in self.grads.items()},
            self.model_name,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file (atomically: a temporary file renamed into place)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise MechscopeError(f"cache files are safetensors: {path} should end in .safetensors")
        tensors: dict[str, Tensor] = {}
        seen: set[int] = set()
        items = [*self._tensors.items(), *((GRAD_PREFIX + k, v) for k, v in self.grads.items())]
        for key, value in items:
            value = value.contiguous()
            # sites can share storage (embed is blocks.0.resid_pre); safetensors wants copies
            ptr = value.untyped_storage().data_ptr()
            tensors[key] = value.clone() if ptr in seen else value
            seen.add(ptr)
        meta = {
            "format": "mechscope.cache/1",
            "model": self.model_name or "",
            "sites": json.dumps(list(self._tensors)),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_safetensors(path, tensors, meta)
        except OSError as e:
            raise MechscopeError(f"cannot write the cache to {path}: {e}") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActivationCache:
        """Reopen a cache written by `save`."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.exists():
            raise MechscopeError(f"no cache file at {path}")
        if not path.is_file():
            raise MechscopeError(f"{path} is a folder; a cache is one .safetensors file")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            flat = load_file(str(path))
            order = json.loads(meta.get("sites", "[]")) or [
                k for k in flat if not k.startswith(GRAD_PREFIX)
            ]
        except (OSError, ValueError, SafetensorError) as e:  # also bad JSON in the site list
            raise MechscopeError(
                f"cannot read {path}: not a readable safetensors cache ({str(e)[:200]})"
            ) from None
        found = meta.get("format", "")
        if found != "mechscope.cache/1" and not (found == "" and "sites" in meta):
            raise MechscopeError(
                f"{path} is not an activation cache: its format is {found or 'untagged'!r}, "
                "expected 'mechscope.cache/1'"
            )
        if not isinstance(order, list) or any(
            not isinstance(k, str) or k not in flat for k in order
        ):
            raise MechscopeError(f"{path} is damaged: its site list names missing tensors")
        tensors = {k: flat[k] for k in order}
        grads = {k[len(GRAD_PREFIX) :]: v for k, v in flat.items() if k.startswith(GRAD_PREFIX)}
        return cls(tensors, grads, meta.get("model") or None)

    def __repr__(self) -> str:
        lines = [
            f"ActivationCache({len(self)} sites"
            + (f", model={self.model_name}" if self.model_name else "")
            + ")"
        ]
        for k, v in list(self._tensors.items())[:20]:
            grad = "  +grad" if k in self.grads else ""
            lines.append(f"  {k:<28} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}{grad}")
        if len(self) > 20:
            lines.append(f"  … {len(self) - 20} more")
        return "\n".join(lines)
