"""Views: batched, per-sample-parameter augmentation on the training device.

Images arrive as ``uint8`` ``(B, 3, H, W)``; a recipe draws one parameter set per sample with an explicit
``torch.Generator`` (:mod:`invarlab.views.params`), applies the pure ops of :mod:`invarlab.views.ops`, and
returns the views together with the parameters, which later methods reuse (LooC, constrained crops).
"""

from invarlab.views import ops
from invarlab.views.autoaugment import AutoAugmentParams, sample_autoaugment
from invarlab.views.looc import LoocViewConfig, LoocViewParams, LoocViews, looc_views, sample_looc_params
from invarlab.views.multicrop import MultiCropConfig, MultiCropViews, multicrop_views
from invarlab.views.params import (
    ViewParams,
    sample_crop_boxes,
    sample_jitter,
    sample_rotation,
)
from invarlab.views.recipes import (
    ViewConfig,
    Views,
    apply_view,
    make_views,
    mocov2_config,
    mocov2_views,
    sample_view_params,
    simclr_config,
    simclr_views,
)
from invarlab.views.texture import TextureConfig, TextureParams

__all__ = [
    "AutoAugmentParams",
    "LoocViewConfig",
    "LoocViewParams",
    "LoocViews",
    "MultiCropConfig",
    "MultiCropViews",
    "TextureConfig",
    "TextureParams",
    "ViewConfig",
    "ViewParams",
    "Views",
    "apply_view",
    "looc_views",
    "make_views",
    "mocov2_config",
    "mocov2_views",
    "multicrop_views",
    "ops",
    "sample_autoaugment",
    "sample_crop_boxes",
    "sample_jitter",
    "sample_looc_params",
    "sample_rotation",
    "sample_view_params",
    "simclr_config",
    "simclr_views",
]
