"""What a store holds, in one place: `attnstore info` prints it, `ds.attn.summary()` shows it as HTML
in a notebook (one library function, two front ends)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import fsspec
import numpy as np
import xarray as xr

from attnstore.store.xarray_glue import reader_name

THUMB_SIDE = 64  # pixels of a summary thumbnail's longer side


def store_size_bytes(path: str, storage_options: dict | None = None) -> int | None:
    """Total bytes of the store's files; None over http(s), which cannot list files."""
    from attnstore.store.remote import protocol, resolve_storage_options

    if protocol(path) in ("http", "https"):
        return None
    fs, root = fsspec.core.url_to_fs(path, **(resolve_storage_options(path, storage_options) or {}))
    return int(fs.du(root))


@dataclass
class ImageRow:
    index: int
    name: str
    tiles: str  # "3x4"
    n_key: int
    answer: str
    complete: bool
    thumbnail: bytes | None = None  # PNG


@dataclass
class StoreSummary:
    """A store at a glance: model, dims, size, read backend and its first images."""

    path: str
    attrs: dict
    sizes: dict[str, int]  # the attention array's dims
    n_images: int
    n_complete: int
    size_bytes: int | None
    backend: str
    rows: list[ImageRow] = field(default_factory=list)

    @property
    def size_text(self) -> str:
        return "unknown (http)" if self.size_bytes is None else f"{self.size_bytes / 1e6:.1f} MB"

    @property
    def model_text(self) -> str:
        return f"{self.attrs.get('model_id', '?')} ({self.attrs.get('model_family', '?')})"

    def _repr_html_(self) -> str:
        esc = html.escape
        a = self.attrs
        warn = " <b style='color:#b8860b'>RANDOM WEIGHTS</b>" if a.get("random_weights") else ""
        dims = ", ".join(f"{d}={n}" for d, n in self.sizes.items())
        head = (
            f"<div><b>{esc(self.path)}</b> · schema v{esc(str(a.get('schema_version', '?')))}<br>"
            f"model: {esc(self.model_text)}{warn}<br>attention({esc(dims)}) float16<br>"
            f"images: {self.n_images} ({self.n_complete} complete) · size on disk: {self.size_text} · "
            f"read backend: {esc(self.backend)}</div>"
        )
        cells = "".join(
            f"<tr><td>{r.index}</td><td>{_img_tag(r.thumbnail)}</td><td>{esc(r.name)}</td><td>{r.tiles}</td>"
            f"<td>{r.n_key}</td><td style='text-align:left'>{esc(r.answer[:80])}</td>"
            f"<td>{'yes' if r.complete else '<b>no</b>'}</td></tr>"
            for r in self.rows
        )
        more = f"<div>... {self.n_images - len(self.rows)} more images</div>" if self.n_images > len(self.rows) else ""
        table = ("<table class='attnstore-summary'><tr><th>#</th><th></th><th>image</th><th>tiles</th>"
                 f"<th>tokens</th><th>answer</th><th>ok</th></tr>{cells}</table>")  # fmt: skip
        return head + table + more


def _img_tag(png: bytes | None) -> str:
    return "" if png is None else f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def store_summary(ds: xr.Dataset, path: str | None = None, max_rows: int = 50, thumbnails: bool = False,
                  size: bool = True) -> StoreSummary:  # fmt: skip
    """The summary of an opened store (`path`: where it was opened from; default the Dataset's source).
    Only the rows shown are read: at 10,000 images reading every answer chunk takes seconds."""
    path = path or str(ds.encoding.get("source", "?"))
    complete = ds["complete"].values.astype(bool)
    head = ds[["image_name", "answer", "tile_rows", "tile_cols", "n_key"]].isel(image=slice(0, max_rows))
    names, answers = head["image_name"].values, head["answer"].values
    trows, tcols, nkey = head["tile_rows"].values, head["tile_cols"].values, head["n_key"].values
    rows = [
        ImageRow(
            i,
            str(names[i]),
            f"{trows[i]}x{tcols[i]}",
            int(nkey[i]),
            str(answers[i]),
            bool(complete[i]),
            _thumbnail(ds, i) if thumbnails else None,
        )  # fmt: skip
        for i in range(min(complete.size, max_rows))
    ]
    return StoreSummary(
        path=path,
        attrs=dict(ds.attrs),
        sizes={str(d): int(n) for d, n in ds["attention"].sizes.items()},
        n_images=int(complete.size),
        n_complete=int(complete.sum()),
        size_bytes=_size(path) if size and path != "?" else None,
        backend=reader_name(ds),
        rows=rows,
    )


def _size(path: str) -> int | None:
    """The store's size, or None where it cannot be listed (http, or a remote store needing options)."""
    try:
        return store_size_bytes(path)
    except (OSError, ValueError, ImportError):
        return None


def _thumbnail(ds: xr.Dataset, index: int) -> bytes:
    """A small PNG of image `index` (its own size, not the padded pixel array)."""
    from PIL import Image

    h, w = (int(ds[v].values[index]) for v in ("image_height", "image_width"))
    pixels = np.asarray(ds["pixels"].isel(image=index, pixel_y=slice(0, h), pixel_x=slice(0, w)).values)
    picture = Image.fromarray(pixels)
    picture.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()
