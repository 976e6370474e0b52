"""Batched two-view augmentation: per-sample parameters, recipe probabilities, shapes, 1-channel input."""

import pytest
import torch

from bttui.train.augment import (
    RECIPES,
    LightAugment,
    TwoViewAugment,
    apply_view,
    eval_transform,
    sample_view_params,
    to_float,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_parameters_differ_per_sample():
    aug = TwoViewAugment("barlow_twins", 32, [0.5], [0.25])
    p1, p2 = aug.sample(16, 32, 32, _gen())
    boxes = p1["box"]
    assert len({tuple(b.tolist()) for b in boxes}) == 16
    assert not torch.equal(p1["box"], p2["box"])
    assert 0 < int(p1["flip"].sum()) < 16
    assert len(set(p1["sigma"].tolist())) == 16
    # Crops stay inside the image and cover 8%..100% of it.
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 32 + 1e-4).all() and (y0 + h <= 32 + 1e-4).all()
    area = (w * h) / (32 * 32)
    assert (area >= 0.08 - 1e-4).all() and (area <= 1 + 1e-4).all()


@pytest.mark.parametrize("recipe", ["barlow_twins", "simclr"])
def test_probabilities_follow_the_recipe(recipe):
    n = 20000
    g = _gen(1)
    for view in RECIPES[recipe]:
        p = sample_view_params(view, n, 32, 32, g)
        for key, expected in (("blur", view.blur_p), ("solarize", view.solarize_p), ("gray", view.gray_p),
                              ("flip", view.flip_p), ("jitter", view.jitter_p)):
            assert float(p[key].float().mean()) == pytest.approx(expected, abs=0.015), key
        assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
        assert p["hue"].abs().max() <= 0.1 and p["brightness"].min() >= 0.6 and p["brightness"].max() <= 1.4
    v1, v2 = RECIPES[recipe]
    if recipe == "barlow_twins":
        assert (v1.blur_p, v2.blur_p, v1.solarize_p, v2.solarize_p) == (1.0, 0.1, 0.0, 0.2)
    else:
        assert (v1.blur_p, v2.blur_p, v1.solarize_p, v2.solarize_p) == (0.5, 0.5, 0.0, 0.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_outputs_shape_dtype_and_determinism(channels):
    x = torch.randint(0, 256, (6, channels, 32, 32), dtype=torch.uint8)
    aug = TwoViewAugment("barlow_twins", 24, [0.4] * channels, [0.2] * channels)
    v1, v2 = aug(x, _gen(3))
    assert v1.shape == (6, 3, 24, 24) and v2.shape == (6, 3, 24, 24)
    assert v1.dtype == torch.float32 and torch.isfinite(v1).all() and torch.isfinite(v2).all()
    w1, _ = aug(x, _gen(3))
    assert torch.equal(v1, w1)
    u1, _ = aug(x, _gen(4))
    assert not torch.equal(v1, u1)
    # Undo the normalisation: values lie in [0, 1].
    raw = v1 * 0.2 + 0.4
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    if channels == 1:
        # One channel is replicated after the colour operations: the three channels are equal.
        assert torch.equal(v1[:, 0], v1[:, 1]) and torch.equal(v1[:, 1], v1[:, 2])


def _identity_params(n, size):
    p = sample_view_params(RECIPES["barlow_twins"][0], n, size, size, _gen())
    p["box"] = torch.tensor([[0.0, 0.0, size, size]] * n)
    for key in ("flip", "jitter", "gray", "blur", "solarize"):
        p[key] = torch.zeros(n, dtype=torch.bool)
    return p


def test_each_operation_acts_only_where_drawn():
    x = to_float(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8))
    p = _identity_params(4, 16)
    assert torch.allclose(apply_view(x.clone(), p, 16), x, atol=1e-6)
    p["flip"][1] = True
    p["solarize"][2] = True
    p["gray"][3] = True
    out = apply_view(x.clone(), p, 16)
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose(out[1], x[1].flip(-1), atol=1e-6)
    assert torch.allclose(out[2], torch.where(x[2] >= 127.5 / 255, 1 - x[2], x[2]), atol=1e-6)
    assert torch.allclose(out[3, 0], out[3, 1]) and torch.allclose(out[3, 1], out[3, 2])
    p = _identity_params(4, 16)
    p["blur"][:] = True
    p["sigma"][:] = 2.0
    blurred = apply_view(x.clone(), p, 16)
    assert blurred.std() < x.std() * 0.7  # noise images lose most of their variance under a 2-px blur


def test_light_and_eval_transforms():
    x = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    out = LightAugment(32, [0.5], [0.5])(x, _gen())
    assert out.shape == (5, 3, 32, 32)
    ev = eval_transform(x, [0.5], [0.5])
    expected = (x.float() / 255 - 0.5) / 0.5
    assert torch.allclose(ev[:, 2:3], expected, atol=1e-6)
    assert eval_transform(x, [0.5], [0.5], size=16).shape == (5, 3, 16, 16)
