"""Vision models from the registries: input scaling, loading, labels and sample photographs."""

from __future__ import annotations

import pytest
import torch

from mechscope import Model
from mechscope.errors import InputError, ModelLoadError
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


def test_googlenet_takes_a_torchvision_layout_state_dict_from_a_file(tmp_path):
    from mechscope.vision import GoogLeNet

    torch.manual_seed(0)
    net = GoogLeNet().eval()
    for m in net.modules():  # non-trivial batch-norm statistics, as in trained weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    state = net.state_dict()
    assert (
        "inception4c.branch2.1.conv.weight" in state
        and "inception4c.branch4.1.bn.running_var" in state
    )
    assert (
        len(state) == 344
    )  # torchvision's googlenet without its aux classifiers has these 344 entries
    aux = {"aux1.conv.conv.weight": torch.zeros(128, 512, 1, 1)}  # dropped on load
    path = tmp_path / "googlenet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in {**state, **aux}.items()}}, path)
    model = load_vision("googlenet", weights=path)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.hf(x), net(2 * x - 1))
    out = model.run(x, save=["net.inception4c"])
    assert out.cache["net.inception4c"].shape == (1, 512, 14, 14)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "g.safetensors"))
    assert load_vision("inceptionv1", weights=tmp_path / "g.safetensors").source.endswith(
        "g.safetensors"
    )
    with pytest.raises(InputError, match="no built-in weights"):
        load_vision("googlenet")
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(ModelLoadError, match="does not fit GoogLeNet"):
        load_vision("googlenet", weights=bad)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read .*junk.pth as weights"):
        load_vision("googlenet", weights=tmp_path / "junk.pth")
