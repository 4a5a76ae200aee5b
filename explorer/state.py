"""One store opened lazily for the explorer, and what the explorer derives from it per image.

Nothing here loads the attention array: a clicked token reads one stored chunk through
`ds.attn.weights` and every cache (images, rows, statistics, pictures) lives on the Dataset's
`ds.attn` accessor, so there is one cache per opened store and none in this module.

Reading while writing: a store opened from a path is re-checked at most every `poll_seconds`
(its `attention` shape and `complete` flags, read straight from zarr). When an extraction has
added or finished images the Dataset is reopened, which starts fresh caches; only complete
images are ever shown.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr
from PIL import Image

from attnstore.analysis.correctness import EXPECTED_ANSWER, RIGHT, has_correctness
from attnstore.analysis.select import stored_pixels
from attnstore.errors import InvalidArgument, NotFound
from attnstore.render.text import display_text, quoted, tokenizer_style
from attnstore.schema import OBJECT_BOX, TokenKind
from attnstore.store import open_dataset
from attnstore.store.remote import store_like
from explorer.tokens import strip_items

THUMB_SIDE = 96
POLL_SECONDS = 2.0  # how often a served store is checked for images an extraction has added


@dataclass
class ImageMeta:
    """Everything about one image except its attention, in memory."""

    index: int
    img: xr.Dataset  # `ds.attn.image(index)`: attention lazy, per-key variables loaded
    name: str
    prompt: str
    answer: str
    width: int  # display copy in the store (pixels)
    height: int
    query_position: np.ndarray  # [query] sequence position of each stored row
    key_query: np.ndarray  # [key] query row of each position, -1 if no row is stored
    first_image_key: int  # sequence position of the first image patch token (n_key if none)
    token_text: list[str]  # [key] raw token text
    display: list[str]  # [key] token text as a reader sees it (attnstore.render.text.display_text)
    items: list[dict]  # token strip items (explorer.tokens.strip_items)

    @property
    def n_query(self) -> int:
        return int(self.query_position.shape[0])

    @property
    def n_key(self) -> int:
        return len(self.token_text)

    def query_of(self, key: int) -> int:
        """Query row of the token at sequence position `key`; explains why when there is none."""
        if not 0 <= key < self.n_key:
            raise InvalidArgument("position", f"{key} does not exist: image {self.index} has {self.n_key} tokens")
        row = int(self.key_query[key])
        if row < 0:
            raise InvalidArgument(
                "position",
                f"{key} ({quoted(self.display[key])}) has no stored attention row "
                "(the store keeps text rows only): pick a text token",
            )
        return row

    def before_image(self, key: int) -> bool:
        """True for a token that comes before every image patch (causal attention cannot see them)."""
        return key < self.first_image_key

    def chose_the_answer(self, position: int) -> str | None:
        """The first answer token when `position` is the prompt's last token, whose row chose it (a
        decoder picks each token from the row before it), else None. Answer tokens are not named:
        their rows are read as the token's own attention, as every other token's."""
        kinds = self.img["token_kind"].values
        generated = TokenKind.GENERATED
        if position + 1 < len(kinds) and kinds[position] != generated and kinds[position + 1] == generated:
            return self.display[position + 1]
        return None

    def answer_step_token(self) -> int | None:
        """The stored row that chose the first answer token (the prompt's last row), else None."""
        first = self.default_token()
        kinds = np.asarray(self.img["token_kind"].values)
        if first is None or kinds[first] != TokenKind.GENERATED or first - 1 not in set(self.query_position[:]):
            return None
        return first - 1

    def default_token(self) -> int | None:
        """First answer token (else the last stored row): what a fresh view shows."""
        kinds = np.asarray(self.img["token_kind"].values)
        answer = [int(p) for p in self.query_position if kinds[p] == TokenKind.GENERATED]
        if answer:
            return answer[0]
        return int(self.query_position[-1]) if self.n_query else None


class StoreState:
    """One store, opened lazily; every cache lives on `self.ds.attn`.

    Parameters
    ----------
    source : store path, fsspec URL, or an already opened Dataset (`open_dataset(..., chunks=None)`;
        a Dataset is never reopened, so it does not follow a running extraction).
    storage_options : fsspec options for remote stores.
    poll_seconds : how often a store opened from a path is checked for new or finished images.
    """

    def __init__(self, source: str | xr.Dataset, storage_options: dict | None = None, poll_seconds=POLL_SECONDS):
        self._storage_options = storage_options
        self.poll_seconds = poll_seconds
        if isinstance(source, xr.Dataset):
            self._path, self._ds = None, source
            self.label = str(source.encoding.get("source", "dataset"))
        else:
            self._path, self.label = str(source), str(source)
            self._ds = open_dataset(self._path, storage_options=storage_options)
        self._lock = threading.Lock()
        self._request = threading.local()  # `pin`: the Dataset this thread's request reads
        self._checked = time.monotonic()
        self._seen = self._status() if self._path else None
        self.attrs = dict(self._ds.attrs)
        self.compare: StoreState | None = None  # a second store shown beside this one (explorer.panels.compare)

    # -- the Dataset, kept current --------------------------------------------------------------
    @property
    def ds(self) -> xr.Dataset:
        """The store's Dataset; reopened when an extraction has added or finished images since
        (within a request: the one `pin` took, so a click never straddles a reopen)."""
        pinned = getattr(self._request, "ds", None)
        if pinned is not None:
            return pinned
        if self._path is not None and time.monotonic() - self._checked >= self.poll_seconds:
            self.refresh()
        return self._ds

    def pin(self) -> None:
        """Take one snapshot of the store for this thread's request: every read of the request
        (the image's metadata, its map, the figure) sees the same Dataset, even if the store is
        reopened meanwhile for other requests. `unpin` ends it."""
        self._request.ds = None
        self._request.ds = self.ds

    def unpin(self) -> None:
        self._request.ds = None

    def refresh(self) -> bool:
        """Check the store now; reopen it (fresh caches) if images were added or completed."""
        if self._path is None:
            return False
        with self._lock:
            self._checked = time.monotonic()
            status = self._status()
            if status == self._seen:
                return False
            self._ds, self._seen = open_dataset(self._path, storage_options=self._storage_options), status
            return True

    def _status(self) -> tuple:
        """(attention shape, complete flags): what changes while an extraction writes."""
        target, options = store_like(self._path, self._storage_options)
        group = zarr.open_group(store=target, mode="r", zarr_format=3, storage_options=options, use_consolidated=False)
        return tuple(group["attention"].shape), np.asarray(group["complete"][:], dtype=bool).tobytes()

    def cached(self, kind: str, make, key=None, maxsize: int | None = None) -> Any:
        """`ds.attn.cached` of the current Dataset (things the explorer derives, e.g. figure geometry)."""
        return self.ds.attn.cached(f"explorer-{kind}", make, key, maxsize)

    # -- store-level ------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return int(self.ds.sizes["image"])

    @property
    def n_layers(self) -> int:
        return int(self.ds.sizes["layer"])

    @property
    def n_heads(self) -> int:
        return int(self.ds.sizes["head"])

    @property
    def has_objects(self) -> bool:
        """Whether the store keeps object boxes (`object_box`)."""
        return OBJECT_BOX in self.ds

    @property
    def no_patch_map(self) -> str:
        """Why the store has no patch map (extracted in sequence-only mode), or "" when it has one."""
        if self.attrs.get("geometry") != "none":
            return ""
        return f"no patch map: {self.attrs.get('geometry_note', 'the store has no patch geometry')}"

    @property
    def random_weights(self) -> bool:
        return bool(self.attrs.get("random_weights", False))

    @property
    def model_id(self) -> str:
        return str(self.attrs.get("model_id", "?"))

    def catalog(self) -> dict[str, np.ndarray]:
        """Names, answers (lower-cased copies for search), complete flags, expected answers ("" if the
        store has none) and whether each answer is right (1 / 0 / -1 unknown) of every image  # [image]."""
        ds = self.ds

        def make() -> dict[str, np.ndarray]:
            names = np.array([str(n) for n in ds["image_name"].values], dtype=str)
            answers = np.array([str(a) for a in ds["answer"].values], dtype=str)
            expected = ds[EXPECTED_ANSWER].values if EXPECTED_ANSWER in ds else np.full(len(names), "")
            return {
                "name": names,
                "answer": answers,
                "search": np.char.lower(np.char.add(np.char.add(names, " "), answers)),
                "complete": np.asarray(ds["complete"].values).astype(bool),
                "expected": np.array([str(e) for e in expected], dtype=str),
                "correct": np.asarray(ds.attn.answer_correct().values),
            }

        return ds.attn.cached("explorer-catalog", make)

    def first_image(self) -> int | None:
        """The image a fresh view opens on: the first complete one whose answer is right when the
        store says which are (a first view should show a model that answers right), else the first
        complete one; None while none is complete."""
        catalog = self.catalog()
        right = np.flatnonzero(catalog["complete"] & (catalog["correct"] == RIGHT))
        done = right if right.size else np.flatnonzero(catalog["complete"])
        return int(done[0]) if done.size else None

    @property
    def judges_answers(self) -> bool:
        """Whether the store says which answers are right (`expected_answer` or `pope_correct`)."""
        return has_correctness(self.ds)

    def check_image(self, image: Any) -> int:
        """`image` as a valid, complete image index, or an error saying what is wrong."""
        try:
            index = int(image)
        except (TypeError, ValueError):
            raise InvalidArgument("image", f"{image!r} is not a number") from None
        n = self.n_images
        if not 0 <= index < n:
            raise NotFound(f"image {index} does not exist: the store has {n} image{'s' * (n != 1)}", "image")
        if not self.catalog()["complete"][index]:
            raise NotFound(f"image {index} is not complete in the store yet (extraction unfinished)", "image")
        return index

    # -- per image ---------------------------------------------------------------------------------
    def image(self, index: Any) -> ImageMeta:
        index = self.check_image(index)
        ds = self.ds
        # 64 images (~0.3 MB each): 8 thrashed when a team clicked through 20 images (3x the CPU per click)
        return ds.attn.cached("explorer-image", lambda: _image_meta(ds, index), key=index, maxsize=64)

    def stats(self, index: int, row: int) -> dict[str, xr.DataArray]:
        """Image share and entropy of one token for every layer and head  # [layer, head]; cached."""
        ds = self.ds
        return ds.attn.cached(
            "explorer-stats",
            lambda: {"share": ds.attn.image_share(row, index), "entropy": ds.attn.entropy(row, index)},
            key=(index, row),
            maxsize=64,
        )

    # -- pictures ------------------------------------------------------------------------------------
    def pixels(self, index: int) -> np.ndarray:
        """The display copy of an image  # [y, x, rgb] uint8 (one chunk read)."""
        return stored_pixels(self.image(index).img, index)

    def picture_png(self, index: int) -> bytes:
        return self.cached("picture", lambda: _png(self.pixels(index)), key=index)

    def thumbnail_png(self, index: int) -> bytes:
        """A small PNG of the image (built on first request only: 10k images cost nothing up front)."""
        ds = self.ds
        n = int(ds.sizes["image"])
        if not 0 <= index < n:
            raise NotFound(f"image {index} does not exist: the store has {n} image{'s' * (n != 1)}", "image")

        def make() -> bytes:
            h, w = (int(v) for v in ds[["image_height", "image_width"]].isel(image=index).to_array().values)
            pixels = np.asarray(ds["pixels"].isel(image=index, pixel_y=slice(0, h), pixel_x=slice(0, w)).values)
            picture = Image.fromarray(pixels)
            picture.thumbnail((THUMB_SIDE, THUMB_SIDE))
            return _png(np.asarray(picture))

        return ds.attn.cached("explorer-thumbnail", make, key=index, maxsize=512)


def _image_meta(ds: xr.Dataset, index: int) -> ImageMeta:
    img = ds.attn.image(index)
    qpos = np.asarray(img["query_position"].values, np.int64)  # [query]
    texts = [str(t) for t in img["token_text"].values]
    kinds = np.asarray(img["token_kind"].values)
    key_query = np.full(len(texts), -1, np.int64)
    key_query[qpos] = np.arange(qpos.shape[0])
    patches = np.flatnonzero(np.isin(kinds, [int(TokenKind.IMAGE_TILE), int(TokenKind.IMAGE_GLOBAL)]))
    style = tokenizer_style(texts)
    items = strip_items(
        texts,
        kinds,
        np.asarray(img["patch_tile"].values),
        np.asarray(img["patch_row"].values),
        np.asarray(img["patch_col"].values),
        qpos,
        int(img["tile_cols"].values),
    )
    return ImageMeta(
        index=index,
        img=img,
        name=str(img["image_name"].values),
        prompt=str(img["prompt"].values),
        answer=str(img["answer"].values),
        width=int(img.sizes["pixel_x"]),
        height=int(img.sizes["pixel_y"]),
        query_position=qpos,
        key_query=key_query,
        first_image_key=int(patches[0]) if patches.size else len(texts),
        token_text=texts,
        display=[display_text(t, style) for t in texts],
        items=items,
    )


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)  # speed over size: served once
    return buf.getvalue()
