"""`Trace`: the context manager behind `Model.trace`, collecting saves and interventions.

Each call inside the ``with`` block builds one intervention and checks it at
once (a wrong site fails on its own line); the forward runs when the block
ends, and ``t.logits`` / ``t.cache`` hold the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor

from ..errors import MechscopeError
from . import interventions as iv_lib
from .cache import ActivationCache
from .interventions import Index, Intervention
from .model import Inputs, Model, RunOutput


@dataclass
class Trace:
    """Collects interventions for one forward; see `Model.trace`.

    Example::

        with model.trace("The Eiffel Tower is in") as t:
            t.save("blocks.10.resid_post")
        t.cache["blocks.10.resid_post"].shape     # [1, pos, d_model]
    """

    model: Model
    inputs: Inputs
    prepend_bos: bool | None = None
    save_grad: str | Sequence[str] = ()
    interventions: list[Intervention] = field(default_factory=list)
    output: RunOutput | None = None

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.output = self.model.run(
                self.inputs,
                interventions=self.interventions,
                save_grad=self.save_grad,
                prepend_bos=self.prepend_bos,
            )

    def _add(self, iv: Intervention) -> Intervention:
        self.model.table[iv.site]
        self.interventions.append(iv)
        return iv

    def save(self, site: str, **sel: Index) -> None:
        """Cache `site` (globs allowed) at this point of the list of interventions."""
        for name in self.model.table.expand(site):
            self._add(iv_lib.save(name, **sel))

    def replace(self, site: str, value: Tensor | ActivationCache, **sel: Index) -> None:
        self._add(iv_lib.replace(site, value, **sel))

    def patch(self, site: str, source: ActivationCache | Tensor, **sel: Index) -> None:
        self._add(iv_lib.patch(site, source, **sel))

    def add(self, site: str, value: Tensor, **sel: Index) -> None:
        self._add(iv_lib.add(site, value, **sel))

    def scale(self, site: str, factor: float | Tensor, **sel: Index) -> None:
        self._add(iv_lib.scale(site, factor, **sel))

    def zero_ablate(self, site: str, **sel: Index) -> None:
        self._add(iv_lib.zero_ablate(site, **sel))

    def mean_ablate(self, site: str, mean: Tensor | None = None, **sel: Any) -> None:
        self._add(iv_lib.mean_ablate(site, mean, **sel))

    def resample_ablate(self, site: str, source: Tensor | ActivationCache, **sel: Any) -> None:
        self._add(iv_lib.resample_ablate(site, source, **sel))

    def apply(self, site: str, fn: Callable[[Tensor], Tensor], **sel: Index) -> None:
        self._add(iv_lib.apply(site, fn, **sel))

    def intervene(self, iv: Intervention) -> None:
        """Add an intervention built elsewhere."""
        self._add(iv)

    def _result(self) -> RunOutput:
        if self.output is None:
            raise MechscopeError("the trace has not run yet: read results after the with-block")
        return self.output

    @property
    def logits(self) -> Float[Tensor, "batch pos d_vocab"]:
        return self._result().logits

    @property
    def cache(self) -> ActivationCache:
        return self._result().cache
