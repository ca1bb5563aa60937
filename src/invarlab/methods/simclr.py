"""SimCLR (Chen et al. 2020): two views, one encoder, a projection head with BatchNorm, NT-Xent.

Per step: views ``x1``, ``x2`` of each of N images; ``z = normalize(g(f([x1; x2])))`` in one forward (so the
BatchNorm statistics cover both views, as in SimCLR's global BN over the whole 2N batch); then

    L = (1/2N) Σ_i −log [ exp(z_i·z_p(i)/τ) / Σ_{j ≠ i} exp(z_i·z_j/τ) ]   (:func:`invarlab.losses.nt_xent`)

With several ranks the embeddings of every rank are gathered with gradient before the loss, so negatives
come from the global batch (see :func:`invarlab.distributed.all_gather_with_grad` for why the gradient is the
global loss's). Temperature: ``cfg.temperature`` (SimCLR used 0.1 at batch 4096, 0.5 on CIFAR-10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invarlab.distributed import all_gather_with_grad, convert_to_split_bn, world_size
from invarlab.losses import nt_xent
from invarlab.methods.base import Method, MethodConfig, StepOutput
from invarlab.nets.heads import simclr_head

__all__ = ["SimCLR"]


class SimCLR(Method):
    """SimCLR: ``backbone`` + ``head`` (``Linear - BN - ReLU - ... - Linear``), NT-Xent over the 2N views.

    ``cfg.bn_splits > 1`` splits the backbone's BatchNorm2d statistics as N/S-sized per-GPU batches would; the
    head's BatchNorm1d keeps global statistics.
    """

    name = "simclr"
    default_views = "simclr"

    def __init__(self, cfg: MethodConfig, num_classes: int | None = None) -> None:
        super().__init__(cfg)
        self.temperature = cfg.temperature
        self.head = simclr_head(
            self.backbone.feature_dim, cfg.proj_dim, cfg.proj_hidden_dim, num_layers=cfg.proj_layers
        )
        convert_to_split_bn(self.backbone, cfg.bn_splits)

    def embed(self, x: Tensor) -> Tensor:
        """``z = normalize(g(f(x)))``, with gradient."""
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def training_step(self, images: Tensor, labels: Tensor | None, generator: torch.Generator) -> StepOutput:
        x1, x2 = self.make_views(images, generator, 2)
        n = x1.shape[0]
        z1, z2 = self.embed(torch.cat([x1, x2])).split(n)
        if world_size() > 1:
            z1, z2 = all_gather_with_grad(z1), all_gather_with_grad(z2)
        loss = nt_xent(z1, z2, self.temperature)
        return StepOutput(loss, self._metrics(loss, z1, z2))

    @torch.no_grad()
    def _metrics(self, loss: Tensor, z1: Tensor, z2: Tensor) -> dict[str, float]:
        # acc_pos: how often the other view is the nearest of the 2N - 1 candidates (the loss's top-1).
        z = torch.cat([z1, z2]).float()
        n = z1.shape[0]
        sim = (z @ z.T).fill_diagonal_(float("-inf"))
        idx = torch.arange(n, device=z.device)
        target = torch.cat([idx + n, idx])
        acc = (sim.argmax(dim=1) == target).float().mean()
        pos = sim.gather(1, target[:, None]).mean()
        values = torch.stack([loss.detach().float(), acc, pos]).tolist()
        return dict(zip(("loss", "acc_pos", "sim_pos"), values, strict=True))
