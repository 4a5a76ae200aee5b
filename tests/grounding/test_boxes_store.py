"""Object boxes in the store: `extract --boxes` (COCO json, jsonl), growth, validation, bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from attnstore.analysis.grounding import store_grounding
from attnstore.cli import main
from attnstore.errors import InvalidArgument
from attnstore.extraction.synthetic import _gradient_image
from attnstore.inputs.boxes import load_boxes
from attnstore.store import open_dataset
from attnstore.store.validation import validate_store


def extract(tiny_model_path, images, out, *more):
    args = ["extract", "--image-dir", str(images), "--model", str(tiny_model_path), "--out", str(out)]
    return main([*args, "--max-new-tokens", "2", "--no-progress", *map(str, more)])


def coco(path: Path, annotations: list) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "img0.png"}, {"id": 2, "file_name": "img1.png"}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 8, "name": "ball"}],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data))
    return path


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_coco_boxes_are_stored_normalised_and_the_object_axis_grows(tiny_model_path, images, tmp_path):
    boxes = coco(
        tmp_path / "boxes.json",
        [
            {"image_id": 1, "category_id": 7, "bbox": [32, 24, 64, 48]},
            {"image_id": 1, "category_id": 8, "bbox": [160, 120, 160, 120]},
        ],
    )
    out = tmp_path / "store.zarr"
    assert extract(tiny_model_path, images, out, "--boxes", boxes) == 0
    ds = open_dataset(str(out))
    names = [str(n) for n in ds["image_name"].values]
    first, second = names.index("img0.png"), names.index("img1.png")
    np.testing.assert_allclose(ds["object_box"].values[first], [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 1.0, 1.0]], atol=1e-6)
    assert [str(v) for v in ds["object_label"].values[first]] == ["dog", "ball"]
    assert np.isnan(ds["object_box"].values[second]).all()  # no boxes for this image
    assert validate_store(str(out)).ok
    # The same run with no --boxes on a new store: no object variables at all, still valid.
    plain = tmp_path / "plain.zarr"
    assert extract(tiny_model_path, images, plain) == 0
    assert "object_box" not in open_dataset(str(plain)) and validate_store(str(plain)).ok
    # Grounding reads the boxes (only img0 has a box labelled 'dog').
    scores = store_grounding(open_dataset(str(out)), target="dog")
    assert scores.sizes["image"] == 1 and float(scores["chance"][0]) == pytest.approx(0.04, abs=1e-6)
    # Appending an image with more objects grows the object axis and keeps the earlier boxes.
    _gradient_image(100, 100, seed=5).save(images / "img2.png")
    three = tmp_path / "three.jsonl"
    three.write_text("".join(json.dumps({"image": "img2.png", "label": f"o{i}", "bbox": [i * 10, 0, 10, 10]}) + "\n"
                             for i in range(3)))  # fmt: skip
    assert extract(tiny_model_path, images, out, "--boxes", three) == 0
    ds = open_dataset(str(out))
    third = [str(n) for n in ds["image_name"].values].index("img2.png")
    assert ds.sizes["object"] == 3
    np.testing.assert_allclose(ds["object_box"].values[third, 2], [0.2, 0.0, 0.3, 0.1], atol=1e-6)
    np.testing.assert_allclose(ds["object_box"].values[first, 0], [0.1, 0.1, 0.3, 0.3], atol=1e-6)
    assert validate_store(str(out)).ok


def test_jsonl_and_name_map_forms(tmp_path):
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"image": "a.png", "label": "cat", "x": 1, "y": 2, "w": 3, "h": 4}\n\n'
                  '{"image": "a.png", "label": "hat", "bbox": [5, 6, 7, 8]}\n')  # fmt: skip
    assert load_boxes(jl) == {"a.png": [("cat", 1, 2, 3, 4), ("hat", 5, 6, 7, 8)]}
    js = tmp_path / "b.json"
    js.write_text(json.dumps({"a.png": [{"label": "cat", "x": 1, "y": 2, "w": 3, "h": 4}]}))
    assert load_boxes(js) == {"a.png": [("cat", 1, 2, 3, 4)]}


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"a.png": [{"label": "cat", "x": 1}]}', "needs image, label and x, y, w, h"),
        ("{not json", "not valid JSON"),
        ('{"images": [], "annotations": [{"image_id": 3, "bbox": [0, 0, 1, 1]}]}', "COCO entry without"),
    ],
)
def test_malformed_boxes_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=message):
        load_boxes(path)


def test_bad_boxes_fail_in_one_line_and_leave_the_store_unchanged(tiny_model_path, images, tmp_path, capsys):
    out = tmp_path / "store.zarr"
    assert extract(tiny_model_path, images, out) == 0
    before = tree_digest(out)
    outside = coco(tmp_path / "outside.json", [{"image_id": 2, "category_id": 7, "bbox": [150, 10, 80, 20]}])
    assert extract(tiny_model_path, images, out, "--boxes", outside) == 1
    err = capsys.readouterr().err.strip()
    assert "leaves its 200 x 300 image" in err and len(err.splitlines()) == 1
    nomatch = coco(tmp_path / "nomatch.json", [])
    nomatch.write_text(json.dumps({"other.png": [{"label": "x", "x": 0, "y": 0, "w": 1, "h": 1}]}))
    assert extract(tiny_model_path, images, out, "--boxes", nomatch) == 1
    assert "name no image of this run" in capsys.readouterr().err
    assert tree_digest(out) == before
