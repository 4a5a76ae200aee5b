"""Component ids of the explorer, in one place. Panels and tests import them; assets/explorer.js reads
the ones it needs from the page (`for_js()`, written by the layout as a data attribute), so no id is
spelled twice."""

from __future__ import annotations

# -- state (dcc.Store / dcc.Location) ---------------------------------------------------------
URL = "url"
IMAGE = "sel-image"  # data: int, the image index
TOKEN = "sel-token"  # data: int | None, the selected token's sequence position (key index)
REVERSE = "sel-reverse"  # data: {"image", "key"} | None, the image patch of the reverse view
DRAWN_IMAGE = "drawn-image"  # data: int | None, the image the main figure was built for
STRIP_DATA = "strip-data"  # data: token strip items (rendered by assets/explorer.js)
REVERSE_DATA = "reverse-data"  # data: {"keys": [...], "values": [...]} highlights in the strip
PICKER_PAGE = "picker-page"  # data: {"page": int, "image": int | None} the page shown and its current image
PICKER_CLICK = "picker-click"  # data: {"image": int, "t": ms} set by assets/explorer.js
JS_SINK = "js-sink"  # dummy output of clientside callbacks that only touch the DOM
URL_SINK = "url-sink"
SETTLED = "view-settled"  # data: the view-state JSON, set ~150 ms after the view stops changing (side panels)

# -- visible components -------------------------------------------------------------------
HEADER_BADGE = "random-badge"
MESSAGE = "message"  # problems of the current view
NOTICE = "notice"  # problems found in the permalink
STATUS = "status"
VIEW_STATE = "view-state"  # hidden <pre>: JSON of the current view (tests and benchmarks read it)
RENDER_SIGNAL = "render-signal"  # hidden element the JS updates after each heatmap render

PICKER_SEARCH = "picker-search"
PICKER_LIST = "picker-list"
PICKER_PREV = "picker-prev"
PICKER_NEXT = "picker-next"
PICKER_INFO = "picker-info"
PICKER_POLL = "picker-poll"  # dcc.Interval: re-check the store for new images

STRIP = "token-strip"
FIGURE = "heatmap"

LAYER = "layer-slider"
HEAD = "head-slider"
MODE = "mode"
OVER = "over"
NORM = "norm"
OPACITY = "opacity"
CMAP = "cmap"
GRID = "grid-lines"
BOXES = "object-boxes"
SCALE = "colour-scale"
PLAY = "play"
PLAY_TIMER = "play-timer"

SHARE = "share-chart"
MATRIX = "matrix"
MATRIX_METRIC = "matrix-metric"
GALLERY = "gallery"
GALLERY_SORT = "gallery-sort"
REVERSE_CHART = "reverse-chart"
REVERSE_INFO = "reverse-info"
MODALITY_CHART = "modality-chart"
MODALITY_INFO = "modality-info"
SINKS_INFO = "sinks-info"
COMPARE_FIGURE = "compare-figure"
COMPARE_CHART = "compare-chart"
COMPARE_INFO = "compare-info"
PATCH_QUERY_ON = "patch-query-on"  # checklist: show where the clicked patch looks
PATCH_QUERY_INFO = "patch-query-info"
PATCH_QUERY_MAP = "patch-query-map"  # the patch's map over the image
PATCH_QUERY_TEXT = "patch-query-text"  # its attention over the text tokens (bars)

EXPORT_HEATMAP_PNG = "export-heatmap-png"
EXPORT_OVERLAY_PNG = "export-overlay-png"
EXPORT_CSV = "export-csv"
EXPORT_SVG = "export-svg"
DOWNLOAD = "download"


# assets/explorer.js finds this JSON in the `data-attnstore-ids` attribute of one element of the page
JS_IDS = "attnstore-ids"  # the element holding them
JS_IDS_ATTRIBUTE = "data-attnstore-ids"


def for_js() -> dict[str, str]:
    """The ids assets/explorer.js uses, by the names it uses."""
    return {
        "strip": STRIP,
        "stripData": STRIP_DATA,
        "token": TOKEN,
        "reverse": REVERSE,
        "pick": PICKER_CLICK,
        "head": HEAD,
        "layer": LAYER,
        "mode": MODE,
        "signal": RENDER_SIGNAL,
        "figure": FIGURE,
        "viewState": VIEW_STATE,
        "settled": SETTLED,
    }
