"""The controlled rendered world: every factor of every image is known and can be varied alone."""

from .catalog import CATEGORY_GROUPS, CATEGORY_NAMES, build_catalog
from .factors import Factors
from .render import RenderOutput, World, render

__all__ = ["CATEGORY_GROUPS", "CATEGORY_NAMES", "Factors", "RenderOutput", "World", "build_catalog", "render"]
