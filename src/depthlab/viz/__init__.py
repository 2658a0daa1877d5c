"""Visualisation: colourised depth maps, figures and reports (matplotlib; nothing imported at package import)."""
from depthlab.viz.colorize import color_limits, colorbar, colorize, get_cmap, side_by_side

__all__ = ["color_limits", "colorbar", "colorize", "get_cmap", "side_by_side"]
