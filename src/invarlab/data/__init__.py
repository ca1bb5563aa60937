"""Data sources: map-style datasets of ``uint8`` CHW images with integer labels, and their collate.

Every dataset here returns ``(image, label, index)``: ``image`` a ``uint8`` tensor ``(3, H, W)`` of one fixed
size, ``label`` an ``int`` (class / category), ``index`` the sample's position in the dataset (to look up its
metadata later). :func:`collate_uint8` stacks them; batches travel to the device as ``uint8`` and the method
builds its views there (see DESIGN.md, "Data flow").
"""

from invarlab.data.collate import Batch, collate_uint8, split_indices
from invarlab.data.davis import DavisVideos, Video
from invarlab.data.folder import IMAGE_EXTENSIONS, FolderDataset
from invarlab.data.sets import InvarianceSets
from invarlab.data.voc import VOCClassification, VOCSegmentation
from invarlab.data.world import WorldDataset, label_column

__all__ = [
    "IMAGE_EXTENSIONS",
    "Batch",
    "DavisVideos",
    "FolderDataset",
    "InvarianceSets",
    "VOCClassification",
    "VOCSegmentation",
    "Video",
    "WorldDataset",
    "collate_uint8",
    "label_column",
    "split_indices",
]
