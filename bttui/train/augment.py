"""Batched image augmentations on the training device, parameters drawn per sample.

The Barlow Twins view recipe (Zbontar et al. 2021, arXiv:2103.03230, after BYOL's):
random resized crop, horizontal flip, colour jitter (p 0.8), grayscale (p 0.2),
Gaussian blur (p 1.0 / 0.1) and solarization (p 0.0 / 0.2) for view 1 / view 2.
torchvision's v2 transforms on a batch tensor draw one parameter set for the whole
batch; here every sample gets its own, drawn from a caller-owned ``torch.Generator``
on the CPU (so a seeded generator reproduces the views exactly) and applied with
vectorised tensor ops (``affine_grid``/``grid_sample``, grouped convolutions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601-2 luma, the weights PIL and torchvision use for grayscale.
LUMA = (0.2989, 0.587, 0.114)
# Blur sigma range in pixels (the reference's PIL radius range) and the kernel radius
# that covers 3 sigma of the widest blur.
SIGMA_RANGE = (0.1, 2.0)
BLUR_RADIUS = 6
CROP_ATTEMPTS = 10


@dataclass(frozen=True)
class ViewRecipe:
    """Probabilities and ranges for one view."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 1.0
    solarize_p: float = 0.0


RECIPES: dict[str, tuple[ViewRecipe, ViewRecipe]] = {
    # Asymmetric views of the reference code.
    "barlow_twins": (ViewRecipe(blur_p=1.0, solarize_p=0.0), ViewRecipe(blur_p=0.1, solarize_p=0.2)),
    # What the authors' code used (SimCLR-style): both views alike, blur p 0.5, no solarization.
    "simclr": (ViewRecipe(blur_p=0.5, solarize_p=0.0), ViewRecipe(blur_p=0.5, solarize_p=0.0)),
}
# Light fine-tuning augmentation: a gentle crop and a flip, no colour changes.
LIGHT = ViewRecipe(crop_scale=(0.5, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _bernoulli(n: int, p: float, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g) < p


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                      g: torch.Generator | None) -> Tensor:
    """RandomResizedCrop boxes ``[n, 4]`` as (x0, y0, w, h) in pixels, torchvision's rule vectorised.

    Up to 10 (area, aspect) draws per sample; the first that fits is used, otherwise
    the central crop clamped to the ratio range (torchvision's fallback).
    """
    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, CROP_ATTEMPTS, generator=g))
    log_r = (math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, CROP_ATTEMPTS, generator=g))
    aspect = torch.exp(log_r)
    w = torch.sqrt(target * aspect)
    h = torch.sqrt(target / aspect)
    ok = (w <= width) & (h <= height) & (w > 0) & (h > 0)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    any_ok = ok.any(dim=1)
    w = w.gather(1, first[:, None])[:, 0]
    h = h.gather(1, first[:, None])[:, 0]
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = height * ratio[1], float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, generator=g)
    x0 = u[:, 0] * (width - w)
    y0 = u[:, 1] * (height - h)
    return torch.stack([x0, y0, w, h], dim=1)


def sample_view_params(recipe: ViewRecipe, n: int, height: int, width: int, g: torch.Generator | None) -> dict[str, Tensor]:
    """Every random parameter of one view for ``n`` samples (CPU tensors).

    All parameters are always drawn, applied or not, so the generator advances by the
    same amount whatever the outcomes (a resumed run sees the same stream).
    """
    return {
        "box": sample_crop_boxes(n, height, width, recipe.crop_scale, recipe.crop_ratio, g),
        "flip": _bernoulli(n, recipe.flip_p, g),
        "jitter": _bernoulli(n, recipe.jitter_p, g),
        "brightness": _uniform(n, max(0.0, 1 - recipe.brightness), 1 + recipe.brightness, g),
        "contrast": _uniform(n, max(0.0, 1 - recipe.contrast), 1 + recipe.contrast, g),
        "saturation": _uniform(n, max(0.0, 1 - recipe.saturation), 1 + recipe.saturation, g),
        "hue": _uniform(n, -recipe.hue, recipe.hue, g),
        # ColorJitter applies its four operations in a random order per call: one order per sample.
        "order": torch.argsort(torch.rand(n, 4, generator=g), dim=1),
        "gray": _bernoulli(n, recipe.gray_p, g),
        "blur": _bernoulli(n, recipe.blur_p, g),
        "sigma": _uniform(n, SIGMA_RANGE[0], SIGMA_RANGE[1], g),
        "solarize": _bernoulli(n, recipe.solarize_p, g),
    }


# ---------------------------------------------------------------------------- pixel operations
def _gray(x: Tensor) -> Tensor:
    """[b, 3, H, W] -> [b, 1, H, W] luma."""
    w = x.new_tensor(LUMA).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=1)
    maxc = x.max(dim=1).values
    minc = x.min(dim=1).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(dim=1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    r = torch.stack((v, q, p, p, t, v), dim=1).gather(1, i[:, None])
    g = torch.stack((t, v, v, q, p, p), dim=1).gather(1, i[:, None])
    b = torch.stack((p, p, t, v, v, q), dim=1).gather(1, i[:, None])
    return torch.cat((r, g, b), dim=1)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    lum = _gray(x) if x.shape[1] == 3 else x
    mean = lum.mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _gray(x).expand_as(x), f)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with one sigma (pixels) per sample; reflect padding."""
    b, c, hgt, wid = x.shape
    t = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma.to(x)[:, None] ** 2))
    k = k / k.sum(dim=1, keepdim=True)
    k = k.repeat_interleave(c, dim=0)  # [b*c, K]: one kernel per (sample, channel) group
    mode = "reflect" if min(hgt, wid) > BLUR_RADIUS else "replicate"
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(F.pad(y, (BLUR_RADIUS, BLUR_RADIUS, 0, 0), mode=mode), k[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, BLUR_RADIUS, BLUR_RADIUS), mode=mode), k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, hgt, wid)


def solarize(x: Tensor) -> Tensor:
    # PIL's ImageOps.solarize(threshold=128) inverts every value >= 128. The threshold sits
    # half a level lower (127.5) so a 128 that resampling turned into 127.9999 still flips.
    return torch.where(x >= 127.5 / 255, 1.0 - x, x)


def crop_resize_flip(x: Tensor, box: Tensor, flip: Tensor, size: int) -> Tensor:
    """Per-sample crop (x0, y0, w, h pixels), resize to ``size`` and optional horizontal flip."""
    b, _, hgt, wid = x.shape
    box = box.to(device=x.device, dtype=x.dtype)
    x0, y0, w, h = box.unbind(dim=1)
    # align_corners=False: normalised -1..1 spans the outer pixel edges.
    cx = 2 * (x0 + w / 2) / wid - 1
    cy = 2 * (y0 + h / 2) / hgt - 1
    sx = (w / wid) * torch.where(flip.to(x.device), -1.0, 1.0).to(x.dtype)
    sy = h / hgt
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return grid_sample_clamped(x, grid)


def grid_sample_clamped(x: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp_(0.0, 1.0)


def to_float(x: Tensor) -> Tensor:
    """uint8 [B, C, H, W] -> float32 in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Replicate 1-channel images to 3 channels, then subtract mean and divide by std per channel.

    ``mean``/``std`` have 1 or 3 entries (1 broadcasts over the three channels).
    """
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    m = torch.as_tensor(list(mean), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(list(std), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def apply_view(x: Tensor, p: dict[str, Tensor], size: int) -> Tensor:
    """Apply one view's sampled parameters to float images in [0, 1] (1 or 3 channels)."""
    dev = x.device
    x = crop_resize_flip(x, p["box"], p["flip"], size)
    rgb = x.shape[1] == 3
    jitter = p["jitter"].to(dev)
    if bool(jitter.any()):
        ops = ("brightness", "contrast", "saturation", "hue")
        for pos in range(4):
            for op_id, op in enumerate(ops):
                if not rgb and op in ("saturation", "hue"):
                    continue  # colour operations mean nothing on one channel
                sel = (jitter & (p["order"][:, pos].to(dev) == op_id)).nonzero(as_tuple=True)[0]
                if sel.numel() == 0:
                    continue
                f = p[op].to(dev, x.dtype)[sel]
                if op == "brightness":
                    x[sel] = adjust_brightness(x[sel], f)
                elif op == "contrast":
                    x[sel] = adjust_contrast(x[sel], f)
                elif op == "saturation":
                    x[sel] = adjust_saturation(x[sel], f)
                else:
                    x[sel] = adjust_hue(x[sel], f)
    if rgb:
        sel = p["gray"].to(dev).nonzero(as_tuple=True)[0]
        if sel.numel():
            x[sel] = _gray(x[sel]).expand(-1, 3, -1, -1)
    sel = p["blur"].to(dev).nonzero(as_tuple=True)[0]
    if sel.numel():
        x[sel] = gaussian_blur(x[sel], p["sigma"].to(dev)[sel])
    sel = p["solarize"].to(dev).nonzero(as_tuple=True)[0]
    if sel.numel():
        x[sel] = solarize(x[sel])
    return x


def _rows(params: dict[str, Tensor], lo: int, hi: int) -> dict[str, Tensor]:
    return {k: v[lo:hi] for k, v in params.items()}


class TwoViewAugment:
    """Two augmented, normalised 3-channel views of a uint8 batch ``[B, C, H, W]`` (C = 1 or 3)."""

    def __init__(self, recipe: str, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown augmentation recipe {recipe!r}; valid: {', '.join(RECIPES)}")
        self.recipe = recipe
        self.views = RECIPES[recipe]
        self.image_size = int(image_size)
        self.mean = list(mean)
        self.std = list(std)

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None) -> tuple[dict, dict]:
        """The per-sample parameters of both views (what ``__call__`` applies)."""
        return (sample_view_params(self.views[0], batch, height, width, generator),
                sample_view_params(self.views[1], batch, height, width, generator))

    def __call__(self, images: Tensor, generator: torch.Generator | None = None,
                 shard: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Views of ``images``. ``shard=(rank, world_size)``: ``images`` is rank's slice of a global batch of
        ``world_size * B``; parameters are drawn for the global batch (every rank advances the shared
        generator alike) and this slice's rows kept, so the views do not depend on the number of ranks.
        """
        b, _, h, w = images.shape
        if shard is None or shard[1] <= 1:
            p1, p2 = self.sample(b, h, w, generator)
        else:
            rank, world = shard
            g1, g2 = self.sample(b * world, h, w, generator)
            p1, p2 = (_rows(g1, rank * b, (rank + 1) * b), _rows(g2, rank * b, (rank + 1) * b))
        x = to_float(images)
        v1 = normalize(apply_view(x, p1, self.image_size), self.mean, self.std)
        v2 = normalize(apply_view(x, p2, self.image_size), self.mean, self.std)
        return v1.contiguous(), v2.contiguous()


class LightAugment:
    """Fine-tuning augmentation: random resized crop (scale 0.5-1) and horizontal flip, then normalise."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.image_size = int(image_size)
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, _, h, w = images.shape
        p = sample_view_params(LIGHT, b, h, w, generator)
        x = crop_resize_flip(to_float(images), p["box"], p["flip"], self.image_size)
        return normalize(x, self.mean, self.std).contiguous()


def eval_transform(images: Tensor, mean: Sequence[float], std: Sequence[float], size: int | None = None) -> Tensor:
    """Evaluation input: float, optional resize to ``size``, 3 channels, normalised."""
    x = to_float(images)
    if size is not None and (x.shape[-2] != size or x.shape[-1] != size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalize(x, mean, std).contiguous()
