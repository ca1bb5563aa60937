"""PIRL's jigsaw transform: a random crop of the image cut into a 3 x 3 grid, one patch per cell, shuffled.

For each image (Misra & van der Maaten 2020, §4.1; sizes [MEM]):

1. a RandomResizedCrop box ``(top, left, h, w)`` of the source and a horizontal flip, as a view draws them;
2. the box is cut into ``g x g`` cells of ``h / g x w / g``; in each cell a patch of ``f h / g x f w / g``
   (``f`` = ``patch_fraction``, 64 of 85 px in PIRL) is placed uniformly at random, so neighbouring patches
   never share pixels at their borders (no edge-continuity shortcut);
3. each patch is resized to ``patch_size`` and gets its **own** photometric parameters (colour jitter,
   grayscale, blur: an independent draw of the view recipe per patch), then is normalised;
4. the patches are shuffled by a uniform random permutation ``π`` per image:
   ``patches[b, j] = grid[b, π_b(j)]`` with ``grid`` in row-major order of the (flipped) crop.

With a flip, grid column ``c`` of the output reads source cell column ``g - 1 - c`` and every patch is
mirrored, which is exactly the grid of the mirrored crop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from invarlab.views.params import bernoulli, sample_crop_boxes
from invarlab.views.recipes import ViewConfig, apply_view, sample_view_params

__all__ = ["JigsawParams", "jigsaw_views", "sample_jigsaw_boxes"]


@dataclass(frozen=True)
class JigsawParams:
    """What one jigsaw draw did: ``boxes`` ``(B, g*g, 4)`` (top, left, height, width in source pixels, grid
    order), ``flip`` ``(B,)``, ``perm`` ``(B, g*g)`` with ``patches[b, j] = grid[b, perm[b, j]]``."""

    boxes: Tensor
    flip: Tensor
    perm: Tensor
    grid: int

    def inverse_perm(self) -> Tensor:
        """``π^{-1}``: ``grid[b, i] = patches[b, inverse[b, i]]``."""
        return torch.argsort(self.perm, dim=1)


def sample_jigsaw_boxes(
    n: int,
    height: int,
    width: int,
    config: ViewConfig,
    generator: torch.Generator | None,
    grid: int = 3,
    patch_fraction: float = 0.75,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(boxes (n, grid², 4), flip (n,), perm (n, grid²))`` on the generator's device (see module docstring).

    Box corners are whole pixels: ``top = floor(t0 + r h/g + dy)`` with ``dy ~ U[0, h/g - ph]``,
    ``ph = max(1, floor(f h / g))``, and likewise for columns.
    """
    if not 0 < patch_fraction <= 1:
        raise ValueError(f"patch_fraction must be in (0, 1], got {patch_fraction}")
    g = generator
    dev = g.device if g is not None else torch.device("cpu")
    crop = sample_crop_boxes(n, height, width, config.scale, config.ratio, g).to(dev).double()
    flip = bernoulli(n, config.flip_p, g).to(dev)
    offsets = torch.rand(n, grid * grid, 2, generator=g, device=dev, dtype=torch.float64)
    perm = torch.argsort(torch.rand(n, grid * grid, generator=g, device=dev), dim=1)
    t0, l0, h, w = crop.unbind(1)
    cell_h, cell_w = (h / grid)[:, None], (w / grid)[:, None]
    ph = torch.clamp(torch.floor(cell_h * patch_fraction), min=1.0)
    pw = torch.clamp(torch.floor(cell_w * patch_fraction), min=1.0)
    k = torch.arange(grid * grid, device=dev)
    row, col = (k // grid).double()[None], (k % grid).double()[None]
    src_col = torch.where(flip[:, None], grid - 1 - col, col)
    top = torch.floor(t0[:, None] + row * cell_h + offsets[..., 0] * (cell_h - ph).clamp(min=0))
    left = torch.floor(l0[:, None] + src_col * cell_w + offsets[..., 1] * (cell_w - pw).clamp(min=0))
    boxes = torch.stack([top, left, ph.expand_as(top), pw.expand_as(left)], dim=-1)
    return boxes.float(), flip, perm


def jigsaw_views(
    images: Tensor,
    patch_size: int,
    generator: torch.Generator | None,
    config: ViewConfig,
    grid: int = 3,
    patch_fraction: float = 0.75,
    shuffle: bool = True,
) -> tuple[Tensor, JigsawParams]:
    """Jigsaw patches ``(B, grid², 3, patch_size, patch_size)`` of uint8 ``images`` ``(B, 3, H, W)``.

    ``shuffle=False`` returns the same patches (the generator is used identically) in grid order, which is
    what tests and visualisations compare against.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    b, _, height, width = images.shape
    k = grid * grid
    boxes, flip, perm = sample_jigsaw_boxes(b, height, width, config, generator, grid, patch_fraction)
    # One independent photometric draw per patch; its crop box and flip are replaced by the grid's.
    photo = sample_view_params(config, b * k, (height, width), patch_size, generator, images.device)
    photo = dataclasses.replace(
        photo,
        boxes=boxes.reshape(b * k, 4).to(images.device),
        flip=flip.repeat_interleave(k).to(images.device),
        rotation=torch.zeros_like(photo.rotation),
    )
    patches = apply_view(images.repeat_interleave(k, dim=0), photo).reshape(b, k, 3, patch_size, patch_size)
    perm = perm.to(images.device)
    if shuffle:
        patches = torch.gather(patches, 1, perm.view(b, k, 1, 1, 1).expand_as(patches))
    return patches, JigsawParams(boxes.to(images.device), flip.to(images.device), perm, grid)
