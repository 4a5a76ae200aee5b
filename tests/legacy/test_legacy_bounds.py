"""import-legacy on hostile or broken seed files: sizes checked from headers before loading, weights
that are not softmax outputs refused in one line, rows not summing to 1 warned about."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from legacy.test_legacy import causal_square, seed_tokens, write_seed000, write_seed004

import attnstore.legacy as L
from attnstore.cli import main

MEMORY_LIMIT = 3 * 2**30
CLI_UNDER_LIMIT = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
from attnstore.cli import main
sys.exit(main(sys.argv[1:]))
"""
LAYER_0 = Path("attentions_5", "attention_fp16_rounded_layer_0.npz")


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def import_in_subprocess(folder: Path, out: Path) -> subprocess.CompletedProcess:
    """`attnstore import-legacy` with bounded memory; a hang fails the test."""
    args = ["import-legacy", str(folder), "--out", str(out), "--no-progress"]
    return subprocess.run(
        [sys.executable, "-c", CLI_UNDER_LIMIT, *args], capture_output=True, text=True, timeout=120, env=os.environ
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def write_npz_member(path: Path, shape: tuple[int, ...], data: bytes, dtype: str = "<f2") -> None:
    """An npz whose one member declares `shape` in its header and holds `data` (maybe less)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("attn.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        fh.write(data)


def seed004(tmp_path: Path, rng, n_layers: int = 2) -> tuple[Path, list[str]]:
    tokens = seed_tokens()
    return write_seed004(tmp_path / "seed", tokens, causal_square(rng, n_layers, 1, len(tokens))), tokens


@pytest.mark.slow  # a CLI subprocess under a memory limit
def test_an_npz_declaring_a_huge_array_is_refused_from_its_header(tmp_path, rng):
    folder, tokens = seed004(tmp_path, rng)
    n = len(tokens)
    # consistent with the tokens, 20 GB declared, a few KB on disk: the data is never read
    for layer in (0, 1):
        path = folder / "attentions_5" / f"attention_fp16_rounded_layer_{layer}.npz"
        write_npz_member(path, (1, 10**7 // n, n, n), bytes(4096))
    line = one_line(import_in_subprocess(folder, tmp_path / "s.zarr"))
    assert "refusing to load it" in line and "attention_fp16_rounded_layer_0.npz" in line
    assert not (tmp_path / "s.zarr").exists()


def test_a_compression_bomb_is_refused_from_its_header(tmp_path, rng):
    folder, tokens = seed004(tmp_path, rng)
    n = len(tokens)
    rows = 2**26 // n  # 128 MB of zeros per layer deflate ~1000:1 to ~130 KB on disk
    for layer in (0, 1):
        path = folder / "attentions_5" / f"attention_fp16_rounded_layer_{layer}.npz"
        write_npz_member(path, (1, rows, n), bytes(2 * rows * n))
    with pytest.raises(L.LegacyFormatError, match=r"stored bytes\); refusing to load it"):
        L.import_legacy(folder, tmp_path / "s.zarr")


@pytest.mark.slow  # a CLI subprocess under a memory limit
def test_tokens_repeating_one_long_string_are_refused(tmp_path, rng):
    tokens = seed_tokens()
    folder = write_seed000(tmp_path / "seed", tokens, causal_square(rng, 1, 1, len(tokens)))
    long = "x" * 2**20
    bomb = np.array([*tokens[:-100], *[long] * 100], dtype=object)  # pickled once, referenced 100 times
    np.save(folder / "decoded_tokens.npy", bomb, allow_pickle=True)
    assert (folder / "decoded_tokens.npy").stat().st_size < 2 * 2**20  # 100 MB of text in a 1 MB file
    line = one_line(import_in_subprocess(folder, tmp_path / "s.zarr"))
    assert "characters; not a token list" in line


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("negative", "negative values"),
        ("int", "expected floating-point weights"),
        ("complex", "expected floating-point weights"),
    ],
)
def test_attention_that_is_not_softmax_weights_is_refused_in_one_line(tmp_path, rng, damage, message, capsys):
    tokens = seed_tokens()
    att = causal_square(rng, 1, 1, len(tokens))
    text_row = len(tokens) - 2  # a generated token: a stored row
    if damage == "nan":
        att[0, 0, text_row, 0] = np.nan
    elif damage == "inf":
        att[0, 0, text_row, 0] = np.inf
    elif damage == "negative":
        att[0, 0, text_row, :2] = [-0.5, 1.5]
    elif damage == "int":
        att = (att * 1000).astype(np.int32)
    else:
        att = att.astype(np.complex64)
    folder = write_seed000(tmp_path / "seed", tokens, att)
    out = tmp_path / "s.zarr"
    assert main(["import-legacy", str(folder), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_rows_not_summing_to_one_are_imported_with_a_warning(tmp_path, rng, capsys):
    tokens = seed_tokens()
    folder = write_seed000(tmp_path / "seed", tokens, causal_square(rng, 1, 1, len(tokens)) * 0.5)
    assert main(["import-legacy", str(folder), "--out", str(tmp_path / "s.zarr"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "attention rows do not sum to 1 (worst off by 0.5)" in err


def test_a_truncated_npz_member_is_one_line(tmp_path, rng, capsys):
    folder, tokens = seed004(tmp_path, rng)
    n = len(tokens)
    noise = np.random.default_rng(0).bytes(n * n)  # declares n x n fp16, holds half of it
    write_npz_member(folder / LAYER_0, (1, 1, n, n), noise)
    out = tmp_path / "s.zarr"
    assert main(["import-legacy", str(folder), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "truncated or damaged" in err
    assert not out.exists()
