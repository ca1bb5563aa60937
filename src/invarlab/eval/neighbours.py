"""Nearest-neighbour retrieval by cosine similarity, and the grid that shows it: each row a query and its
nearest training images, framed green when the neighbour shares the query's class and red otherwise."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["nearest_neighbours", "retrieval_grid"]

_GREEN, _RED, _GREY = (40, 170, 70), (210, 50, 40), (90, 90, 90)


@torch.no_grad()
def nearest_neighbours(bank: Tensor, queries: Tensor, k: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """``(indices (Q, k), similarities (Q, k))`` of the ``k`` bank rows with the highest cosine similarity
    ``<q/|q|, b/|b|>`` to each query, most similar first (``k`` capped at the bank size)."""
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(
            f"bank (N, D) and queries (Q, D) must share D: {tuple(bank.shape)}, {tuple(queries.shape)}"
        )
    b = F.normalize(bank.float(), dim=1)
    q = F.normalize(queries.float(), dim=1)
    k = min(k, b.shape[0])
    sims, idx = [], []
    for start in range(0, q.shape[0], chunk):
        s, i = (q[start : start + chunk] @ b.T).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    return torch.cat(idx), torch.cat(sims)


def _tile(image: Tensor, size: int, frame: tuple[int, int, int], border: int) -> np.ndarray:
    """uint8 (3, H, W) -> (size + 2 border)^2 RGB array, upscaled without smoothing, framed."""
    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).resize((size, size), Image.NEAREST)
    out = np.empty((size + 2 * border, size + 2 * border, 3), dtype=np.uint8)
    out[:] = frame
    out[border : border + size, border : border + size] = np.asarray(pil)
    return out


def retrieval_grid(
    queries: Sequence[Tensor],
    neighbours: Sequence[Sequence[Tensor]],
    same_class: Tensor,
    path: str | os.PathLike[str],
    tile: int = 64,
    border: int = 3,
    gap: int = 12,
) -> Path:
    """Write a PNG: row r is ``queries[r]`` (grey frame), a gap, then ``neighbours[r]`` framed by
    ``same_class[r, j]`` (green) or not (red). Images are uint8 ``(3, H, W)``; returns the path."""
    rows = []
    for q, row, hits in zip(queries, neighbours, same_class, strict=True):
        cells = [_tile(q, tile, _GREY, border), np.full((tile + 2 * border, gap, 3), 255, np.uint8)]
        cells += [
            _tile(im, tile, _GREEN if bool(h) else _RED, border) for im, h in zip(row, hits, strict=True)
        ]
        rows.append(np.concatenate(cells, axis=1))
    if not rows:
        raise ValueError("no queries: nothing to draw")
    width = max(r.shape[1] for r in rows)
    spacer = np.full((border, width, 3), 255, np.uint8)
    stacked = []
    for r in rows:
        pad = np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)
        stacked += [np.concatenate([r, pad], axis=1), spacer]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(np.concatenate(stacked[:-1], axis=0)).save(tmp)
    os.replace(tmp, path)
    return path
