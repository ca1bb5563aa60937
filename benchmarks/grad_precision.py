"""How exact are the training gradients on a CPU, by memory format? One MoCo step of the quick start's network
(ResNet-18 x0.25, CIFAR stem, 32 px views, batch 64) in float32, contiguous and channels-last, against the same
step computed in float64; prints the largest relative error ||g32 - g64|| / ||g64|| over the parameters.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grad_precision.py
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/grad_precision.py

Why it matters: at CPU budgets a training run is chaotic, so a gradient error of 1% (instead of float32's 1e-5)
makes the same config land on different results with a different thread count (README, Quick start).
"""

from __future__ import annotations

import torch

from invarlab.config import load_config
from invarlab.methods import build_method
from invarlab.train.config import TrainConfig


def step_gradients(channels_last: bool, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Parameter gradients of one quick-start MoCo step from a fixed initialisation, images and views."""
    cfg = load_config(TrainConfig, "quickstart", [], group="train")
    torch.manual_seed(0)
    method = build_method(cfg.method).to(dtype).train()
    images = torch.randint(
        0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    make_views = method.make_views  # views are built in float32: cast them to the step's dtype
    method.make_views = lambda *a, **k: [v.to(dtype) for v in make_views(*a, **k)]
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    method.training_step(images, None, torch.Generator().manual_seed(0)).loss.backward()
    return {n: p.grad.double() for n, p in method.named_parameters() if p.grad is not None}


def main() -> None:
    reference = step_gradients(False, torch.float64)
    print(f"threads: {torch.get_num_threads()}")
    print("| layout | largest relative gradient error vs float64 | worst parameter |")
    print("| --- | --- | --- |")
    for channels_last in (False, True):
        grads = step_gradients(channels_last, torch.float32)
        err, name = max(
            (float((grads[k] - r).norm() / r.norm().clamp_min(1e-30)), k) for k, r in reference.items()
        )
        print(f"| {'channels-last' if channels_last else 'contiguous'} | {err:.1e} | {name} |")


if __name__ == "__main__":
    main()
