"""Vision: pretrained image models that install here, as mechscope models (feature visualisation builds on them)."""

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

__all__ = [
    "IMAGE_SIZE",
    "VISION_MODELS",
    "GoogLeNet",
    "ScaledInput",
    "imagenet_labels",
    "imagenet_normalised",
    "is_vision_spec",
    "load_vision",
    "read_state_dict",
    "sample_image",
]
