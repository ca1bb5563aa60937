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

    Results, figures and the feature cache all go into ``run_dir``. ``classify_sets`` (``(train, test)``,
    optional) are the classification evaluations' images when ``cfg.classify.dataset`` is not the world,
    instead of reading them from ``cfg.classify``'s folders (``invarlab run`` passes the training run's own
    folder and its monitor split)."""

    def __init__(
        self,
        run_dir: str | Path,
        cfg: EvalConfig,
        checkpoint: str | Path | None = None,
        arch: str | None = None,
        classify_sets: tuple[Any, Any] | None = None,
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
        self._looc: Any = None
        self._representations: list[str] | None = None
        self._classify: tuple[Any, Any] | None = classify_sets
        self._voc: tuple[Any, Any] | None = None
        self.run_config = _read_run_config(self.run_dir)

    # ------------------------------------------------------------------------------------------- encoders
    def encoder(self, representation: str) -> Encoder:
        if representation not in self._encoders:
            if representation == "model":
                enc = encoder_from_checkpoint(self.checkpoint or self.run_dir, self.arch)
            elif representation == "random":
                enc = random_encoder(self.encoder("model"), self.cfg.random_seed)
            else:  # a LooC space or LooC++ (invarlab.eval.spaces)
                from invarlab.eval.spaces import space_encoder

                c = self.cfg.looc
                layer = None if c.layer == "run" else c.layer
                enc = space_encoder(self.encoder("model"), self.looc_heads(), representation, layer, c.with_v)
            self._encoders[representation] = enc.to(self.device)
        return self._encoders[representation]

    def looc_heads(self) -> Any:
        """The run's LooC heads (:func:`invarlab.eval.spaces.load_looc_heads`), read once."""
        if self._looc is None:
            from invarlab.eval.spaces import load_looc_heads

            self._looc = load_looc_heads(self.checkpoint or self.run_dir)
        return self._looc

    @property
    def representations(self) -> list[str]:
        """``cfg.representations`` (LooC space names made canonical), plus every LooC space and LooC++ when
        ``cfg.looc.spaces`` is set and the run is a LooC run."""
        if self._representations is not None:
            return list(self._representations)
        from invarlab.eval.spaces import canonical_space, is_space

        reps = list(self.cfg.representations)
        if any(is_space(r) for r in reps):
            reps = [canonical_space(r, self.looc_heads().names) if is_space(r) else r for r in reps]
        if self.cfg.looc.spaces:
            from invarlab.errors import CheckpointError

            try:
                names = self.looc_heads().names
            except CheckpointError as err:
                log.warning("looc.spaces ignored: %s", err)
                names = []
            reps += [n for n in names if n not in reps]
        self._representations = list(dict.fromkeys(reps))
        return list(self._representations)

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

    # ------------------------------------------------------------------------------ classification sets
    def classification_sets(self) -> tuple[Any, Any]:
        """``(train, test)`` of kNN, linear, few-shot, corruptions and retrieval: the world preset's
        ``classify_train`` / ``classify_test``, or ``cfg.classify``'s dataset read from disk (labels are its
        classes; folder and ImageNet images decoded at the evaluation's image size, 224 when unknown)."""
        c = self.cfg.classify
        if c.dataset == "world":
            return self.dataset(self.cfg.classify_train), self.dataset(self.cfg.classify_test)
        if self._classify is None:
            from invarlab.data.classification import classification_pair

            self._classify = classification_pair(
                c.dataset,
                image_size=self.classify_size,
                root=c.root,
                train_root=c.train_root,
                test_root=c.test_root,
                resize=c.resize or None,
                val_labels=c.val_labels,
            )
            train, test = self._classify
            log.info(
                "%s: %d training / %d test images, %d classes",
                c.dataset,
                len(train),
                len(test),
                train.num_classes,
            )
        return self._classify

    def voc_classification(self) -> tuple[Any, Any]:
        """VOC2007 ``trainval`` and ``test`` (:class:`invarlab.data.VOCClassification`) for the SVM, read once:
        centre crop ``cfg.svm.image_size`` (else the evaluation's image size, else 224) of the image resized
        to 256/224 of it (P2's 256 -> 224)."""
        if self._voc is None:
            from invarlab.data.classification import identity_of
            from invarlab.data.voc import VOCClassification

            c = self.cfg.svm
            if not c.root:
                raise ConfigError("svm.dataset=voc needs the VOC folder: --root PATH (eval: svm.root=PATH)")
            size = c.image_size or self.classify_size
            resize = round(size * 256 / 224)
            splits = []
            for split in ("trainval", "test"):
                ds = VOCClassification(c.root, split, year="2007", image_size=size, resize=resize)
                ds.identity = identity_of(ds.ids, ds.targets.numpy(), size, resize)
                splits.append(ds)
            self._voc = (splits[0], splits[1])
        return self._voc

    def classification_features(
        self, representation: str
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Cached ``((train features, labels), (test features, labels))`` of :meth:`classification_sets`;
        a dataset read from disk is cached by its image list (``<dataset>-<split>-<identity>``)."""
        c = self.cfg.classify
        if c.dataset == "world":
            return (
                self.features(representation, self.cfg.classify_train),
                self.features(representation, self.cfg.classify_test),
            )
        from invarlab.data.classification import dataset_identity

        train, test = self.classification_sets()
        half = self.cfg.feature_dtype == "float16"
        size = self.classify_size
        train_name = f"{c.dataset}-train-{dataset_identity(train)}"
        test_name = f"{c.dataset}-test-{dataset_identity(test)}"
        return (
            self.dataset_features(representation, train, train_name, "pooled", size, half),
            self.dataset_features(representation, test, test_name, "pooled", size, half),
        )

    @property
    def classify_size(self) -> int:
        """The side images of a dataset read from disk are evaluated at: the evaluation's image size, 224
        when unknown (a torchvision or MoCo checkpoint without a run config)."""
        return self.image_size or 224

    def features(self, representation: str, name: str, layer: str = "pooled") -> tuple[Tensor, Tensor]:
        """Cached ``(features, labels)`` of world dataset ``name`` under ``representation``."""
        return self.dataset_features(representation, self.dataset(name), name, layer, self.image_size)

    def dataset_features(
        self,
        representation: str,
        dataset: Any,
        cache_name: str,
        layer: str,
        image_size: int | None,
        half: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """``(features, labels)`` of any ``(image, label, index)`` dataset, cached under ``cache_name``.

        A LooC space or LooC++ is its head applied to the cached backbone features (eval mode, so exactly
        what a forward pass through the space gives): the backbone runs once for all spaces. ``half`` stores
        the features as float16 (``feature_dtype=float16``: the classification banks)."""
        if _is_space(representation, layer):
            v, labels = self.dataset_features("model", dataset, cache_name, "pooled", image_size, half)
            head = self.encoder(representation).head
            with torch.no_grad():
                chunks = [head(c.to(self.device).float()).float().cpu() for c in v.split(self.cfg.batch_size)]  # type: ignore[misc]
            return torch.cat(chunks), labels
        return cached_features(
            self.run_dir,
            self.encoder(representation),
            dataset,
            cache_name,
            layer,
            image_size=image_size,
            batch_size=self.cfg.batch_size,
            device=self.device,
            num_workers=self.cfg.workers,
            dtype=torch.float16 if half else torch.float32,
        )

    def featurize(self, representation: str):
        """``float images in [0, 1] (B, 3, H, W) -> pooled features`` (a LooC space's own features): for
        evaluations that alter images (corruptions, rotations) before the network."""
        from invarlab.eval.features import forward_pooled

        enc = self.encoder(representation)
        space = _is_space(representation, "pooled")

        @torch.no_grad()
        def featurize(x: Tensor) -> Tensor:
            f = forward_pooled(enc, x.to(self.device), self.image_size)
            return (enc.head(f) if space else f).cpu()  # type: ignore[misc]

        return featurize


def _is_space(representation: str, layer: str) -> bool:
    """Whether ``representation`` is a LooC space or LooC++ (whose ``pooled`` features are its head's
    output); they have no dense layers."""
    if representation in ("model", "random"):
        return False
    if layer != "pooled":
        raise ConfigError(
            f"representation {representation!r} is a LooC embedding space: it has no {layer} features "
            "(dense evaluations use model or random)"
        )
    return True


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
