"""The seed repositories' real layouts: layer folders by any name, one token more than keys, pickled tokens."""

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
from attnstore.errors import InvalidArgument
from attnstore.extraction.synthetic import _gradient_image, idefics3_tokens, synthetic_attention
from attnstore.store import open_dataset
from attnstore.store.validation import validate_store

N_HEADS = 2


def causal_square(rng, n_layers: int, n_heads: int, n: int) -> np.ndarray:
    """Full-square causal softmax attention  # [layer, head, seq, seq] float16."""
    return synthetic_attention(n_layers, n_heads, np.arange(n), n, np.arange(n), rng)


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    """No store and no temporary folder beside it."""
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def write_layers(folder: Path, attention: np.ndarray) -> None:
    """One npz per layer, [1, heads, seq, seq] fp16 under the seed's key ('attention')."""
    folder.mkdir(parents=True)
    for layer in range(attention.shape[0]):
        data = attention[layer].astype(np.float16)[None]
        np.savez_compressed(folder / f"attention_fp16_rounded_layer_{layer}.npz", attention=data)


def seed_repo(folder: Path, tokens: list[str], attention: np.ndarray, layer_dir: str = "attentions_5") -> Path:
    """The published seed viewer's layout: tokens, one layer folder, image.png."""
    write_layers(folder / layer_dir, attention)
    np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=str))
    _gradient_image(320, 200).save(folder / "image.png")
    return folder


@pytest.fixture
def rng():
    return np.random.default_rng(11)


@pytest.fixture
def tokens():
    return idefics3_tokens(1, 2, n_answer=9)[0]


def test_last_token_without_attention_keeps_its_text_and_has_no_row(tmp_path, rng, tokens):
    n = len(tokens)
    att = causal_square(rng, 3, N_HEADS, n - 1)  # the last generated token was never fed back
    folder = seed_repo(tmp_path / "repo", tokens, att)
    write_layers(folder / "attentions", causal_square(rng, 2, 1, 5))  # the older version: not read
    src = L.inspect_folder(folder)
    assert (src.n_key, src.n_att, src.n_layers, src.files[0].parent.name) == (n, n - 1, 3, "attentions_5")
    out = tmp_path / "s.zarr"
    L.import_legacy(folder, out)
    assert validate_store(str(out)).ok
    img = A.select_image(open_dataset(str(out)), 0)
    assert int(img["n_key"]) == n
    assert [str(t) for t in img["token_text"].values[:n]] == tokens  # the last token's text is kept
    qpos = img["query_position"].values
    assert n - 1 not in qpos and qpos.max() == n - 2  # ... and it has no row
    stored = img["attention"].values  # [layer, head, query, key]
    np.testing.assert_array_equal(stored[..., : n - 1], att[:, :, qpos, :].astype(np.float16))
    assert not stored[..., n - 1 :].any()  # nor a column


def test_seed000_array_with_one_token_more(tmp_path, rng, tokens):
    n = len(tokens)
    folder = tmp_path / "seed"
    folder.mkdir()
    np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=str))
    att = causal_square(rng, 2, N_HEADS, n - 1)
    np.save(folder / "attention_array.npy", att[None].astype(np.float32))  # [1, layers, heads, seq, seq]
    _gradient_image(200, 200).save(folder / "image.png")
    out = tmp_path / "s.zarr"
    L.import_legacy(folder, out)
    img = A.select_image(open_dataset(str(out)), 0)
    qpos = img["query_position"].values
    np.testing.assert_array_equal(img["attention"].values[..., : n - 1], att[:, :, qpos, :])
    assert validate_store(str(out)).ok


@pytest.mark.parametrize("extra", [2, -1])
def test_other_token_counts_are_refused(tmp_path, rng, tokens, extra):
    n = len(tokens)
    folder = seed_repo(tmp_path / "repo", tokens, causal_square(rng, 2, 1, n - extra))
    expected = rf"attention_fp16_rounded_layer_0.npz has shape .*expected \[heads, rows <= {n}, {n}\] \(or {n - 1}"
    with pytest.raises(L.LegacyFormatError, match=expected):
        L.import_legacy(folder, tmp_path / "s.zarr")
    assert_nothing_written(tmp_path, tmp_path / "s.zarr")


@pytest.mark.parametrize("name", ["attentions", "layers_fp16"])
def test_layer_folder_found_by_name_or_pattern(tmp_path, rng, tokens, name):
    att = causal_square(rng, 2, N_HEADS, len(tokens))
    root = tmp_path / "smol_outputs"  # a batch root: one folder per image
    for image in ("a", "b"):
        seed_repo(root / image, tokens, att, layer_dir=name)
    out = tmp_path / "s.zarr"
    assert main(["import-legacy", str(root), "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(str(out))
    assert list(ds["image_name"].values) == ["a", "b"]
    qpos = A.select_image(ds, 1)["query_position"].values
    np.testing.assert_array_equal(A.select_image(ds, 1)["attention"].values, att[:, :, qpos].astype(np.float16))


def test_layer_files_in_the_seed_folder_itself(tmp_path, rng, tokens):
    folder = tmp_path / "flat"
    write_layers(folder, causal_square(rng, 2, N_HEADS, len(tokens)))
    np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=str))
    _gradient_image(100, 100).save(folder / "image.png")
    assert L.inspect_folder(folder).files[0].parent == folder
    L.import_legacy(folder, tmp_path / "s.zarr")
    assert validate_store(str(tmp_path / "s.zarr")).ok


def test_several_unknown_layer_folders_need_a_name(tmp_path, rng, tokens, capsys):
    n = len(tokens)
    folder = seed_repo(tmp_path / "repo", tokens, causal_square(rng, 2, N_HEADS, n), layer_dir="run_a")
    other = causal_square(rng, 3, N_HEADS, n - 1)
    write_layers(folder / "run_b", other)
    out = tmp_path / "s.zarr"
    several = r"attn_dir names the layer folder to read: .* \('run_a', 'run_b'\)"
    with pytest.raises(InvalidArgument, match=several) as err:
        L.import_legacy(folder, out)
    assert err.value.param == "attn_dir"
    assert main(["import-legacy", str(folder), "--out", str(out), "--no-progress"]) == 1
    assert "error: --attn-dir names the layer folder to read" in capsys.readouterr().err
    assert_nothing_written(tmp_path, out)
    assert main(["import-legacy", str(folder), "--out", str(out), "--attn-dir", "nope", "--no-progress"]) == 1
    assert "holds neither attention_array.npy nor 'nope'" in capsys.readouterr().err
    assert_nothing_written(tmp_path, out)
    assert main(["import-legacy", str(folder), "--out", str(out), "--attn-dir", "run_b", "--no-progress"]) == 0
    img = A.select_image(open_dataset(str(out)), 0)
    qpos = img["query_position"].values
    assert img.sizes["layer"] == 3
    np.testing.assert_array_equal(img["attention"].values[..., : n - 1], other[:, :, qpos].astype(np.float16))


def test_attn_dir_is_read_even_beside_a_full_array(tmp_path, rng, tokens):
    """The single-image seed script writes both attention_array.npy and attentions_5/: the array wins unless
    the layer folder is named."""
    n = len(tokens)
    folder = seed_repo(tmp_path / "repo", tokens, causal_square(rng, 2, N_HEADS, n))
    np.save(folder / "attention_array.npy", causal_square(rng, 4, N_HEADS, n))
    assert L.inspect_folder(folder).format == "seed000"
    assert L.inspect_folder(folder, attn_dir="attentions_5").format == "seed004"


# -- decoded_tokens.npy as the seed's batch script writes it: np.array(tokens, dtype=object) ------------


def test_object_array_of_tokens_imports(tmp_path, rng, tokens):
    att = causal_square(rng, 2, N_HEADS, len(tokens))
    folder = seed_repo(tmp_path / "repo", tokens, att)
    np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=object), allow_pickle=True)
    assert L.read_tokens(folder / "decoded_tokens.npy") == tokens
    L.import_legacy(folder, tmp_path / "s.zarr")
    img = A.select_image(open_dataset(str(tmp_path / "s.zarr")), 0)
    assert [str(t) for t in img["token_text"].values[: len(tokens)]] == tokens


def test_batch_output_as_the_seed_wrote_it(tmp_path, rng, tokens):
    """Object-array tokens, one token more than keys, per-image folders: all at once."""
    n = len(tokens)
    root = tmp_path / "smol_outputs"
    attention = {}
    for name in ("COCO_val2014_000000000042", "COCO_val2014_000000000073"):
        attention[name] = causal_square(rng, 2, N_HEADS, n - 1)
        folder = seed_repo(root / name, tokens, attention[name])
        np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=object), allow_pickle=True)
    out = tmp_path / "s.zarr"
    assert main(["import-legacy", str(root), "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(str(out))
    assert validate_store(str(out), deep=True).ok
    for i, name in enumerate(ds["image_name"].values):
        img = A.select_image(ds, i)
        qpos = img["query_position"].values
        np.testing.assert_array_equal(img["attention"].values[..., : n - 1], attention[str(name)][:, :, qpos])


class CreatesFile:
    """Unpickling this would create `path` (what a hostile file could do)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class RunsShell:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def object_npy(path: Path, payload, shape=(3,)) -> None:
    """An .npy with an object-array header followed by an arbitrary pickle."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": shape})
        pickle.dump(payload, fh, protocol=4)


def hostile_files(marker: Path) -> dict[str, callable]:
    return {
        "open() at the top": lambda p: object_npy(p, CreatesFile(marker)),
        "os.system() at the top": lambda p: object_npy(p, RunsShell(marker)),
        "open() inside the array": lambda p: np.save(
            p, np.array(["a", CreatesFile(marker), "b"], dtype=object), allow_pickle=True
        ),
        "os.system() inside a list element": lambda p: np.save(
            p, np.array(["a", [RunsShell(marker)], "b"], dtype=object), allow_pickle=True
        ),
    }


@pytest.mark.parametrize("kind", list(hostile_files(Path("x"))))
def test_pickle_that_would_create_a_file_is_refused_and_creates_nothing(tmp_path, rng, tokens, kind):
    marker = tmp_path / "created_by_the_pickle"
    folder = seed_repo(tmp_path / "repo", tokens, causal_square(rng, 1, 1, len(tokens)))
    hostile_files(marker)[kind](folder / "decoded_tokens.npy")
    out = tmp_path / "s.zarr"
    with pytest.raises(L.LegacyFormatError, match=r"decoded_tokens.npy holds pickled data other than an array of "):
        L.import_legacy(folder, out)
    assert not marker.exists()
    assert_nothing_written(tmp_path, out)


def test_refused_names_are_never_imported(tmp_path):
    """find_class refuses before importing: a module named in the stream is never loaded."""
    path = tmp_path / "decoded_tokens.npy"

    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        fh.write(b"\x80\x04\x8c\x04this\x94\x8c\x01s\x94\x93\x94.")  # GLOBAL this.s (importing prints the Zen)
    assert "this" not in sys.modules
    with pytest.raises(L.LegacyFormatError, match=r"refused this\.s"):
        L.read_tokens(path)
    assert "this" not in sys.modules


@pytest.mark.parametrize(
    "array, what",
    [
        (np.array(["a", 3, "b"], dtype=object), "elements of type int"),
        (np.array([b"a", "b"], dtype=object), "elements of type bytes"),
        (np.array([["a", "b"]], dtype=object), "not a 1-D object array"),
        (np.array([np.float64(1.0)], dtype=object), "refused numpy"),  # numpy scalars need another global
    ],
)
def test_object_arrays_of_anything_but_str_are_refused(tmp_path, array, what):
    path = tmp_path / "decoded_tokens.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(L.LegacyFormatError, match=what):
        L.read_tokens(path)


def test_other_pickled_arrays_stay_refused(tmp_path, rng, tokens):
    """allow_pickle stays off for everything else: an object attention array is never loaded."""
    n = len(tokens)
    folder = tmp_path / "seed"
    folder.mkdir()
    np.save(folder / "decoded_tokens.npy", np.array(tokens, dtype=object), allow_pickle=True)
    np.save(folder / "attention_array.npy", causal_square(rng, 1, 1, n).astype(object), allow_pickle=True)
    _gradient_image(100, 100).save(folder / "image.png")
    with pytest.raises(L.LegacyFormatError, match=r"attention_array.npy holds pickled data .*never loads pickles"):
        L.import_legacy(folder, tmp_path / "s.zarr")


def test_hostile_pickle_is_one_line_from_the_cli(tmp_path, rng, tokens):
    marker = tmp_path / "created_by_the_pickle"
    folder = seed_repo(tmp_path / "repo", tokens, causal_square(rng, 1, 1, len(tokens)))
    object_npy(folder / "decoded_tokens.npy", RunsShell(marker))
    attnstore = Path(sys.executable).parent / "attnstore"  # the installed console script
    proc = subprocess.run(
        [str(attnstore), "import-legacy", str(folder), "--out", str(tmp_path / "s.zarr")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "pickled data other than" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
