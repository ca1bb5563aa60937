"""The two sides of benchmarks/train_throughput.py: invarlab's MoCo v2 Trainer step and lightly's MoCo recipe.

Each side is built from the same data, case (width, view size, batch) and settings, and has ``block(steps,
prof=None) -> seconds`` (data included) and ``flops_per_image(size)``. A :class:`Profile` given to ``block``
times the parts of every step with device synchronisation; without one the steps run untouched.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.flop_counter import FlopCounterMode

from invarlab.methods import MethodConfig, build_method
from invarlab.methods import moco as moco_module
from invarlab.nets.backbones import build_backbone
from invarlab.train.config import TrainConfig
from invarlab.train.loop import Trainer
from torchvision_compat import import_lightly

import_lightly()
import torchvision  # noqa: E402
from lightly.loss import NTXentLoss  # noqa: E402
from lightly.models.modules import MoCoProjectionHead  # noqa: E402
from lightly.models.utils import deactivate_requires_grad, update_momentum  # noqa: E402
from lightly.transforms import MoCoV2Transform  # noqa: E402

QUEUE, PROJ_DIM, TAU, MOMENTUM, LR, WD = 4096, 128, 0.2, 0.999, 0.06, 5e-4


@dataclass
class Case:
    width: float
    size: int
    batch: int
    steps: int  # per timed block (--steps overrides)

    def __str__(self) -> str:
        return f"width {self.width:g}, {self.size}x{self.size}, batch {self.batch}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steady_batches(
    dataset: Dataset, batch: int, steps: int, workers: int, generator: torch.Generator, device: torch.device
) -> Iterator:
    """An iterator over ``steps`` random batches, past the first batch of each worker (which arrives while the
    worker starts, so it is not steady state)."""
    sampler = RandomSampler(dataset, num_samples=batch * (steps + workers), generator=generator)
    loader = DataLoader(dataset, batch, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda")  # fmt: skip
    batches = iter(loader)
    for _ in range(workers):
        next(batches)
    return batches


class Profile:
    """Seconds per named part over the profiled steps; each part synchronises the device before and after."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device, self.enabled = device, enabled
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, fn: Callable, name: str) -> Callable:
        def timed(*args: object, **kwargs: object) -> object:
            with self.part(name):
                return fn(*args, **kwargs)

        return timed


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if amp == "none" else torch.autocast(device.type, dtype=torch.bfloat16)


# ------------------------------------------------------------------------------------------------ invarlab
class InvarlabSide:
    """invarlab's Trainer, stepped block by block as ``Trainer.fit`` steps it."""

    def __init__(
        self,
        case: Case,
        data: Dataset,
        device: torch.device,
        amp: str,
        channels_last: bool,
        compile: bool = False,
    ) -> None:
        method_cfg = MethodConfig(
            name="moco", backbone="resnet18", stem="cifar", width=case.width, proj_dim=PROJ_DIM,
            temperature=TAU, queue_size=QUEUE, momentum=MOMENTUM, view_size=case.size,
        )  # fmt: skip
        cfg = TrainConfig(method=method_cfg, batch_size=case.batch, steps=10**6, amp=amp, seed=0)
        cfg.channels_last, cfg.compile, cfg.device = channels_last, compile, str(device)
        cfg.run_dir = "/tmp/invarlab-throughput-unused"  # _train_step never writes; only fit() would
        cfg.optim.base_lr, cfg.optim.weight_decay = LR * 256 / case.batch, WD  # lr = LR at this batch
        cfg.log.tensorboard = cfg.log.progress = False
        cfg.knn.every_epochs = 0
        self.method = build_method(method_cfg)
        self.trainer = Trainer(cfg, self.method, data, device=device)
        self.device = device
        self.method.train()
        self.batches = self._batches()

    def _batches(self) -> Iterator:
        while True:  # as Trainer.fit: one loader per epoch, resumable at any step
            epoch, start = divmod(self.trainer.step, self.trainer.steps_per_epoch)
            yield from self.trainer._loader(epoch, start)

    def block(self, steps: int, prof: Profile | None = None) -> float:
        """Seconds for ``steps`` steps (data included); with ``prof``, time each part of every step."""
        ctx = self._instrument(prof) if prof else contextlib.nullcontext()
        prof = prof or Profile(self.device, enabled=False)
        with ctx:
            sync(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                with prof.part("data"):
                    images, labels, _ = next(self.batches)
                with prof.part("step"):
                    self.trainer._train_step(images, labels)
            sync(self.device)
        return time.perf_counter() - start

    @contextlib.contextmanager
    def _instrument(self, prof: Profile) -> Iterator[None]:
        """Time the parts of ``Trainer._train_step`` by wrapping what it calls (instance attributes shadow
        the methods; removed afterwards). Backward is the time from ``zero_grad`` to ``optimizer.step``."""
        m, opt = self.method, self.trainer.optimizer
        parts = [(m, "make_views", "views"), (m, "encode_query", "query forward"),
                 (m, "encode_key", "key forward"), (m.queue, "enqueue", "queue"),
                 (m, "on_after_optimizer_step", "momentum")]  # fmt: skip
        for obj, attr, name in parts:
            setattr(obj, attr, prof.wrap(getattr(obj, attr), name))
        loss_fn, zero_grad, step = moco_module.moco_loss, opt.zero_grad, opt.step
        moco_module.moco_loss = prof.wrap(loss_fn, "loss")
        mark = [0.0]

        def timed_zero_grad(*args: object, **kwargs: object) -> None:
            with prof.part("optimiser"):
                zero_grad(*args, **kwargs)
            mark[0] = time.perf_counter()

        def timed_step(*args: object, **kwargs: object) -> object:
            sync(self.device)
            prof.seconds["backward"] += time.perf_counter() - mark[0]
            with prof.part("optimiser"):
                return step(*args, **kwargs)

        opt.zero_grad, opt.step = timed_zero_grad, timed_step
        try:
            yield
        finally:
            for obj, attr, _ in parts:
                delattr(obj, attr)
            del opt.zero_grad, opt.step
            moco_module.moco_loss = loss_fn

    def flops_per_image(self, size: int) -> float:
        m = copy.deepcopy(self.method)
        return count_flops(m.encode_query, m.encode_key, lambda q, k: moco_module.moco_loss(
            q, k, m.queue.features.clone(), TAU)[0], size, self.device)  # fmt: skip


# ------------------------------------------------------------------------------------------------- lightly
class PilImages(Dataset):
    """The same images as HWC uint8 in memory, given to ``transform`` as PIL images (as torchvision's CIFAR10
    gives them)."""

    def __init__(self, data: Dataset, transform: Callable) -> None:
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        self.images = np.ascontiguousarray(torch.stack([x for x, _, _ in items]).permute(0, 2, 3, 1).numpy())
        self.labels = [int(y) for _, y, _ in items]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[object, int]:
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class LightlyMoCo(nn.Module):
    """The model of lightly's MoCo example: backbone + ``MoCoProjectionHead`` and their momentum copies."""

    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(dim, dim, PROJ_DIM)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def forward_momentum(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


def cifar_resnet18(width: float) -> tuple[nn.Module, int]:
    """Headless ResNet-18 with the CIFAR stem as lightly users build it: torchvision's at width 1 (3x3
    stride-1 conv1, no max-pool, children without fc), invarlab's torchvision-named one at other widths."""
    if width == 1.0:
        resnet = torchvision.models.resnet18()
        resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
    else:
        resnet = build_backbone("resnet18", "cifar", width, num_classes=1000)
    dim = resnet.fc.in_features
    return nn.Sequential(*list(resnet.children())[:-1]), dim


class LightlySide:
    """lightly's MoCo example loop, views made by ``MoCoV2Transform`` in ``workers`` DataLoader workers."""

    def __init__(
        self, case: Case, data: Dataset, workers: int, device: torch.device, amp: str, channels_last: bool
    ) -> None:
        self.case, self.workers, self.device = case, workers, device
        self.amp, self.channels_last = amp, channels_last
        self.dataset = PilImages(data, MoCoV2Transform(input_size=case.size))
        self.model = LightlyMoCo(*cifar_resnet18(case.width)).to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = NTXentLoss(temperature=TAU, memory_bank_size=(QUEUE, PROJ_DIM)).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=0.9, weight_decay=WD)
        self.generator = torch.Generator().manual_seed(0)

    def _to(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, x_q: Tensor, x_k: Tensor, prof: Profile) -> None:
        with prof.part("momentum"):
            update_momentum(self.model.backbone, self.model.backbone_momentum, m=MOMENTUM)
            update_momentum(self.model.projection_head, self.model.projection_head_momentum, m=MOMENTUM)
        with prof.part("to device"):
            x_q, x_k = self._to(x_q), self._to(x_k)
        with autocast(self.device, self.amp):
            with prof.part("query forward"):
                query = self.model(x_q)
            with prof.part("key forward"):
                key = self.model.forward_momentum(x_k)
            with prof.part("loss + memory bank"):
                loss = self.criterion(query, key)
        with prof.part("backward"):
            loss.backward()
        with prof.part("optimiser"):
            self.optimizer.step()
            self.optimizer.zero_grad()

    def block(self, steps: int, prof: Profile | None = None) -> float:
        prof = prof or Profile(self.device, enabled=False)
        batches = steady_batches(
            self.dataset, self.case.batch, steps, self.workers, self.generator, self.device
        )
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            with prof.part("data (wait for workers)" if self.workers else "data + views"):
                (x_q, x_k), _ = next(batches)
            self.step(x_q, x_k, prof)
        sync(self.device)
        seconds = time.perf_counter() - start
        del batches  # stops the workers before the other side's block
        return seconds

    def flops_per_image(self, size: int) -> float:
        model, criterion = copy.deepcopy(self.model), copy.deepcopy(self.criterion)
        return count_flops(model, model.forward_momentum, criterion, size, self.device)


# ------------------------------------------------------------------------------------------------- FLOP/s
def count_flops(
    encode_q: Callable, encode_k: Callable, loss: Callable, size: int, device: torch.device
) -> float:
    """Model FLOPs per image of one MoCo step: query encoder forward + backward, key encoder forward, loss."""
    batch = 8
    x = torch.randn(batch, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        loss(encode_q(x), encode_k(x)).backward()
    return counter.get_total_flops() / batch
