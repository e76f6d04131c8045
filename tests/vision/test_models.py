"""Vision models from the registries: input scaling, loading, labels and sample photographs."""

from __future__ import annotations

import pytest
import torch

from mechscope import Model
from mechscope.errors import InputError
from mechscope.vision import ScaledInput, imagenet_labels, load_vision, sample_image


def test_scaled_input_scales_before_the_network():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    wrapped = Model(ScaledInput(net))
    x = torch.rand(2, 3, 8, 8)
    out = wrapped.run(x, save=["net.0"])
    torch.testing.assert_close(out.cache["net.0"], net[0]((x * 255 - 127) / 128))
    torch.testing.assert_close(out.logits, net((x * 255 - 127) / 128))


def test_labels_and_sample_images():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench"
    image = sample_image("coffee", 64)
    assert image.shape == (3, 64, 64) and 0 <= float(image.min()) < float(image.max()) <= 1
    assert sample_image("coffee", 64, crop=True).shape == (3, 64, 64)
    with pytest.raises(InputError, match="no sample image 'nope'; found: .*chelsea"):
        sample_image("nope")
    with pytest.raises(InputError, match="unknown vision model"):
        load_vision("inception-v1")


@pytest.mark.model
def test_efficientnet_lite0_recognises_the_sample_photographs():
    model = load_vision()
    labels = imagenet_labels()
    images = torch.stack([sample_image("chelsea"), sample_image("coffee")])
    out = model.run(images, save=["net._blocks.5", "net._conv_head"])
    probs = out.logits.softmax(-1)
    assert [labels[int(i)] for i in probs.argmax(-1)] == ["Egyptian Mau", "espresso"]
    assert float(probs[0].max()) > 0.7 and float(probs[1].max()) > 0.8
    assert out.cache["net._blocks.5"].shape == (2, 80, 14, 14)
    assert out.cache["net._conv_head"].shape == (2, 1280, 7, 7)
