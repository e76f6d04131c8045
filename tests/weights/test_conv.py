"""Expanded weights between conv layers, checked against the convolution weights themselves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mechscope import Model
from mechscope.errors import InputError, MechscopeError
from mechscope.weights import ConvWeights, expanded_weights, linearised


class Block(nn.Module):
    """1×1 expand → ReLU → 3×3 → BN, plus a skip: an inverted residual in miniature."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.expand, self.act = nn.Conv2d(c, 2 * c, 1, bias=False), nn.ReLU6()
        self.conv, self.bn = nn.Conv2d(2 * c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return x + self.bn(self.conv(self.act(self.expand(x))))


@pytest.fixture(scope="module")
def cnn() -> Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), Block(6), nn.MaxPool2d(2), Block(6))  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            (
                m.running_mean.uniform_(-1, 1),
                m.running_var.uniform_(0.5, 2),
                m.weight.data.uniform_(0.5, 2),
            )
    return Model(net, name="tiny-cnn")


def test_adjacent_layers_give_the_convolution_kernel(cnn):
    w = expanded_weights(cnn, "0", "2", unit=4, size=16)
    # the ReLU between them is linearised: the map is conv 2's kernel into channel 4
    assert isinstance(w, ConvWeights) and w.maps.shape == (4, 3, 3)
    torch.testing.assert_close(w.maps, cnn.hf[2].weight[4].detach())
    assert w.top(1) == [int(w.excitation.argmax())]
    assert (w.excitation >= 0).all() and (w.inhibition >= 0).all()


def test_through_a_residual_block_the_weights_are_the_product_plus_the_skip(cnn):
    w = expanded_weights(cnn, "2", "4", unit=1, size=16)
    b = cnn.hf[4]
    scale = (b.bn.weight / (b.bn.running_var + b.bn.eps).sqrt()).detach()
    # conv[1] (3×3 over 2c) · expand (1×1): kernel[c_in, y, x] = Σ_m conv[1, m, y, x] expand[m, c_in]
    expected = (
        torch.einsum("myx,mc->cyx", b.conv.weight[1], b.expand.weight[:, :, 0, 0]).detach()
        * scale[1]
    )
    expected[1, 1, 1] += 1.0  # the skip
    torch.testing.assert_close(w.maps, expected)
    # across the max-pool (as an average pool) and a second block: a wider field
    far = expanded_weights(cnn, "2", "6", unit=0, size=16)
    assert far.maps.shape[1] > 3 and far.maps.shape[0] == 6


def test_linearised_restores_the_modules(cnn):
    before = [type(m) for m in cnn.hf.modules()]
    with linearised(cnn.hf):
        assert not any(isinstance(m, (nn.ReLU, nn.ReLU6, nn.MaxPool2d)) for m in cnn.hf.modules())
    assert [type(m) for m in cnn.hf.modules()] == before


def test_functional_nonlinearities_are_reported():
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    with pytest.raises(MechscopeError, match="not linear"):
        expanded_weights(Model(Gated()), "a", "b", 0, size=12)


def test_save_load_figure_and_bad_input(cnn, tmp_path):
    w = expanded_weights(cnn, "2", "4", unit=2, size=16)
    back = ConvWeights.load(w.save(tmp_path / "w.safetensors"))
    assert torch.equal(back.maps, w.maps) and (back.src, back.dst, back.unit) == ("2", "4", 2)
    flat = ConvWeights.load(tmp_path / "w.safetensors", arrays="numpy")
    assert flat.table(2) == w.table(2) and flat.top(3, "inhibition") == w.top(3, "inhibition")
    assert "2 → 4:2" in repr(w)
    images = {c: torch.rand(3, 8, 8) for c in range(6)}
    out = w.figure(tmp_path / "fig", images=images, unit_image=torch.rand(3, 8, 8), k=3)["fig"]
    assert all(p.stat().st_size > 0 for p in out.values()) and set(out) == {"png", "svg", "html"}
    assert [r["kind"] for r in w.table(2)] == ["excitation"] * 2 + ["inhibition"] * 2
    with pytest.raises(InputError, match="6 channels"):
        expanded_weights(cnn, "2", "4", unit=9, size=16)
    with pytest.raises(InputError, match="must come before"):
        expanded_weights(cnn, "4", "2", unit=0, size=16)
    with pytest.raises(InputError, match="not a readable result file"):
        (tmp_path / "x.safetensors").write_bytes(b"junk")
        ConvWeights.load(tmp_path / "x.safetensors")
