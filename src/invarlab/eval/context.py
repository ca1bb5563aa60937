"""What every evaluation of a run needs, loaded once and lazily: the encoders (``model`` and the ``random``
floor), the world's evaluation datasets, and cached features of any (representation, dataset, layer)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from invarlab.errors import ConfigError
from invarlab.eval.config import EvalConfig
from invarlab.eval.features import Encoder, cached_features, encoder_from_checkpoint, random_encoder

__all__ = ["EvalContext"]

log = logging.getLogger(__name__)


class EvalContext:
    """Evaluations of ``run_dir`` (its newest checkpoint, or ``checkpoint`` when given) under ``cfg``.

    Results, figures and the feature cache all go into ``run_dir``."""

    def __init__(
        self,
        run_dir: str | Path,
        cfg: EvalConfig,
        checkpoint: str | Path | None = None,
        arch: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.arch = {"name": arch} if arch else None
        if self.checkpoint is None and not self.run_dir.is_dir():
            raise ConfigError(
                f"{self.run_dir}: no such run folder (train one: invarlab train run_dir={run_dir})"
            )
        self.device = _device(cfg.device)
        self._encoders: dict[str, Encoder] = {}
        self._datasets: dict[str, Any] = {}
        self._kinds: dict[str, str] | None = None
        self.run_config = _read_run_config(self.run_dir)

    # ------------------------------------------------------------------------------------------- encoders
    def encoder(self, representation: str) -> Encoder:
        if representation not in self._encoders:
            if representation == "model":
                enc = encoder_from_checkpoint(self.checkpoint or self.run_dir, self.arch)
            elif representation == "random":
                enc = random_encoder(self.encoder("model"), self.cfg.random_seed)
            else:
                raise ConfigError(f"unknown representation {representation!r}: use model or random")
            self._encoders[representation] = enc.to(self.device)
        return self._encoders[representation]

    @property
    def image_size(self) -> int | None:
        """``cfg.image_size``, else the run's training view size, else None (native resolution)."""
        if self.cfg.image_size:
            return self.cfg.image_size
        size = (self.run_config.get("method") or {}).get("view_size")
        return int(size) if size else None

    # ------------------------------------------------------------------------------------------- datasets
    def _preset(self) -> Any:
        from invarlab.config import load_config
        from invarlab.world.config import WorldPreset

        return load_config(WorldPreset, self.cfg.world_preset, self.cfg.world_overrides, group="world")

    def kind(self, name: str) -> str:
        """The world dataset kind (``viewpoint``, ``object_centric``, ...) of dataset ``name``."""
        if self._kinds is None:
            self._kinds = {n: s.kind for n, s in self._preset().datasets.items()}
        if name not in self._kinds:
            raise ConfigError(
                f"world preset '{self.cfg.world_preset}' has no dataset '{name}'; it has: {', '.join(self._kinds)}"
            )
        return self._kinds[name]

    def dataset(self, name: str) -> Any:
        """A :class:`invarlab.data.WorldDataset` over dataset ``name`` of the world preset (rendered or read
        from the world cache); labels are categories."""
        if name not in self._datasets:
            from invarlab.data import WorldDataset
            from invarlab.world.api import render_datasets

            self.kind(name)
            preset = self._preset()
            preset = dataclasses.replace(preset, datasets={name: preset.datasets[name]})
            rendered = render_datasets(preset)[name].dataset
            self._datasets[name] = WorldDataset(rendered)
        return self._datasets[name]

    def features(self, representation: str, name: str, layer: str = "pooled") -> tuple[Tensor, Tensor]:
        """Cached ``(features, labels)`` of dataset ``name`` under ``representation``."""
        return cached_features(
            self.run_dir,
            self.encoder(representation),
            self.dataset(name),
            name,
            layer,
            image_size=self.image_size,
            batch_size=self.cfg.batch_size,
            device=self.device,
        )

    def featurize(self, representation: str):
        """``float images in [0, 1] (B, 3, H, W) -> pooled features``: for evaluations that alter images
        (corruptions) before the network."""
        from invarlab.eval.features import forward_pooled

        enc = self.encoder(representation)
        return lambda x: forward_pooled(enc, x.to(self.device), self.image_size).cpu()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(
            f"device={name!r} is not a torch device ({err}); use auto, cpu or cuda[:N]"
        ) from None


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        log.warning("%s: unreadable (%s); evaluating at the datasets' own resolution", path, err)
        return {}
    return data if isinstance(data, dict) else {}
