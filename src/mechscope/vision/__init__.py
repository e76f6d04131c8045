"""Vision: pretrained image models that install here, as mechscope models (feature visualisation builds on them)."""

from .models import (
    IMAGE_SIZE,
    VISION_MODELS,
    ScaledInput,
    imagenet_labels,
    load_vision,
    sample_image,
)

__all__ = [
    "IMAGE_SIZE",
    "VISION_MODELS",
    "ScaledInput",
    "imagenet_labels",
    "load_vision",
    "sample_image",
]
