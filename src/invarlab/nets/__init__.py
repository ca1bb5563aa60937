"""Networks: torchvision-compatible ResNet backbones, projection heads, momentum copies, checkpoint loaders."""

from invarlab.nets.backbones import (
    ARCHS,
    STEMS,
    BasicBlock,
    Bottleneck,
    ResNet,
    build_backbone,
    resnet18,
    resnet50,
)
from invarlab.nets.checkpoints import (
    LAYOUTS,
    LoadReport,
    describe_state_dict,
    detect_layout,
    export_torchvision_state_dict,
    load_checkpoint,
    load_moco_checkpoint,
    load_torchvision_state_dict,
    make_checkpoint,
    read_checkpoint,
)
from invarlab.nets.heads import (
    HEAD_KINDS,
    ProjectionHead,
    build_head,
    linear_head,
    moco_v2_head,
    simclr_head,
)
from invarlab.nets.momentum import MOCO_MOMENTUM, cosine_momentum, momentum_copy, update_momentum

__all__ = [
    "ARCHS",
    "HEAD_KINDS",
    "LAYOUTS",
    "MOCO_MOMENTUM",
    "STEMS",
    "BasicBlock",
    "Bottleneck",
    "LoadReport",
    "ProjectionHead",
    "ResNet",
    "build_backbone",
    "build_head",
    "cosine_momentum",
    "describe_state_dict",
    "detect_layout",
    "export_torchvision_state_dict",
    "linear_head",
    "load_checkpoint",
    "load_moco_checkpoint",
    "load_torchvision_state_dict",
    "make_checkpoint",
    "moco_v2_head",
    "momentum_copy",
    "read_checkpoint",
    "resnet18",
    "resnet50",
    "simclr_head",
    "update_momentum",
]
