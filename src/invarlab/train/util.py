"""Small helpers of the trainer: process rank / world size, seed mixing, device choice, process-group set-up.

Kept free of the rest of training so the data and method builders can use them too. Code works unchanged in
a single process: without an initialised process group, rank is 0 and the world size 1.
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist

from invarlab.errors import ConfigError

__all__ = [
    "cpu_has_native_bf16",
    "dist_info",
    "init_distributed",
    "mix_seed",
    "resolve_amp",
    "resolve_device",
]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``: of the default process group if initialised, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (ints, strings): ``sha256("p0:p1:...")``, so nearby inputs such as
    ``(seed, epoch)`` and ``(seed, epoch + 1)`` give unrelated streams (``seed + epoch`` would collide)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU; otherwise ``torch.device(spec)``."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device '{spec}' is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{spec}' asked for, but CUDA is not available here; use device=cpu")
    return device


def init_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment): nccl for a CUDA
    device, gloo otherwise. Returns True when this call initialised it (the caller then destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX). Without them oneDNN emulates bf16 and
    autocast makes a narrow ResNet 10-15x *slower* (measured on an AVX2-only EPYC), not faster."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast dtype a run uses: ``auto`` is bf16 on a CUDA device that supports it (else fp16), bf16
    on a CPU with native bf16, and ``none`` on other CPUs; explicit choices are kept."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "none"
