"""Import / export of the seed prototypes' file formats, and their bad-input errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import attnstore.analysis as A
import attnstore.legacy as L
from attnstore.cli import main
from attnstore.errors import AttnstoreError
from attnstore.extraction.synthetic import _gradient_image, idefics3_tokens
from attnstore.legacy.layout import legacy_layout, prompt_length
from attnstore.schema import TokenKind
from attnstore.store import open_dataset
from attnstore.store.validation import validate_store

N_LAYERS, N_HEADS = 3, 2


def causal_square(rng, n_layers: int, n_heads: int, n: int) -> np.ndarray:
    """Full-square causal softmax attention  # [layer, head, seq, seq] float32."""
    logits = rng.standard_normal((n_layers, n_heads, n, n)).astype(np.float32)
    logits[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


def seed_tokens(rows: int = 1, cols: int = 2, n_answer: int = 8) -> list[str]:
    tokens, _ = idefics3_tokens(rows, cols, n_answer)
    return tokens


def write_seed000(folder: Path, tokens: list[str], attention: np.ndarray, image: bool = True) -> Path:
    folder.mkdir(parents=True)
    np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=str))
    np.save(folder / "attention_array.npy", attention)
    if image:
        _gradient_image(320, 200).save(folder / "image.png")
    return folder


def write_seed004(folder: Path, tokens: list[str], attention: np.ndarray, key: str = "attn", rows: int | None = None):
    """One npz per layer, [1, heads, rows, seq] fp16 (the last `rows` rows), under an unusual key."""
    (folder / "attentions_5").mkdir(parents=True)
    np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=str))
    n = len(tokens)
    first = n - (rows or n)
    for layer in range(attention.shape[0]):
        data = attention[layer, :, first:, :].astype(np.float16)[None]
        np.savez_compressed(folder / "attentions_5" / f"attention_fp16_rounded_layer_{layer}.npz", **{key: data})
    _gradient_image(200, 300).save(folder / "image.png")
    return folder


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_import_seed000_folder(tmp_path, rng):
    tokens = seed_tokens()
    att = causal_square(rng, N_LAYERS, N_HEADS, len(tokens))
    folder = write_seed000(tmp_path / "seed", tokens, att)
    out = tmp_path / "s.zarr"
    assert L.import_legacy(folder, out) == ["seed"]
    assert validate_store(str(out)).ok
    ds = open_dataset(str(out))
    img = A.select_image(ds, 0)
    qpos = img["query_position"].values
    kinds = img["token_kind"].values
    text = np.isin(np.arange(len(tokens)), qpos)
    assert (np.isin(kinds[text], [TokenKind.PROMPT_TEXT, TokenKind.GENERATED, TokenKind.SPECIAL])).all()
    assert not np.isin(kinds[~text], [TokenKind.PROMPT_TEXT, TokenKind.GENERATED]).any()
    np.testing.assert_allclose(img["attention"].values, att[:, :, qpos, :], atol=5e-4)
    assert (int(img["grid_rows"]), int(img["grid_cols"]), int(img["tile_rows"]), int(img["tile_cols"])) == (8, 16, 1, 2)
    assert (kinds == TokenKind.GENERATED).sum() == 8
    assert str(ds["prompt"].values[0]) == "Can you describe this image?"
    assert str(ds["answer"].values[0]).startswith("A man in a red jacket")
    assert ds.attrs["imported_from"] == ["seed000"]


def test_import_seed004_discovers_key_layers_and_answer_rows(tmp_path, rng):
    tokens = seed_tokens(2, 2)
    att = causal_square(rng, 4, N_HEADS, len(tokens))
    folder = write_seed004(tmp_path / "seed", tokens, att, key="weights_fp16", rows=8)  # answer rows only
    src = L.inspect_folder(folder)
    assert (src.format, src.n_layers, src.n_heads, src.npz_key, src.first_row) == (
        "seed004",
        4,
        N_HEADS,
        "weights_fp16",
        len(tokens) - 8,
    )
    out = tmp_path / "s.zarr"
    L.import_legacy(folder, out)
    img = A.select_image(open_dataset(str(out)), 0)
    qpos = img["query_position"].values
    np.testing.assert_array_equal(qpos, np.arange(len(tokens) - 8, len(tokens)))
    np.testing.assert_array_equal(img["attention"].values, att[:, :, qpos, :].astype(np.float16))


def test_import_batch_root_with_image_dir(tmp_path, rng):
    root, images = tmp_path / "smol_outputs", tmp_path / "coco"
    images.mkdir()
    for name, (r, c) in (("img_a", (1, 2)), ("img_b", (2, 1))):
        tokens = seed_tokens(r, c)
        folder = write_seed004(root / name, tokens, causal_square(rng, N_LAYERS, N_HEADS, len(tokens)))
        (folder / "image.png").rename(images / f"{name}.jpg")
    out = tmp_path / "s.zarr"
    assert main(["import-legacy", str(root), "--out", str(out), "--image-dir", str(images), "--no-progress"]) == 0
    ds = open_dataset(str(out))
    assert list(ds["image_name"].values) == ["img_a", "img_b"]
    assert list(ds["grid_rows"].values) == [8, 16] and list(ds["grid_cols"].values) == [16, 8]
    assert validate_store(str(out)).ok


def test_grid_option_without_markers(tmp_path, rng):
    marked = seed_tokens(2, 3)
    tokens = [t for t in marked if not (t.startswith("<row_") or t == "<global-img>")]
    att = causal_square(rng, 1, 1, len(tokens))
    folder = write_seed000(tmp_path / "seed", tokens, att)
    with pytest.raises(AttnstoreError, match="pass the right --grid"):
        L.import_legacy(folder, tmp_path / "bad.zarr")  # default 3x4 does not fit 2x3 tiles
    args = ["import-legacy", str(folder), "--out", str(tmp_path / "s.zarr"), "--grid", "2x3", "--no-progress"]
    assert main(args) == 0
    img = A.select_image(open_dataset(str(tmp_path / "s.zarr")), 0)
    assert (int(img["grid_rows"]), int(img["grid_cols"]), int(img["global_rows"])) == (16, 24, 8)
    reference = legacy_layout(marked[: prompt_length(marked)])  # the same image, geometry from markers
    patches = lambda kinds: np.isin(kinds, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL])  # noqa: E731
    got, ref = patches(img["token_kind"].values), patches(reference.kind)
    np.testing.assert_array_equal(img["token_kind"].values[got], reference.kind[ref])
    np.testing.assert_array_equal(img["patch_row"].values[got], reference.patch_row[ref])
    np.testing.assert_array_equal(img["patch_col"].values[got], reference.patch_col[ref])
    np.testing.assert_array_equal(img["patch_box"].values[got], reference.patch_box[ref])
    assert main(["import-legacy", str(folder), "--out", str(tmp_path / "x.zarr"), "--grid", "3by4"]) == 1


# -- bad input: clear errors, nothing left behind ---------------------------------------------------


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_pickled_tokens_are_refused_not_loaded(tmp_path, rng):
    tokens = seed_tokens()
    folder = write_seed000(tmp_path / "seed", tokens, causal_square(rng, 1, 1, len(tokens)))
    (folder / "decoded_tokens.npy").write_bytes(pickle.dumps(tokens))  # a plain pickle, not an npy
    with pytest.raises(L.LegacyFormatError, match=r"decoded_tokens.npy holds pickled data"):
        L.import_legacy(folder, tmp_path / "s.zarr")
    assert_nothing_written(tmp_path, tmp_path / "s.zarr")
    (folder / "decoded_tokens.npy").write_text("jacket\n")  # not an array at all
    with pytest.raises(L.LegacyFormatError, match="decoded_tokens.npy is not a NumPy .npy array"):
        L.import_legacy(folder, tmp_path / "s.zarr")


def test_shape_mismatch_names_file_and_expected_shape(tmp_path, rng):
    tokens = seed_tokens()
    folder = write_seed000(tmp_path / "seed", tokens[:-3], causal_square(rng, 1, 1, len(tokens)))
    n = len(tokens) - 3
    expected = rf"attention_array.npy has shape .*expected \[layers, heads, {n}, {n}\]"
    with pytest.raises(L.LegacyFormatError, match=expected):
        L.import_legacy(folder, tmp_path / "s.zarr")
    assert_nothing_written(tmp_path, tmp_path / "s.zarr")


def test_missing_layer_file_and_missing_image(tmp_path, rng):
    tokens = seed_tokens()
    folder = write_seed004(tmp_path / "seed", tokens, causal_square(rng, 3, 1, len(tokens)), key="arr_0")
    (folder / "attentions_5" / "attention_fp16_rounded_layer_1.npz").unlink()
    with pytest.raises(L.LegacyFormatError, match=r"missing layer file .*attention_fp16_rounded_layer_1.npz"):
        L.import_legacy(folder, tmp_path / "s.zarr")
    folder = write_seed000(tmp_path / "seed2", tokens, causal_square(rng, 1, 1, len(tokens)), image=False)
    with pytest.raises(L.LegacyFormatError, match=r"no image for .*seed2: expected .*seed2/image.png"):
        L.import_legacy(folder, tmp_path / "s.zarr")
    assert_nothing_written(tmp_path, tmp_path / "s.zarr")


def test_failure_while_writing_leaves_no_store(tmp_path, rng):
    root = tmp_path / "batch"
    for name in ("a", "b"):
        tokens = seed_tokens()
        write_seed000(root / name, tokens, causal_square(rng, 1, 1, len(tokens)))
    (root / "b" / "image.png").write_bytes(b"not a png")  # found, but fails while writing image b
    out = tmp_path / "s.zarr"
    assert main(["import-legacy", str(root), "--out", str(out), "--no-progress"]) == 1
    assert_nothing_written(tmp_path, out)


def test_user_error_is_one_line_without_traceback(tmp_path, rng):
    tokens = seed_tokens()
    folder = write_seed000(tmp_path / "seed", tokens, causal_square(rng, 1, 1, len(tokens)))
    (folder / "decoded_tokens.npy").write_bytes(pickle.dumps(tokens))
    attnstore = Path(sys.executable).parent / "attnstore"  # the installed console script
    proc = subprocess.run(
        [str(attnstore), "import-legacy", str(folder), "--out", str(tmp_path / "s.zarr")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pickled" in lines[0] and "Traceback" not in proc.stderr


# -- export --------------------------------------------------------------------------------------


def test_export_then_import_round_trips(tmp_path, synthetic_store):
    out = tmp_path / "exported"
    assert main(["export-legacy", synthetic_store, "--image", "synthetic_00001.png", "--out", str(out)]) == 0
    ds = open_dataset(synthetic_store)
    img = A.select_image(ds, 1)
    n, qpos = img.sizes["key"], img["query_position"].values
    tokens = np.load(out / "decoded_tokens.npy", allow_pickle=False)
    assert tokens.dtype.kind == "U" and list(tokens) == [str(t) for t in img["token_text"].values]
    full = np.load(out / "attention_array.npy", allow_pickle=False)
    assert full.shape == (2, 4, n, n) and full.dtype == np.float32
    np.testing.assert_array_equal(full[:, :, qpos], img["attention"].values.astype(np.float32))
    others = np.setdiff1d(np.arange(n), qpos)
    assert (full[:, :, others] == 0).all()  # rows the store does not hold are zeros
    with np.load(out / "attentions_5" / "attention_fp16_rounded_layer_1.npz", allow_pickle=False) as z:
        assert z.files == ["attention"] and z["attention"].dtype == np.float16
        np.testing.assert_array_equal(z["attention"][:, qpos], img["attention"].values[1])
    assert (out / "image.png").is_file()
    for kind in ("array", "npz"):  # each format alone imports back to the same store content
        folder = tmp_path / f"only_{kind}"
        assert main(["export-legacy", synthetic_store, "--image", "1", "--out", str(folder), "--formats",
                     f"{kind},image"]) == 0  # fmt: skip
        L.import_legacy(folder, tmp_path / f"{kind}.zarr")
        back = A.select_image(open_dataset(str(tmp_path / f"{kind}.zarr")), 0)
        np.testing.assert_array_equal(back["attention"].values, img["attention"].values)
        np.testing.assert_array_equal(back["token_kind"].values, img["token_kind"].values)
        np.testing.assert_array_equal(back["patch_box"].values, img["patch_box"].values)
    bad = ["export-legacy", synthetic_store, "--image", "1", "--out", str(tmp_path / "x"), "--formats", "csv"]
    assert main(bad) == 1
