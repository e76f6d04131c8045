"""Feature visualisation: objectives, parameterisations, transforms and rendering on a tiny CNN."""

from __future__ import annotations

import pytest
import torch

from mechscope import Model
from mechscope.errors import InputError
from mechscope.vision import featureviz as fv


@pytest.fixture(scope="module")
def cnn() -> Model:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
    )  # fmt: skip
    return Model(net, name="tiny-cnn")


def test_objectives_read_their_sites_and_compose():
    acts = {"a": torch.randn(2, 4, 5, 5), "b": torch.randn(2, 6)}
    a, b = acts["a"], acts["b"]
    torch.testing.assert_close(fv.channel("a", 1)(acts), a[:, 1].mean((-1, -2)))
    both = fv.channels("a", [3, 0])(acts)
    torch.testing.assert_close(both, torch.stack([a[0, 3].mean(), a[1, 0].mean()]))
    with pytest.raises(InputError, match="batch of 3"):
        fv.channels("a", [0, 1, 2])(acts)
    torch.testing.assert_close(fv.neuron("a", 2)(acts), a[:, 2, 2, 2])
    torch.testing.assert_close(fv.neuron("b", 3)(acts), b[:, 3])
    torch.testing.assert_close(fv.deepdream("a")(acts), (a**2).mean((1, 2, 3)))
    v = torch.randn(4)
    torch.testing.assert_close(fv.direction("a", v)(acts), torch.einsum("bchw,c->b", a, v) / 25)
    combo = fv.channel("a", 1) - 0.5 * fv.neuron("b", 0) + 2.0
    torch.testing.assert_close(combo(acts), a[:, 1].mean((-1, -2)) - 0.5 * b[:, 0] + 2.0)
    assert combo.sites == frozenset({"a", "b"}) and "channel(a:1)" in combo.name
    same = {"a": torch.ones(3, 4, 2, 2)}
    torch.testing.assert_close(fv.diversity("a")(same), -torch.ones(3))
    with pytest.raises(InputError, match="4 channels"):
        fv.direction("a", torch.randn(5))(acts)


def test_parameterisations_give_images_in_the_unit_range():
    g = torch.Generator().manual_seed(0)
    for param in (fv.fourier_image(32, 2, generator=g), fv.pixel_image(32, 2, generator=g)):
        x = param()
        assert (
            x.shape == (2, 3, 32, 32)
            and float(x.detach().min()) > 0
            and float(x.detach().max()) < 1
        )
        x.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in param.params)


def test_transforms_keep_batch_and_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 20)
    assert fv.pad(3)(x, g).shape == (2, 3, 26, 26)
    assert fv.jitter(4)(x, g).shape == (2, 3, 16, 16)
    assert fv.random_scale([0.9, 1.1])(x, g).shape == x.shape
    torch.testing.assert_close(fv.random_rotate([0])(x, g), x, atol=1e-5, rtol=0)
    assert not torch.allclose(fv.random_rotate([30])(x, g), x, atol=1e-2)


def test_render_raises_the_objective_deterministically(cnn):
    obj = fv.channel("2", 5)
    r = fv.render(cnn, obj, size=32, steps=40, lr=0.2, transforms=[], thresholds=(0, 4),
                  progress=False)  # fmt: skip
    assert sorted(r.images) == [0, 4, 40] and r.final.shape == (1, 3, 32, 32)
    score = [float(obj({"2": cnn.run(r.images[s], save=["2"]).cache["2"]})) for s in (0, 40)]
    assert score[1] > score[0] + 0.05  # the random CNN's range is small: -0.11 → 0.00
    # with the standard transforms, the same seed gives the same images
    robust = fv.render(cnn, obj, size=32, steps=5, seed=3, progress=False)
    again = fv.render(cnn, obj, size=32, steps=5, seed=3, progress=False)
    torch.testing.assert_close(again.final, robust.final)
    other = fv.render(cnn, obj, size=32, steps=5, seed=4, progress=False)
    assert not torch.equal(other.final, robust.final)
    with pytest.raises(InputError, match="at least one step"):
        fv.render(cnn, obj, steps=0)


def test_renderings_save_reopen_and_draw_as_strips(cnn, tmp_path):
    r = fv.render(cnn, fv.channel("2", 1), size=16, batch=2, steps=4, thresholds=(0, 2),
                  progress=False)  # fmt: skip
    again = fv.Rendering.load(r.save(tmp_path / "r.safetensors"))
    assert again.objective == r.objective and again.losses == pytest.approx(r.losses)
    assert sorted(again.images) == [0, 2, 4]
    torch.testing.assert_close(again.images[4], r.images[4])
    assert again.images[4].shape == (2, 3, 16, 16) and "2 images of 3×16×16" in repr(r)
    flat = fv.Rendering.load(tmp_path / "r.safetensors", arrays="numpy")
    paths = flat.strip(tmp_path / "strip", labels=["a", "b"])  # draws from numpy arrays too
    assert set(paths) == {"png", "svg", "html"} and all(p.exists() for p in paths.values())
    with pytest.raises(InputError, match="not a readable result file"):
        (tmp_path / "bad.safetensors").write_bytes(b"x")
        fv.Rendering.load(tmp_path / "bad.safetensors")


def test_viz_run_over_several_sites_makes_one_grid_row_per_site(cnn, tmp_path):
    from mechscope.vision.runs import viz_run

    results = viz_run(
        cnn, ["0", "2"], [1, 3], tmp_path / "v", size=16, steps=3, thresholds=(0,), progress=False
    )
    assert [r.final.shape for r in results] == [(2, 3, 16, 16)] * 2
    assert results[0].objective == "channels(0:1,3)" and results[1].objective == "channels(2:1,3)"
    assert (tmp_path / "v" / "rendering-0.safetensors").exists()
    assert all((tmp_path / "v" / "figures" / f"{f}.png").exists() for f in ("grid", "strip"))
    config = (tmp_path / "v" / "config.json").read_text()
    assert '"sites": [' in config and '"site": "0, 2"' in config
