"""The CLI: the extract -> info -> validate workflow, and bad input that must end in one clear line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from attnstore.cli import main
from attnstore.store import open_dataset


def extract_args(tiny_model_path, out, *more):
    return [
        "extract",
        *map(str, more),
        "--model",
        str(tiny_model_path),
        "--out",
        str(out),
        "--max-new-tokens",
        "3",
        "--no-progress",
    ]


def store_files(path):
    return {p: p.stat().st_mtime_ns for p in Path(path).rglob("*") if p.is_file()}


def test_extract_info_validate(tmp_path, images, tiny_model_path, capsys):
    out = tmp_path / "s.zarr"
    assert main(extract_args(tiny_model_path, out, "--image-dir", images)) == 0
    assert "2 written" in capsys.readouterr().out
    assert main(extract_args(tiny_model_path, out, "--image-dir", images)) == 0  # rerun skips
    assert "0 written, 2 already complete" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "img0.png" in text and "RANDOM WEIGHTS" in text and "2 complete" in text
    assert main(["validate", str(out)]) == 0
    assert "valid" in capsys.readouterr().out


def test_keep_bits_recorded_and_applied(tmp_path, images, tiny_model_path):
    out = tmp_path / "s.zarr"
    assert main(extract_args(tiny_model_path, out, images / "img0.png", "--keep-bits", "3")) == 0
    ds = open_dataset(str(out))
    assert ds.attrs["keep_bits"] == 3
    low_bits = ds.attention.values.view(np.uint16) & 0b1111111
    assert (low_bits == 0).all()
    assert main(["validate", str(out)]) == 0


def test_corrupt_image_is_reported_and_others_are_kept(tmp_path, images, tiny_model_path, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    out = tmp_path / "s.zarr"
    assert main(extract_args(tiny_model_path, out, "--image-dir", images)) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "cannot decode image" in err
    ds = open_dataset(str(out))
    assert sorted(map(str, ds.image_name.values)) == ["img0.png", "img1.png"] and ds.complete.values.all()


def test_an_image_over_the_pixel_limit_is_skipped_like_other_bad_images(tmp_path, images, tiny_model_path, capsys):
    from PIL import Image

    Image.new("1", (14_000, 14_000)).save(images / "huge.png")  # 196 MP (24 MB decoded as 1-bit, ~20 KB on disk)
    out = tmp_path / "s.zarr"
    assert main(extract_args(tiny_model_path, out, "--image-dir", images)) == 1
    err = capsys.readouterr().err
    assert "huge.png" in err and "too large to decode safely" in err and "Traceback" not in err
    ds = open_dataset(str(out))
    assert sorted(map(str, ds.image_name.values)) == ["img0.png", "img1.png"] and ds.complete.values.all()


def test_validate_finds_damaged_rows(tmp_path, synthetic_store, capsys):
    path = tmp_path / "s.zarr"
    shutil.copytree(synthetic_store, path)
    att = zarr.open_group(str(path), mode="r+", use_consolidated=False)["attention"]
    att[1, 0, 0, 2, :5] = 0.5  # a row that no longer sums to 1
    assert main(["validate", str(path)]) == 1
    assert "do not sum to 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_image", "image not found"),
        ("empty_prompt", "prompt is empty"),
        ("unknown_model", "neither a local directory nor in the Hugging Face cache"),
        ("store_is_file", "is a file"),
        ("other_schema", "schema version"),
        ("bad_keep_bits", "--keep-bits"),
    ],
)
def test_bad_input_one_line_and_store_untouched(
    case, message, tmp_path, images, tiny_model_path, synthetic_store, capsys
):
    out = tmp_path / "s.zarr"
    shutil.copytree(synthetic_store, out)
    model, prompt, extra = str(tiny_model_path), "Describe.", []
    target = out
    if case == "missing_image":
        extra = [tmp_path / "nope.png"]
    else:
        extra = [images / "img0.png"]
    if case == "empty_prompt":
        prompt = "  "
    if case == "unknown_model":
        model = "someone/not-a-model"
    if case == "store_is_file":
        target = tmp_path / "file.zarr"
        target.write_text("x")
    if case == "other_schema":
        meta = json.loads((out / "zarr.json").read_text())
        meta["attributes"]["schema_version"] = 99
        (out / "zarr.json").write_text(json.dumps(meta))
    if case == "bad_keep_bits":
        extra.append("--keep-bits=12")
    before = store_files(out)
    args = ["extract", *map(str, extra), "--model", model, "--prompt", prompt, "--out", str(target), "--no-progress"]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert store_files(out) == before


def test_real_entry_point_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("attnstore")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(exe), "info", str(tmp_path / "missing.zarr")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: no attnstore store") and "Traceback" not in proc.stderr


def test_demo_store_is_labelled_random_weights(demo_store):
    ds = open_dataset(demo_store)
    assert ds.attrs["random_weights"] is True
    assert ds.sizes["image"] == 3 and ds.complete.values.all()
    assert {(int(r), int(c)) for r, c in zip(ds.tile_rows.values, ds.tile_cols.values)} == {(3, 4), (4, 3), (4, 4)}


USAGE_ERRORS = [["info", "--nope"], ["heatmap", "x.zarr", "--token", "a", "--layers"], ["frobnicate"]]


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_usage_errors_are_clicks_message_not_a_traceback(args):
    """Typer vendors its own click: usage errors must still be recognised (exit 2, no traceback)."""
    proc = subprocess.run([sys.executable, "-m", "attnstore", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Error:" in proc.stderr


def test_positional_arguments_are_named_as_arguments_not_flags(synthetic_store, capsys):
    """`grounding STORE` on a store without boxes names no '--store' flag (there is none)."""
    assert main(["grounding", synthetic_store]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the store has no object boxes") and "--store" not in err, err


def test_heatmap_of_a_token_before_the_image_is_an_error_not_a_zero_map(synthetic_store, tmp_path, capsys):
    out = tmp_path / "user.png"
    assert main(["heatmap", synthetic_store, "--token", "User", "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "comes before the image" in err and err.count("\n") == 0, err
    assert not out.exists()


def test_help_lists_commands_in_workflow_order_with_whole_descriptions(capsys):
    from attnstore.cli import COMMAND_ORDER

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    commands = text.split("Commands:")[1].splitlines()
    listed = [line.split()[0] for line in commands if line.startswith("  ") and not line.startswith("   ")]
    assert listed == [name for name in COMMAND_ORDER if name in listed] and {"demo", "extract", "serve"} <= set(listed)
    assert "..." not in text.split("Commands:")[1]


@pytest.mark.slow
def test_extract_queries_text_image_stores_the_patch_rows(tmp_path, images, tiny_model_path, capsys):
    """`--queries text+image`: the text rows plus the image patches' (no image markers), valid, and a
    patch's map reads its own stored row through `heatmap --patch`."""
    from attnstore.schema import IMAGE_PATCH_KINDS, TEXT_KINDS, TokenKind, kind_mask

    out = tmp_path / "s.zarr"
    assert main(extract_args(tiny_model_path, out, images / "img0.png", "--queries", "text+image")) == 0
    assert main(["validate", str(out)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "queries=text+image" in capsys.readouterr().out
    img = open_dataset(str(out)).attn.image(0)
    kinds = np.asarray(img["token_kind"].values)[: int(img["n_key"])]
    stored = np.asarray(img["query_position"].values)[: int(img["n_query"])]
    np.testing.assert_array_equal(stored, np.flatnonzero(kind_mask(kinds, (*TEXT_KINDS, *IMAGE_PATCH_KINDS))))
    assert (kinds == TokenKind.IMAGE_SPECIAL).any()  # there were markers to leave out
    assert main(["heatmap", str(out), "--patch", "0,0", "--output", str(tmp_path / "p.png")]) == 0
    assert "patch 0,0: row" in capsys.readouterr().out
