"""Features of a trained (or random) network: pooled backbone features, projection-head outputs and dense maps,
cached in the run folder.

An :class:`Encoder` is a backbone (and the projection head when the checkpoint has one) loaded from any
supported source: a run folder (its newest checkpoint), an invarlab checkpoint, a torchvision state dict or an
official MoCo v2 checkpoint (``module.encoder_q.*``). :func:`random_encoder` gives the same architecture with a
fresh initialisation: the floor every evaluation is reported against.

Representations (``layer`` argument):

* ``pooled``: global average of layer4, ``(N, D)`` (what kNN, linear probes and RIS use);
* ``head``: the projection head's output on the pooled features (before L2 normalisation; for a LooC run the
  head of ``Z_0``, the all-invariant space: :mod:`invarlab.eval.spaces` gives every space);
* ``layer3`` / ``layer4``: dense maps ``(N, C, h, w)``; with ``dilate=True`` layer3 and layer4 keep layer2's
  resolution by dilation instead of stride (PAPERS.md §2.4.4 keeps layer3 at stride 8 for label propagation).

Images are uint8 ``(3, H, W)`` from any dataset returning ``(image, label, index)``; they are scaled to [0, 1],
resized (bilinear, antialiased) to ``image_size`` when given, and normalised with ImageNet statistics, with
the network in eval mode. The cache file is ``<run>/features/<encoder key>/<dataset>-<layer>[-<size>].pt``,
where the encoder key is a hash of the checkpoint's bytes (``random-<arch>-<seed>`` for random networks).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from invarlab.atomic import atomic_write
from invarlab.errors import CheckpointError
from invarlab.nets.backbones import ResNet, build_backbone
from invarlab.nets.checkpoints import detect_layout, load_checkpoint, read_checkpoint
from invarlab.views.ops import normalize, to_float

__all__ = [
    "LAYERS",
    "Encoder",
    "cached_features",
    "encoder_from_checkpoint",
    "extract",
    "forward_pooled",
    "head_from_state_dict",
    "heads_state",
    "latest_checkpoint",
    "random_encoder",
]

log = logging.getLogger(__name__)

LAYERS = ("pooled", "head", "layer3", "layer4")
_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


@dataclass
class Encoder:
    """A backbone, its optional projection head, and a key that names its weights in feature caches."""

    backbone: ResNet
    head: nn.Module | None
    key: str
    source: str

    def to(self, device: torch.device | str) -> Encoder:
        self.backbone.to(device)
        if self.head is not None:
            self.head.to(device)
        return self


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    """The newest ``checkpoints/step_*.pt`` of a run folder; a clear error when there is none."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    found = sorted(
        (int(m.group(1)), p)
        for p in (ckpt_dir.glob("step_*.pt") if ckpt_dir.is_dir() else [])
        if (m := _STEP_FILE.search(p.name))
    )
    if not found:
        raise CheckpointError(
            f"{run_dir}: no checkpoint in {ckpt_dir} (train first: invarlab train run_dir={run_dir})"
        )
    return found[-1][1]


def file_hash(path: str | os.PathLike[str], length: int = 16) -> str:
    """First ``length`` hex digits of the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def head_from_state_dict(sd: Mapping[str, Tensor]) -> nn.Sequential:
    """Rebuild an ``nn.Sequential`` projection head from its state dict alone: ``i.weight`` 2-D is a Linear,
    ``i.running_mean`` a BatchNorm1d (affine or not), and a ReLU sits between consecutive layers, as
    :class:`invarlab.nets.heads.ProjectionHead` lays them out."""
    indices = sorted({int(k.split(".")[0]) for k in sd if k.split(".")[0].isdigit()})
    if not indices:
        raise CheckpointError("the head state dict has no numbered layers (expected keys like '0.weight')")
    modules: list[nn.Module] = []
    for pos in range(indices[-1] + 1):
        w = sd.get(f"{pos}.weight")
        if f"{pos}.running_mean" in sd:
            dim = sd[f"{pos}.running_mean"].shape[0]
            modules.append(nn.BatchNorm1d(dim, affine=w is not None))
        elif w is not None and w.ndim == 2:
            modules.append(nn.Linear(w.shape[1], w.shape[0], bias=f"{pos}.bias" in sd))
        else:
            modules.append(nn.ReLU())
    head = nn.Sequential(*modules)
    head.load_state_dict(dict(sd), strict=True)
    return head


def encoder_from_checkpoint(
    source: str | os.PathLike[str], arch: Mapping[str, Any] | None = None, trusted: bool = False
) -> Encoder:
    """An :class:`Encoder` from a run folder (newest checkpoint), an invarlab checkpoint (architecture stored
    in it), or a torchvision / official MoCo v2 file (architecture from ``arch``: keywords of
    :func:`invarlab.nets.build_backbone`, default a torchvision ResNet-50)."""
    path = Path(source)
    if path.is_dir():
        path = latest_checkpoint(path)
    obj = read_checkpoint(path, trusted)
    layout = detect_layout(obj)
    stored = obj.get("arch") if isinstance(obj, Mapping) else None
    if isinstance(stored, str):  # the official MoCo checkpoint names its architecture: "arch": "resnet50"
        stored = {"name": stored}
    if not isinstance(stored, Mapping):
        stored = None
    spec = dict(arch or stored or {"name": "resnet50"})
    name = spec.pop("name", None) or "resnet50"
    spec["num_classes"] = 0
    backbone = build_backbone(name, **spec)
    head_sd = _head_state(obj) if layout in ("invarlab", "moco") else None
    head = head_from_state_dict(head_sd) if head_sd else None
    if layout == "invarlab" and head_sd and not isinstance(obj.get("head"), Mapping):
        load_checkpoint(obj, backbone, strict=True)  # the head came from method_state, loaded above
    else:
        load_checkpoint(obj, backbone, head, strict=True)
    backbone.eval()
    if head is not None:
        head.eval()
    return Encoder(backbone, head, file_hash(path), str(path))


def _head_state(obj: Mapping[str, Any]) -> dict[str, Tensor] | None:
    """The projection head's weights: ``head`` of an invarlab checkpoint, else ``head.*`` of its method state
    (training checkpoints), else the official MoCo layout's ``encoder_q.fc.*``."""
    if isinstance(obj.get("head"), Mapping):
        return dict(obj["head"])
    state = obj.get("method_state")
    if isinstance(state, Mapping):
        sub = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
        # LooC keeps one head per space (heads.<i>.*); heads.0 is Z_0, the space invariant to every
        # augmentation, i.e. the counterpart of MoCo's single head.
        return sub or (heads_state(state)[:1] or [None])[0]
    sd = obj.get("state_dict", obj)
    if isinstance(sd, Mapping):
        for prefix in ("module.encoder_q.fc.", "encoder_q.fc."):
            sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            if sub:
                return sub
    return None


def heads_state(method_state: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
    """The state dicts of a multi-head method's ``heads.<i>.*`` (LooC: one per space), in index order;
    ``[]`` when there are none. The momentum copies (``heads_momentum.*``) are not read."""
    found: dict[int, dict[str, Tensor]] = {}
    for key, value in method_state.items():
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "heads" and parts[1].isdigit():
            found.setdefault(int(parts[1]), {})[parts[2]] = value
    if sorted(found) != list(range(len(found))):
        raise CheckpointError(
            f"method_state has heads {sorted(found)}: expected heads.0 .. heads.{len(found) - 1}"
        )
    return [found[i] for i in range(len(found))]


def random_encoder(like: Encoder, seed: int = 0) -> Encoder:
    """The same architecture (backbone and head) freshly initialised from ``seed``: the floor of every
    evaluation."""
    cfg = like.backbone.arch_config
    name = cfg.pop("name") or "resnet18"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(name, **cfg)
        head = None
        if like.head is not None:
            head = copy.deepcopy(like.head)
            for m in head.modules():
                if hasattr(m, "reset_parameters") and m is not head:
                    m.reset_parameters()
    arch = f"{name}-{cfg['stem']}-w{cfg['width']:g}"
    return Encoder(
        backbone.eval(), head.eval() if head is not None else None, f"random-{arch}-{seed}", "random"
    )


def _dilated(backbone: ResNet) -> ResNet:
    """A copy of ``backbone`` whose layer3 and layer4 use dilation instead of stride (same weights)."""
    cfg = backbone.arch_config
    name = cfg.pop("name")
    cfg["replace_stride_with_dilation"] = [False, True, True]
    net = build_backbone(name, **cfg)
    net.load_state_dict(backbone.state_dict())
    return net.eval()


@torch.no_grad()
def extract(
    encoder: Encoder,
    dataset: Dataset,
    layer: str = "pooled",
    *,
    image_size: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    dilate: bool = False,
    transform: Callable[[Tensor], Tensor] | None = None,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """``(features, labels)`` of every image of ``dataset`` (in order), ``dtype`` (float32, or float16 to halve
    the memory of a large bank) on the CPU.

    ``transform`` (optional) maps the float ``[0, 1]`` batch before normalisation (e.g. a corruption). Images
    are decoded by ``num_workers`` DataLoader processes (0: in this one). The output is allocated once, from
    the first batch's shape, and filled batch by batch, so memory stays at the output plus one batch; progress
    is logged about every 10% of a dataset of more than 20 batches."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}: use one of {', '.join(LAYERS)}")
    if layer == "head" and encoder.head is None:
        raise CheckpointError(f"{encoder.source}: the checkpoint has no projection head; use layer=pooled")
    device = torch.device(device)
    backbone = _dilated(encoder.backbone) if dilate and layer.startswith("layer") else encoder.backbone
    backbone.to(device).eval()
    if encoder.head is not None:
        encoder.head.to(device).eval()
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the dataset is empty: nothing to extract")
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate, num_workers=num_workers
    )
    batches = len(loader)
    every = max(1, batches // 10) if batches > 20 else 0
    start = time.perf_counter()
    feats: Tensor | None = None
    labels = torch.empty(n, dtype=torch.long)
    done = 0
    for b, (images, y) in enumerate(loader):
        x = _prepare(to_float(images.to(device)), image_size, transform)
        if layer in ("pooled", "head"):
            f = backbone.forward_features(x)
            if layer == "head":
                f = encoder.head(f)  # type: ignore[misc]
        else:
            f = backbone.feature_maps(x, (layer,))[layer]
        if feats is None:
            feats = torch.empty((n, *f.shape[1:]), dtype=dtype)
        feats[done : done + len(f)] = f.to("cpu", dtype)
        labels[done : done + len(f)] = y
        done += len(f)
        if every and (b + 1) % every == 0:
            rate = done / (time.perf_counter() - start)
            log.info("features: %d / %d images (%.0f img/s, %s)", done, n, rate, encoder.source)
    assert feats is not None and done == n, "the loader returned fewer images than the dataset holds"
    return feats, labels


def _prepare(x: Tensor, image_size: int | None, transform: Callable[[Tensor], Tensor] | None) -> Tensor:
    """Float [0, 1] images -> resized (bilinear, antialiased), transformed, ImageNet-normalised network input."""
    if image_size and x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True).clamp(0, 1)
    if transform is not None:
        x = transform(x)
    return normalize(x)


@torch.no_grad()
def forward_pooled(encoder: Encoder, images: Tensor, image_size: int | None = None) -> Tensor:
    """Pooled backbone features of float ``[0, 1]`` images ``(B, 3, H, W)`` (resized to ``image_size``)."""
    encoder.backbone.eval()
    return encoder.backbone.forward_features(_prepare(images, image_size, None)).float()


def _collate(batch: list[tuple[Any, ...]]) -> tuple[Tensor, Tensor]:
    images = torch.stack([torch.as_tensor(b[0]) for b in batch])
    labels = torch.as_tensor([int(b[1]) for b in batch], dtype=torch.long)
    return images, labels


def cached_features(
    run_dir: str | os.PathLike[str],
    encoder: Encoder,
    dataset: Dataset,
    dataset_name: str,
    layer: str = "pooled",
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """:func:`extract` with a cache at ``<run>/features/<encoder.key>/<dataset_name>-<layer>[...].pt``
    (written atomically; a stale or unreadable file is recomputed)."""
    size = kwargs.get("image_size")
    half = kwargs.get("dtype") == torch.float16
    tag = "-".join(
        str(p)
        for p in (
            dataset_name,
            layer,
            f"s{size}" if size else "",
            "dil" if kwargs.get("dilate") else "",
            "fp16" if half else "",
        )
        if p
    )
    path = Path(run_dir) / "features" / encoder.key / f"{tag}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if len(cached["labels"]) == len(dataset):  # type: ignore[arg-type]
                return cached["features"], cached["labels"]
        except (RuntimeError, EOFError, KeyError, OSError):
            pass  # unreadable cache: recompute and overwrite
    feats, labels = extract(encoder, dataset, layer, **kwargs)
    atomic_write(path, lambda fh: torch.save({"features": feats, "labels": labels}, fh), "feature cache")
    return feats, labels
