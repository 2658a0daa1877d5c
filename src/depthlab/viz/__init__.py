"""Visualisation: colourised depth maps, figures and reports (matplotlib; nothing imported at package import)."""
from depthlab.viz.colorize import colorize, get_cmap, side_by_side

__all__ = ["colorize", "get_cmap", "side_by_side"]
