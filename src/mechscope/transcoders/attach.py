"""A transcoder set's latents and error terms as sites of the model.

`attach_transcoders` attaches each layer's transcoder at ``blocks.L.mlp.out``
(`Model.attach` with the transcoder's ``reads``, its MLP's input), under the
prefix ``blocks.L.mlp.{name}``: ``blocks.L.mlp.tc.latents`` [batch pos latent]
are ``encode(x_in)`` of the MLP input of the same forward, and
``blocks.L.mlp.tc.error`` [batch pos d_model] is the MLP output minus the
transcoder's ``decode(f, x_in)``. Saving them changes nothing; an intervention
on the latents moves the MLP output by decode(f', x_in) − decode(f, x_in), one
on the error by its own change, so harvests, steering, patching and gradients
work on transcoder latents as on any site. `AttachedSet` detaches them all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..core.model import Attached, Model
from ..core.placement import module_device
from .model import TranscoderError, TranscoderSet, mlp_sites


class AttachedSet:
    """The sites a transcoder set added to a model, per layer; a context manager that detaches.

    Example::

        with attach_transcoders(model, tcs) as tc_sites:    # AttachedSet(tc: layers [0, 1], …)
            out = model.run(text, save=[tc_sites.latents(1), tc_sites.error(1)])
            model.run(text, interventions=[ms.zero_ablate(tc_sites.latents(1), neurons=[7])])
    """

    def __init__(self, model: Model, name: str, attached: Mapping[int, Attached]) -> None:
        self.model = model
        self.name = name
        self._attached = dict(sorted(attached.items()))

    @property
    def layers(self) -> list[int]:
        return list(self._attached)

    def _at(self, layer: int) -> Attached:
        if layer not in self._attached:
            raise TranscoderError(
                f"no transcoder attached at layer {layer!r}; attached layers: {self.layers}"
            )
        return self._attached[layer]

    def latents(self, layer: int) -> str:
        """The latents site of one layer, e.g. ``blocks.3.mlp.tc.latents``.

        Example: ``model.run(text, save=[tc_sites.latents(3)])``.
        """
        return self._at(layer).latents

    def error(self, layer: int) -> str:
        """The error site of one layer (MLP output minus the transcoder's output), e.g.
        ``blocks.3.mlp.tc.error``.

        Example: ``model.run(text, interventions=[ms.zero_ablate(tc_sites.error(3))])``.
        """
        return self._at(layer).error

    def __iter__(self) -> Iterator[int]:
        return iter(self._attached)

    def __len__(self) -> int:
        return len(self._attached)

    def remove(self) -> None:
        """Detach every layer's sites (those still attached).

        Example: ``tc_sites.remove()``; afterwards ``blocks.0.mlp.tc.latents`` is unknown.
        """
        attached = {s.name for s in self.model.table.attached()}
        for at in self._attached.values():
            if at.latents in attached:
                at.remove()

    def __enter__(self) -> AttachedSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        layers = ",".join(map(str, self.layers))
        where = f"blocks.{layers}" if len(self) == 1 else f"blocks.{{{layers}}}"
        return (
            f"AttachedSet({self.name}: layers {self.layers}, {where}.mlp.{self.name}.latents, "
            f"{where}.mlp.{self.name}.error)"
        )


def attach_transcoders(model: Model, transcoders: TranscoderSet, name: str = "tc") -> AttachedSet:
    """Make each layer's transcoder latents and error sites ``blocks.L.mlp.{name}.*`` of `model`.

    The set is checked against the model (`TranscoderSet.check`) and each transcoder is
    moved (in place) to the device of its layer's MLP. Use the result as a context
    manager, or call ``remove()``, to detach.

    Example::

        with attach_transcoders(model, TranscoderSet.load("runs/tc", model=model)) as tc_sites:
            cache = model.run(text, save=["blocks.*.mlp.tc.latents"]).cache
            cache[tc_sites.latents(3)].shape        # [1, pos, width]
    """
    if not isinstance(transcoders, TranscoderSet):
        raise TranscoderError(
            f"attach_transcoders takes a TranscoderSet, got {type(transcoders).__name__}"
        )
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise TranscoderError(f"the attachment name must be letters, digits or _, got {name!r}")
    transcoders.check(model)
    done: dict[int, Attached] = {}
    try:
        for layer, tc in transcoders.items():
            site_in, site_out = mlp_sites(model, layer)
            if not tc.reads:  # check() compared the recorded sites; the core needs one
                raise TranscoderError(
                    f"the transcoder of layer {layer} records no input site, but the MLP of "
                    f"layer {layer} of {model.name} reads {site_in!r}"
                )
            tc.to(module_device(model.hf.get_submodule(model.table[site_out].module)))
            done[layer] = model.attach(tc, site_out, prefix=f"blocks.{layer}.mlp.{name}")
    except BaseException:
        for at in done.values():
            at.remove()
        raise
    return AttachedSet(model, name, done)
