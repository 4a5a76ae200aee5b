"""Object boxes for user images, read from a COCO-style file.

Accepted forms (boxes in pixels of the image file, x, y = top-left corner):

- COCO json: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "bbox": [x, y, w, h],
  "category_id"}], "categories": [{"id", "name"}]};
- a json object: {"image name": [{"label", "x", "y", "w", "h"}, ...], ...};
- jsonl: one object a line, {"image", "label", "x", "y", "w", "h"} (or "bbox": [x, y, w, h]).

Image names match the store's entry names or the file names (basename) of the images.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from attnstore.errors import InvalidArgument, NotFound

Box = tuple[str, float, float, float, float]  # label, x, y, w, h in pixels


def load_boxes(path: str | Path) -> dict[str, list[Box]]:
    """Object boxes by image name, from a COCO json, a name -> boxes json or a jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"boxes file '{path}' does not exist", param="boxes")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return _from_rows([json.loads(line) for line in text.splitlines() if line.strip()], path)
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidArgument("boxes", f"file '{path}' is not valid JSON: {err.msg} (line {err.lineno})") from err
    if isinstance(data, dict) and "annotations" in data:
        return _from_coco(data, path)
    if isinstance(data, dict):
        rows = [{**obj, "image": name} for name, objs in data.items() for obj in _as_list(objs, path)]
        return _from_rows(rows, path)
    if isinstance(data, list):
        return _from_rows(data, path)
    raise InvalidArgument("boxes", f"file '{path}' holds neither COCO annotations nor image -> boxes entries")


def _as_list(objs, path: Path) -> list:
    if not isinstance(objs, list):
        raise InvalidArgument("boxes", f"file '{path}': each image maps to a list of boxes")
    return objs


def _from_coco(data: dict, path: Path) -> dict[str, list[Box]]:
    try:
        names = {img["id"]: img["file_name"] for img in data.get("images", [])}
        labels = {cat["id"]: cat["name"] for cat in data.get("categories", [])}
        rows = [
            {
                "image": names[ann["image_id"]],
                "label": labels.get(ann.get("category_id"), str(ann.get("category_id", "object"))),
                "bbox": ann["bbox"],
            }
            for ann in data["annotations"]
        ]
    except (KeyError, TypeError) as err:
        raise InvalidArgument("boxes", f"file '{path}': COCO entry without {err}") from err
    return _from_rows(rows, path)


def _from_rows(rows: list, path: Path) -> dict[str, list[Box]]:
    boxes: dict[str, list[Box]] = {}
    for n, row in enumerate(rows, 1):
        try:
            x, y, w, h = row["bbox"] if "bbox" in row else (row["x"], row["y"], row["w"], row["h"])
            box = (str(row.get("label", "object")), float(x), float(y), float(w), float(h))
            boxes.setdefault(str(row["image"]), []).append(box)
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidArgument(
                "boxes", f"file '{path}', entry {n}: needs image, label and x, y, w, h (or bbox) ({err})"
            ) from err
    return boxes


def boxes_for_items(boxes: dict[str, list[Box]], items: list) -> None:
    """Attach boxes to work items (by entry name or file name), checked against each image's size.

    Raises InvalidArgument("boxes") when no name matches or a box leaves its image.
    """
    matched = set()
    for item in items:
        name = item.name if item.name in boxes else Path(item.path).name
        if name not in boxes:
            continue
        try:
            with Image.open(item.path) as im:
                width, height = im.size
        except OSError:
            continue  # an unreadable image fails in the run itself, with its own message
        for label, x, y, w, h in boxes[name]:
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width + 0.5 or y + h > height + 0.5:
                raise InvalidArgument(
                    "boxes",
                    f"box {label!r} ({x:g}, {y:g}, {w:g}, {h:g}) of '{name}' leaves its {width} x {height} image",
                )
        item.objects = list(boxes[name])
        matched.add(name)
    if boxes and not matched:
        some = ", ".join(sorted(boxes)[:3])
        raise InvalidArgument("boxes", f"name no image of this run (the file names e.g. {some})")
