"""LLaVA-NeXT and LLaVA-OneVision adapters: any-resolution images (base view + crop grid).

Token layout of one image: every position of the image block is an `<image>` token, filled by
the model with, in order,
    base view     N x N patches of the whole picture squashed to one crop square (row-major);
    crop grid     the picture resized into the grid pinpoint that fits it best (aspect kept,
                  centred, zero-padded), cut into crop squares; their patches stitched into one
                  grid, the token rows / columns that lie on the padding removed ("unpadding"),
                  then, row by row, the row's patches and one `image_newline` token.
LLaVA-OneVision (`anyres_max_9`) bilinearly resamples the unpadded grid down when it holds more
than about nine crops' worth of patches; the resampled cells cover the same region evenly.

Every number comes from what the processor produced for this image: the original size
(`image_sizes`), the crop side (`pixel_values`), the chosen crop grid (the processor's pinpoints,
checked against the number of crops in `pixel_values`), and the block length (checked against
the `<image>` tokens). The base view is a global view over the whole picture; the crop grid one
tile view over the unpadded region mapped back to the original picture; newline tokens are image
specials without a box. Boxes are exact: where the crop side is not a whole number of patches
(OneVision's 384 px crops, 14 px patches) the last pixels of each crop reach no patch, so the
crop grid's boxes are computed crop by crop. When unpadding or resampling leaves crops of unequal
token counts the crop grid is stored as one tile (the schema's tiles are equal); otherwise each
crop is a tile.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from attnstore.geometry import ImageLayout, View, finish_grids, global_view, place_view, text_layout
from attnstore.models.base import ModelAdapter, SavesAsParent
from attnstore.models.llava import IMAGE_TOKEN, LlavaAdapter
from attnstore.schema import TokenKind

VIDEO_TOKEN = "<video>"
QWEN2_CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# llava-hf/llava-onevision-qwen2-*-hf chat template: "<|im_start|>user <image>\nPROMPT<|im_end|><|im_start|>assistant\n"
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT (LLaVA-1.6): CLIP crops, unpadded crop grid with a newline token per row."""

    family = "llava_next"

    def prepare(self, image, prompt: str) -> dict:
        # `image_sizes` keeps the original size: no need for LLaVA-1.5's attribute.
        return ModelAdapter.prepare(self, image, prompt)

    @property
    def max_crops(self) -> int | None:
        """OneVision's `anyres_max_N` (resample above about N crops' worth of patches); None: never."""
        return None

    def banned_token_ids(self) -> list[int]:
        return self.known_token_ids([IMAGE_TOKEN, VIDEO_TOKEN])

    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        ip = self.processor.image_processor
        pixel_shape = tuple(int(n) for n in inputs["pixel_values"].shape)
        if base_side(ip) != pixel_shape[-1]:  # then the base view was also cropped: not one whole-picture view
            raise RuntimeError(
                f"image processor squashes the base view to {base_side(ip)} px but its views are {pixel_shape[-1]} px"
            )
        grid = anyres_grid(
            original_hw=tuple(int(n) for n in np.asarray(inputs["image_sizes"]).reshape(-1, 2)[0]),
            pixel_shape=pixel_shape,
            patch=self.patch_size,
            pinpoints=ip.image_grid_pinpoints,
            max_crops=self.max_crops,
        )
        specials = set(self.tokenizer.all_special_tokens) - {IMAGE_TOKEN}
        positions = np.flatnonzero(np.asarray(input_ids) == self.image_token_id)
        return place_anyres(text_layout(self.token_strings(input_ids), specials), grid, positions)

    def processor_settings(self) -> dict:
        """Base provenance plus what chooses and cuts the crops."""
        ip = self.processor.image_processor
        return {
            **ModelAdapter.processor_settings(self),
            "image_grid_pinpoints": [[int(h), int(w)] for h, w in ip.image_grid_pinpoints],
            "crop_side": crop_side(ip),
            "do_pad": bool(getattr(ip, "do_pad", False)),
            "patch_size": self.patch_size,
            "vision_aspect_ratio": getattr(self.processor, "vision_aspect_ratio", None),
        }

    def max_image_tokens(self) -> int:
        """Base view + the largest crop grid any pinpoint can give, with a newline per row."""
        ip = self.processor.image_processor
        side = crop_side(ip)
        n = side // self.patch_size
        grids = [(h // side * n, w // side * n) for h, w in ip.image_grid_pinpoints]  # stitched patches
        return n * n + max(_max_crop_tokens(rows, cols, n, self.max_crops) for rows, cols in grids)


@functools.cache
def onevision_images_processor_class() -> type:
    """`LlavaOnevisionProcessor` without its video processor (torchvision); saves and loads as the real one."""
    from transformers import LlavaOnevisionProcessor

    class LlavaOnevisionImagesProcessor(SavesAsParent, LlavaOnevisionProcessor):
        # ProcessorMixin loads and checks the sub-processors named in this signature: no video_processor.
        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            num_image_tokens=None,
            vision_feature_select_strategy=None,
            chat_template=None,
            vision_aspect_ratio="anyres_max_9",
            **kwargs,
        ):
            kwargs.pop("video_processor", None)
            super().__init__(
                image_processor,
                tokenizer,
                None,
                num_image_tokens=num_image_tokens,
                vision_feature_select_strategy=vision_feature_select_strategy,
                chat_template=chat_template,
                vision_aspect_ratio=vision_aspect_ratio,
                **kwargs,
            )

    return LlavaOnevisionImagesProcessor


class LlavaOnevisionAdapter(LlavaNextAdapter):
    """LLaVA-OneVision: SigLIP crops, unpadded grid resampled down to about nine crops, newline per row."""

    family = "llava_onevision"
    processor_class = staticmethod(onevision_images_processor_class)  # its video processor needs torchvision

    @property
    def max_crops(self) -> int | None:
        ratio = getattr(self.processor, "vision_aspect_ratio", None) or self.model.config.vision_aspect_ratio
        return int(ratio.removeprefix("anyres_max_"))


# -- geometry -----------------------------------------------------------------------------


def crop_side(image_processor) -> int:
    """Side in pixels of the crops the image processor cuts (its own rule: crop_size, else size)."""
    crop, size = getattr(image_processor, "crop_size", None), image_processor.size
    if crop and crop.get("height"):
        return int(crop["height"])
    return int(size.get("height") or size["shortest_edge"])


def base_side(image_processor) -> int | None:
    """Side in pixels of the square the base view is squashed to (`size`); None if not a square or not resized."""
    size = image_processor.size
    if not getattr(image_processor, "do_resize", True):
        return None
    if size.get("height") or size.get("width"):
        return int(size["height"]) if size.get("height") == size.get("width") else None
    return int(size["shortest_edge"])


@dataclass(frozen=True)
class AnyresGrid:
    """Where one any-resolution image's tokens come from.

    base : patches per side of one view (crop side // patch; a remainder of pixels is not seen).
    base_extent : share of the base view's side its patches cover (base * patch / crop side).
    crops : (rows, cols) of the crop grid the processor chose.
    kept : (row0, row1, col0, col1) stitched patch rows / columns left after unpadding.
    ys, xs : # [rows, 2], [cols, 2] each crop-grid token row's / column's (start, end) on the
        original picture, normalised (may pass [0, 1] where it lies on padding).
    """

    base: int
    base_extent: float
    crops: tuple[int, int]
    kept: tuple[int, int, int, int]
    ys: np.ndarray
    xs: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the crop-grid tokens (after OneVision's resampling)."""
        return self.ys.shape[0], self.xs.shape[0]

    @property
    def n_tokens(self) -> int:
        rows, cols = self.shape
        return self.base * self.base + rows * (cols + 1)  # base view, then each row + its newline

    @property
    def equal_crops(self) -> bool:
        """True when every crop keeps all its base x base patches (then each crop is one tile)."""
        r0, r1, c0, c1 = self.kept
        rows, cols = self.crops
        return self.shape == (r1 - r0, c1 - c0) == (rows * self.base, cols * self.base)

    def boxes(self) -> np.ndarray:
        """Crop-grid token boxes in row-major order, clipped to the picture  # [token, 4] float32."""
        row, col = np.divmod(np.arange(self.ys.shape[0] * self.xs.shape[0]), self.xs.shape[0])
        boxes = np.stack([self.xs[col, 0], self.ys[row, 0], self.xs[col, 1], self.ys[row, 1]], axis=1)
        return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def anyres_grid(original_hw, pixel_shape, patch: int, pinpoints, max_crops: int | None) -> AnyresGrid:
    """The crop grid of one image, from the processor's output and settings.

    Parameters
    ----------
    original_hw : the processor's `image_sizes` entry, (height, width) of the original picture.
    pixel_shape : `pixel_values` shape, # [1, view, channel, side, side]; view 0 is the base view.
    patch : the vision tower's patch size in pixels.
    pinpoints : the image processor's `image_grid_pinpoints`, (height, width) in pixels.
    max_crops : OneVision's N of `anyres_max_N`; None for LLaVA-NeXT (no resampling).
    """
    from transformers.image_processing_utils import select_best_resolution

    height, width = original_hw
    *_, n_views, _, side_h, side = pixel_shape
    if side_h != side or side < patch:
        raise RuntimeError(f"processor produced {side_h}x{side} crops, not squares of {patch} px patches")
    best_h, best_w = select_best_resolution((height, width), [list(p) for p in pinpoints])
    crops = (best_h // side, best_w // side)
    if n_views < crops[0] * crops[1] + 1:
        raise RuntimeError(f"processor produced {n_views} views, expected a base view + {crops[0]}x{crops[1]} crops")
    base = side // patch
    kept = _unpadded(height, width, crops[0] * base, crops[1] * base)
    r0, r1, c0, c1 = kept
    rows, cols = _resampled(r1 - r0, c1 - c0, base, max_crops)
    # The crops cut the best-fit canvas: the picture resized into it (aspect kept) and centred.
    new_h, new_w = _fitted_size(height, width, best_h, best_w)
    top, left = (best_h - new_h) // 2, (best_w - new_w) // 2
    ys = (_token_edges(r0, r1, rows, base, side, patch) - top) / new_h
    xs = (_token_edges(c0, c1, cols, base, side, patch) - left) / new_w
    return AnyresGrid(base, base * patch / side, crops, kept, ys, xs)


def _token_edges(start: int, stop: int, n: int, base: int, side: int, patch: int) -> np.ndarray:
    """Canvas pixel span of each of `n` tokens evenly covering stitched patches [start, stop)  # [n, 2].

    Stitched patch coordinate u lies in crop u // base, at pixel (u % base) * patch of it; a crop's
    last side % patch pixels are seen by no patch, so a span is mapped piecewise, crop by crop.
    """
    edges = start + (stop - start) * np.arange(n + 1) / max(n, 1)  # [n + 1] in patches (fractional if resampled)
    first_crop = np.floor(edges[:-1] / base)  # a start on a crop boundary begins the next crop
    last_crop = np.maximum(np.ceil(edges[1:] / base) - 1, 0)  # an end on a boundary ends the previous one
    starts = first_crop * side + (edges[:-1] - first_crop * base) * patch
    ends = last_crop * side + (edges[1:] - last_crop * base) * patch
    return np.stack([starts, ends], axis=1)


def _unpadded(height: int, width: int, rows: int, cols: int) -> tuple[int, int, int, int]:
    """Patch rows / columns of the stitched rows x cols grid the model keeps (its `unpad_image` rule)."""
    if width / height > cols / rows:  # wider than the canvas: padding above and below
        pad = (rows - int(round(height * (cols / width), 7))) // 2
        return pad, rows - pad, 0, cols
    pad = (cols - int(round(width * (rows / height), 7))) // 2
    return 0, rows, pad, cols - pad


def _resampled(rows: int, cols: int, base: int, max_crops: int | None) -> tuple[int, int]:
    """OneVision's grid after `anyres_max_N` bilinear resampling (unchanged under 1.1 x N crops' area)."""
    if max_crops is None:
        return rows, cols
    ratio = math.sqrt(rows * cols / (max_crops * base**2))
    if ratio <= 1.1:
        return rows, cols
    return int(rows // ratio), int(cols // ratio)


def _max_crop_tokens(rows: int, cols: int, base: int, max_crops: int | None) -> int:
    """Upper bound of crop-grid tokens + newlines from a rows x cols stitched grid, whatever the unpadding.

    Unresampled, the kept area is at most 1.1² x max_crops crops (`_resampled`); resampled, at most
    max_crops crops; newlines are at most `rows`.
    """
    full = rows * (cols + 1)
    if max_crops is None:
        return full
    return min(full, int(1.21 * max_crops * base * base) + rows)


def _fitted_size(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """Size of the picture resized into the target, aspect kept (the processors' `get_patch_output_size`)."""
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


def place_anyres(layout: ImageLayout, grid: AnyresGrid, positions: np.ndarray) -> ImageLayout:
    """Write the base view, the crop grid and the newline tokens at the image block's positions."""
    if positions.shape[0] != grid.n_tokens:
        raise RuntimeError(
            f"the prompt holds {positions.shape[0]} image tokens but the processor's crops give {grid.n_tokens}"
        )
    n_base = grid.base * grid.base
    # The base view is the whole picture squashed to one crop; its patches cover base_extent of each side.
    base_region = (0.0, 0.0, grid.base_extent, grid.base_extent)
    place_view(layout, global_view(grid.base, grid.base, base_region), positions[:n_base])
    rows, cols = grid.shape
    block = positions[n_base:].reshape(rows, cols + 1)  # [row, patches + newline]
    tokens = block[:, :cols].ravel()
    if tokens.size:  # an extreme aspect ratio can unpad the crop grid away (newlines may remain)
        region = (float(grid.xs[0, 0]), float(grid.ys[0, 0]), float(grid.xs[-1, 1]), float(grid.ys[-1, 1]))
        crop_view = View(kind=TokenKind.IMAGE_TILE, region=region, patch_rows=rows, patch_cols=cols, tile=0)
        place_view(layout, crop_view, tokens)
        layout.patch_box[tokens] = grid.boxes()  # exact spans (crops may hold unseen pixels between them)
    layout.kind[block[:, cols]] = int(TokenKind.IMAGE_SPECIAL)  # image_newline: no box
    finish_grids(layout)
    if grid.equal_crops:  # each crop is a tile of base x base patches
        row, col = layout.patch_row[tokens], layout.patch_col[tokens]
        layout.patch_tile[tokens] = row // grid.base * grid.crops[1] + col // grid.base
        layout.tile_rows, layout.tile_cols = grid.crops
    return layout
