"""Vision: pretrained image models that install here, as mechscope models (feature visualisation
builds on them; its result, `Rendering`, is in ``results.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .inception import GoogLeNet
    from .models import (
        IMAGE_SIZE,
        VISION_MODELS,
        ScaledInput,
        imagenet_labels,
        imagenet_normalised,
        is_vision_spec,
        load_vision,
        read_state_dict,
        sample_image,
    )
    from .results import Rendering

__getattr__, __dir__, __all__ = exports(__name__, __file__)
