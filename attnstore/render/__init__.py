"""Pictures and files of maps (pure functions, no matplotlib, no browser).

colors    colour maps as lookup tables (shared by PNGs, SVGs and the explorer's figures)
raster    grids -> heatmap / overlay images placed by the store's geometry
geometry  where an image's grids go in a picture (shared by the explorer and the exports)
scale     honest colour scales: a map's colour top from its image share (negligible maps faded)
text      token text as a reader sees it (BPE markers, byte-level tokens), one way everywhere
export    MapResult -> PNG / overlay PNG / CSV / SVG / JSON bytes: the one export path
"""

from attnstore.render.colors import CMAPS, colorize, colormap_lut, plotly_colorscale
from attnstore.render.export import FORMATS, Style, export_map, file_name, map_record
from attnstore.render.raster import heatmap_image, overlay, place_grid, png_bytes, uniform_boxes

__all__ = [
    "CMAPS",
    "FORMATS",
    "Style",
    "colorize",
    "colormap_lut",
    "export_map",
    "file_name",
    "heatmap_image",
    "map_record",
    "overlay",
    "place_grid",
    "plotly_colorscale",
    "png_bytes",
    "uniform_boxes",
]
