"""Errors raised by mechscope.

Every error a user can cause is a `MechscopeError` subclass whose message says
what was wrong and what is valid; the CLI prints it in one line without a
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MechscopeError(Exception):
    """Base class of all errors a user can cause.

    Example::

        try:
            model.run("Hello", save=["blocks.99.resid_post"])
        except mechscope.MechscopeError as e:      # here a SiteError
            print(e)                               # one line: what was wrong and what is valid
    """


class ModelLoadError(MechscopeError):
    """A model spec could not be resolved or loaded.

    Example: ``mechscope.load("smollm2-135m", dtype="int8")`` raises it: "unknown dtype 'int8';
    valid: auto, float32, …".
    """


class SiteError(MechscopeError, KeyError):
    """A site name does not exist on this model.

    Example: ``model.table["blocks.3.attn.hook_z"]`` raises it: "unknown site …; closest:
    blocks.3.attn.z, …" (it is a KeyError too).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InterventionError(MechscopeError):
    """An intervention does not fit the site it targets (shape, selector, value).

    Example: ``ms.add("blocks.0.resid_post", 1.0)`` raises it: "add on 'blocks.0.resid_post' needs
    a tensor value, got float".
    """


class InputError(MechscopeError):
    """Inputs to a run are malformed (wrong type, empty, inconsistent).

    Example: ``model.to_tokens([])`` raises it: "to_tokens takes a string or a non-empty list of
    strings".
    """


def closest(name: str, valid: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to `name`, best first.

    Example: ``closest("resid_psot", ["resid_pre", "resid_post", "mlp.out"])``
    → ``["resid_post", "resid_pre"]``.
    """
    valid = list(valid)
    found = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    if not found:
        # fall back on shared prefixes, e.g. "blocks.3.attn.hook_z" -> "blocks.3.attn.*"
        head = name.rsplit(".", 1)[0]
        found = [v for v in valid if v.startswith(head)][:n]
    return found
