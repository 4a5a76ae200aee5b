"""Finding and decoding input images, with clear errors for missing or corrupt files."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from attnstore.errors import InputImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DATA_DIR = Path(__file__).parents[1] / "data"


def load_image(path: str | Path) -> Image.Image:
    """Decode an image fully (so a truncated file fails here, not inside the model) as RGB."""
    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"image not found: {path}")
    try:
        with Image.open(path) as img:  # over PIL's pixel limit (~178 MP): refused here, before decoding
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as err:
        raise InputImageError(f"image {path} is too large to decode safely: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputImageError(f"cannot decode image {path}: {err}") from err


def collect_images(images: list[str] | None, image_dir: str | None, limit: int | None = None) -> list[Path]:
    """Image paths from explicit files and/or a folder (sorted, recursive), at most `limit` (0 = all)."""
    paths = [Path(p) for p in images or []]
    if image_dir:
        root = Path(image_dir)
        if not root.is_dir():
            raise InputImageError(f"image folder {root} is not a folder", param="image_dir")
        paths += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputImageError("no images given: give image files or a folder of images", param="images")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputImageError(
            f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if missing[1:] else "")
        )
    return paths[:limit] if limit else paths


def image_name(path: Path, image_dir: str | None) -> str:
    """Stable name of an image inside a store: its path relative to --image-dir, else its file name."""
    if image_dir:
        try:
            return path.resolve().relative_to(Path(image_dir).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def sample_images() -> list[Path]:
    """The small demo images shipped with the package (made with pillow, see scripts/make_sample_images.py)."""
    return sorted(DATA_DIR.glob("sample_*.png"))
