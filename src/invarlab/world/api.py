"""What the CLI calls: render a preset's datasets into the cache, and write its contact sheets."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .config import WorldPreset
from .datasets import cache_identity, iter_batches, num_images
from .renderer import World
from .sheets import dataset_sheet, factor_sheet, video_strip
from .store import RenderedDataset, get_or_render

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    name: str
    dataset: RenderedDataset
    hit: bool
    seconds: float

    @property
    def path(self) -> Path:
        return self.dataset.path


def render_datasets(preset: WorldPreset, progress=None) -> dict[str, Rendered]:
    """Render (or find in the cache) every dataset of a preset."""
    world = World(preset.world)
    out = {}
    for name, spec in preset.datasets.items():
        start = time.perf_counter()
        ds, hit = get_or_render(
            cache_identity(spec, preset.world),
            num_images(spec),
            lambda spec=spec: iter_batches(spec, world),
            preset.cache_dir or None,
        )
        out[name] = Rendered(name, ds, hit, time.perf_counter() - start)
        log.info(
            "%s: %d images, %s (%.1f s)", name, len(ds), "cache hit" if hit else "rendered", out[name].seconds
        )
    return out


def render_preset(preset: WorldPreset) -> dict[str, Rendered]:
    return render_datasets(preset)


def show_preset(preset: WorldPreset, out_dir: Path) -> list[Path]:
    """Contact sheets: factor sweeps, one sheet per dataset (clips as a video strip)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [factor_sheet(World(preset.world), out_dir / "factors.png")]
    for name, r in render_datasets(preset).items():
        spec = preset.datasets[name]
        if spec.kind == "clips":
            paths.append(video_strip(r.dataset, out_dir / f"{name}.png"))
        else:
            paths.append(dataset_sheet(r.dataset, out_dir / f"{name}.png", f"{name} ({spec.kind})"))
    return paths
