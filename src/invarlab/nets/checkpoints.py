"""Backbone weights in and out: torchvision state dicts, the official MoCo v1/v2 checkpoint, and invarlab's own.

Layouts that :func:`load_checkpoint` recognises (see :func:`detect_layout`):

- ``"torchvision"``: a flat state dict with torchvision ResNet names (``conv1.weight``, ``layer1.0.conv1.weight``,
  ``fc.weight``), possibly under ``"state_dict"`` or ``"model"`` and possibly prefixed by ``module.`` (DDP) or
  ``_orig_mod.`` (``torch.compile``). MoCo's ``main_lincls.py`` output is this layout.
- ``"moco"``: ``main_moco.py`` output, ``{"epoch", "arch", "state_dict", "optimizer"}`` with
  ``state_dict["module.encoder_q.<torchvision name>"]``; ``encoder_q.fc.0/fc.2`` is the v2 MLP head
  (``encoder_q.fc`` a single Linear in v1). ``encoder_k.*`` and ``queue*`` are training state and are ignored.
- ``"invarlab"``: ``{"format": "invarlab", "format_version": 1, "arch": {...}, "backbone": <torchvision names>,
  "head": <head state dict> | None, ...}`` as :func:`make_checkpoint` builds it; other keys (optimiser, queues,
  step) are left to the trainer.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from invarlab.errors import CheckpointError, ConfigError
from invarlab.nets.backbones import ARCHS, ResNet

FORMAT = "invarlab"
FORMAT_VERSION = 1
LAYOUTS = ("torchvision", "moco", "invarlab")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MOCO_PREFIXES = ("module.encoder_q.", "encoder_q.")
_SHOW = 4  # keys quoted per category in an error message


@dataclass
class LoadReport:
    """What a load did. ``ignored_keys`` were dropped by design (key encoder, queue, a classifier the model does
    not have); ``missing_keys`` / ``unexpected_keys`` / ``mismatched_keys`` can be non-empty only with
    ``strict=False`` (strict loads raise :class:`CheckpointError` instead)."""

    layout: str
    source: str
    loaded_keys: list[str] = field(default_factory=list)
    head_loaded_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.layout} layout, {len(self.loaded_keys)} backbone tensors loaded"]
        if self.head_loaded_keys:
            parts.append(f"{len(self.head_loaded_keys)} head tensors loaded")
        for name in ("missing", "unexpected", "mismatched", "ignored"):
            keys = getattr(self, f"{name}_keys")
            if keys:
                parts.append(f"{len(keys)} {name} ({_few(keys)})")
        return "; ".join(parts)


def _few(keys: list[str]) -> str:
    more = f", ... +{len(keys) - _SHOW}" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _strip_wrappers(sd: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in sd.items():
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def describe_state_dict(sd: Mapping[str, Any]) -> str:
    """A one-line guess of the ResNet a torchvision-named state dict came from (for error messages)."""
    w = sd.get("conv1.weight")
    if not isinstance(w, Tensor) or w.dim() != 4:
        return "not a ResNet (no 4-d conv1.weight)"
    blocks = []
    for layer in range(1, 5):
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        blocks.append(len(idx))
    bottleneck = "layer1.0.conv3.weight" in sd
    name = next(
        (n for n, (b, lay) in ARCHS.items() if lay == tuple(blocks) and (b.expansion == 4) == bottleneck),
        None,
    )
    stem = {7: "imagenet", 3: "cifar"}.get(w.shape[-1], f"{w.shape[-1]}x{w.shape[-1]}")
    fc = sd.get("fc.weight")
    head = f", fc {tuple(fc.shape)}" if isinstance(fc, Tensor) else ", no fc"
    return f"{name or f'a ResNet with blocks {blocks}'} (stem {stem!r}, width {w.shape[0] / 64:g}{head})"


def _describe_model(model: nn.Module) -> str:
    if isinstance(model, ResNet):
        fc = f", fc {model.num_classes}" if model.num_classes else ", headless"
        return f"{model.arch} (stem {model.stem!r}, width {model.width:g}{fc})"
    return type(model).__name__


def _load_into(
    module: nn.Module, sd: Mapping[str, Any], *, strict: bool, what: str, source: str, hint: str = ""
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Check names and shapes before loading, so a mismatch gives one readable message instead of torch's
    RuntimeError (which also fires on shape mismatches with strict=False). Returns loaded, missing,
    unexpected, mismatched."""
    expected = module.state_dict()
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{source}: {what} entries are not tensors ({_few(bad)}); is this a state dict?"
        )
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [k for k in sd if k in expected and sd[k].shape != expected[k].shape]
    if strict and (missing or unexpected or mismatched):
        lines = [f"{source}: the checkpoint does not fit {what}:"]
        if missing:
            lines.append(f"  missing {len(missing)} key(s): {_few(missing)}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)} key(s): {_few(unexpected)}")
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatch(es):")
        for k in mismatched[:_SHOW]:
            lines.append(f"    {k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}")
        lines.append(
            hint or "Build the model to match the checkpoint, or pass strict=False to load what fits."
        )
        raise CheckpointError("\n".join(lines))
    good = {k: v for k, v in sd.items() if k in expected and k not in mismatched}
    module.load_state_dict(good, strict=False)
    return list(good), missing, unexpected, mismatched


def _backbone_hint(model: nn.Module, sd: Mapping[str, Any]) -> str:
    return (
        f"The checkpoint looks like {describe_state_dict(sd)}; the model is {_describe_model(model)}. "
        "Build the backbone to match (build_backbone(name, stem=..., width=...)), or pass strict=False."
    )


def export_torchvision_state_dict(model: ResNet, num_classes: int = 1000) -> dict[str, Tensor]:
    """A state dict (detached CPU copies) that ``torchvision.models.<model.arch>()`` loads with ``strict=True``.

    torchvision's ResNet always has ``fc``, so a strict load needs ``fc.weight`` / ``fc.bias``. A model with a
    classifier exports its own (load it into ``torchvision.models.<arch>(num_classes=model.num_classes)``); a
    headless one exports **zeros** of shape ``(num_classes, feature_dim)`` / ``(num_classes,)``: the torchvision
    model then gives zero logits until its fc is trained (a linear probe), and ``fc = nn.Identity()`` on it gives
    exactly our pooled features. Raises :class:`ConfigError` for a CIFAR stem, width != 1 or non-RGB input,
    whose parameter shapes torchvision has no model for.
    """
    if not isinstance(model, ResNet):
        raise ConfigError(
            f"export_torchvision_state_dict needs an invarlab ResNet, got {type(model).__name__}"
        )
    if not model.is_torchvision_shaped:
        why = []
        if model.arch not in ARCHS:
            why.append(f"architecture {model.arch!r} is not one of torchvision's {', '.join(ARCHS)}")
        if model.stem != "imagenet":
            why.append(f"stem={model.stem!r} (torchvision has only the 7x7 stride-2 conv + max-pool stem)")
        if model.width != 1.0:
            why.append(f"width={model.width:g} (torchvision's channels are width 1.0)")
        if model.in_channels != 3:
            why.append(f"in_channels={model.in_channels} (torchvision takes 3)")
        raise ConfigError(
            "cannot export to torchvision: " + "; ".join(why) + ". Save it in invarlab's layout "
            "(make_checkpoint) instead, or train with stem='imagenet', width=1.0 for a torchvision checkpoint."
        )
    sd = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if "fc.weight" not in sd:
        dtype = model.conv1.weight.dtype
        sd["fc.weight"] = torch.zeros(num_classes, model.feature_dim, dtype=dtype)
        sd["fc.bias"] = torch.zeros(num_classes, dtype=dtype)
    return sd


def load_torchvision_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True, source: str = "<state dict>"
) -> LoadReport:
    """Load torchvision-named weights (``module.`` / ``_orig_mod.`` prefixes stripped). A headless model drops
    the checkpoint's ``fc.*`` (reported as ignored); everything else must match when ``strict``."""
    sd = _strip_wrappers(state_dict)
    hint = _backbone_hint(model, sd)
    ignored: list[str] = []
    if isinstance(model, ResNet) and model.num_classes == 0:
        ignored = [k for k in sd if k.startswith("fc.")]
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    loaded, missing, unexpected, mismatched = _load_into(
        model, sd, strict=strict, what=_describe_model(model), source=source, hint=hint
    )
    return LoadReport("torchvision", source, loaded, [], missing, unexpected, mismatched, ignored)


def _load_head(
    head: nn.Module, sd: Mapping[str, Any], *, strict: bool, source: str, report: LoadReport, where: str
) -> None:
    loaded, missing, unexpected, mismatched = _load_into(
        head,
        sd,
        strict=strict,
        what=f"the head ({type(head).__name__})",
        source=source,
        hint=f"The checkpoint's head is {where}: build the head with matching dims/layers, or pass head=None.",
    )
    report.head_loaded_keys = loaded
    report.missing_keys += [f"head.{k}" for k in missing]
    report.unexpected_keys += [f"head.{k}" for k in unexpected]
    report.mismatched_keys += [f"head.{k}" for k in mismatched]


def load_moco_checkpoint(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    model: nn.Module,
    head: nn.Module | None = None,
    *,
    strict: bool = True,
    trusted: bool = False,
) -> LoadReport:
    """Load the query encoder of an official MoCo v1/v2 checkpoint: ``encoder_q.<name>`` → backbone ``<name>``,
    and, when ``head`` is given, ``encoder_q.fc.<i>.*`` → ``head.<i>.*`` (v2 MLP: indices 0 and 2, as in
    :func:`~invarlab.nets.heads.moco_v2_head`) or ``encoder_q.fc.*`` → ``head.0.*`` (v1 linear head).
    ``encoder_k.*``, ``queue``, ``queue_ptr`` and, with no ``head``, ``encoder_q.fc.*`` are ignored. The
    backbone should be headless (``num_classes=0``): MoCo's ``fc`` is the projection head, not a classifier."""
    source, obj = _open(checkpoint, trusted)
    return _load_moco(obj, model, head, strict=strict, source=source)


def _load_moco(
    obj: Any, model: nn.Module, head: nn.Module | None, *, strict: bool, source: str
) -> LoadReport:
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{source}: not a MoCo checkpoint (expected a dict with 'state_dict').")
    prefix = next((p for p in _MOCO_PREFIXES if any(k.startswith(p) for k in sd)), None)
    if prefix is None:
        raise CheckpointError(
            f"{source}: no 'encoder_q.' keys, so this is not a MoCo training checkpoint "
            f"(first keys: {_few(list(sd))}); for a linear-eval or torchvision file use load_checkpoint."
        )
    backbone, head_sd, ignored, head_keys = {}, {}, [], []
    for k, v in sd.items():
        if not k.startswith(prefix):
            ignored.append(k)
            continue
        name = k[len(prefix) :]
        if name.startswith("fc."):
            rest = name[3:]
            # v1's head is a bare Linear (fc.weight); ours keeps Linear layers at Sequential indices.
            head_sd[rest if rest.split(".")[0].isdigit() else f"0.{rest}"] = v
            head_keys.append(k)
        else:
            backbone[name] = v
    if head is None:
        ignored += head_keys
    arch = obj.get("arch") if isinstance(obj, Mapping) else None
    hint = _backbone_hint(model, backbone) + (f" (the checkpoint says arch={arch!r})" if arch else "")
    if isinstance(model, ResNet) and model.num_classes:
        hint += " MoCo's fc is its projection head: build the backbone with num_classes=0 and pass head=."
    loaded, missing, unexpected, mismatched = _load_into(
        model, backbone, strict=strict, what=_describe_model(model), source=source, hint=hint
    )
    report = LoadReport("moco", source, loaded, [], missing, unexpected, mismatched, ignored)
    if head is not None:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in head_sd.items() if k.endswith("weight"))
        _load_head(head, head_sd, strict=strict, source=source, report=report, where=shapes or "absent")
    return report


def make_checkpoint(model: ResNet, head: nn.Module | None = None, **extra: Any) -> dict[str, Any]:
    """invarlab's layout: backbone under torchvision names (no fc if headless), its ``arch`` (the keywords of
    ``build_backbone``), the head's state dict, plus any ``extra`` entries (step, optimiser, queues...)."""
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": model.arch_config if isinstance(model, ResNet) else None,
        "backbone": model.state_dict(),
        "head": head.state_dict() if head is not None else None,
    }
    clash = set(extra) & set(ckpt)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite the checkpoint's own entries")
    ckpt.update(extra)
    return ckpt


def _is_torchvision(sd: Any) -> bool:
    if not isinstance(sd, Mapping) or not sd:
        return False
    keys = _strip_wrappers({k: None for k in sd if isinstance(k, str)})
    return "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys)


def _detect(obj: Any) -> tuple[str, Any]:
    if not isinstance(obj, Mapping):
        return "unknown", obj
    if obj.get("format") == FORMAT and isinstance(obj.get("backbone"), Mapping):
        return "invarlab", obj
    for cand in (obj, obj.get("state_dict"), obj.get("model")):
        if isinstance(cand, Mapping) and any(
            isinstance(k, str) and k.startswith(_MOCO_PREFIXES) for k in cand
        ):
            return "moco", obj
        if _is_torchvision(cand):
            return "torchvision", cand
    return "unknown", obj


def detect_layout(obj: Any) -> str:
    """``"torchvision"``, ``"moco"``, ``"invarlab"`` or ``"unknown"`` for a loaded checkpoint object."""
    return _detect(obj)[0]


def read_checkpoint(path: str | os.PathLike[str], trusted: bool = False) -> Any:
    """``torch.load`` onto the CPU with ``weights_only=True`` (no arbitrary code from pickles) unless
    ``trusted``; every failure becomes a :class:`CheckpointError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file; check the path (cwd is {Path.cwd()}).")
    try:
        return torch.load(p, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (e.g. {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{p}: holds Python objects{what} that a weights-only load refuses, since unpickling them could run "
            "code. If you trust the file, load it with trusted=True."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{p}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}"
        ) from exc


def _open(checkpoint: str | os.PathLike[str] | Mapping[str, Any], trusted: bool) -> tuple[str, Any]:
    if isinstance(checkpoint, Mapping):
        return "<checkpoint dict>", checkpoint
    return str(checkpoint), read_checkpoint(checkpoint, trusted)


def load_checkpoint(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    model: nn.Module,
    head: nn.Module | None = None,
    *,
    strict: bool = True,
    trusted: bool = False,
) -> LoadReport:
    """Load a backbone (and optionally a head) from a file or an already loaded dict of any layout in
    :data:`LAYOUTS`, detected from its keys. Returns a :class:`LoadReport`; ``str(report)`` summarises it."""
    source, obj = _open(checkpoint, trusted)
    layout, inner = _detect(obj)
    if layout == "moco":
        return _load_moco(obj, model, head, strict=strict, source=source)
    if layout == "torchvision":
        if head is not None:
            raise CheckpointError(
                f"{source}: a torchvision checkpoint has no projection head; pass head=None."
            )
        return load_torchvision_state_dict(model, inner, strict=strict, source=source)
    if layout == "invarlab":
        report = load_torchvision_state_dict(model, obj["backbone"], strict=strict, source=source)
        report.layout = "invarlab"
        head_sd = obj.get("head")
        if head is not None:
            if not isinstance(head_sd, Mapping):
                raise CheckpointError(f"{source}: the checkpoint stores no head; pass head=None.")
            _load_head(
                head, head_sd, strict=strict, source=source, report=report, where="stored under 'head'"
            )
        elif isinstance(head_sd, Mapping):
            report.ignored_keys += [f"head.{k}" for k in head_sd]
        return report
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"{source}: unknown checkpoint layout (top-level: {keys}). Supported: {', '.join(LAYOUTS)}; "
        "a torchvision state dict needs 'conv1.weight' and 'layer1.*' keys."
    )
