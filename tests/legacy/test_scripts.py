"""The seed-compatible scripts in scripts/ (thin wrappers): run as the seeds' users would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnstore.extraction.synthetic import _gradient_image
from attnstore.store import open_dataset

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run(script: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)  # fmt: skip


@pytest.mark.slow
def test_extract_script_writes_store_and_seed_files(tmp_path, tiny_model_path):
    image = tmp_path / "image.png"
    _gradient_image(300, 200).save(image)
    proc = run("extract_smolvlm_attn.py", "--image", image, "--output-dir", tmp_path, "--prompt", "Describe.",
               "--model-id", tiny_model_path, "--device", "cpu", "--max-new-tokens", "3", "--legacy-files")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ds = open_dataset(str(tmp_path / "attention.zarr"))
    assert list(ds["image_name"].values) == ["image.png"]
    tokens = np.load(tmp_path / "decoded_tokens.npy", allow_pickle=False)
    full = np.load(tmp_path / "attention_array.npy", allow_pickle=False)
    assert full.shape == (ds.sizes["layer"], ds.sizes["head"], tokens.size, tokens.size)
    assert len(list((tmp_path / "attentions_5").glob("attention_fp16_rounded_layer_*.npz"))) == ds.sizes["layer"]
    proc = run("test_data.py", tmp_path / "attention.zarr")
    assert proc.returncode == 0 and "valid" in proc.stdout


@pytest.mark.slow
def test_test_data_script_checks_seed_folders(tmp_path, synthetic_store):
    from attnstore.cli import main

    folder = tmp_path / "seed"
    assert main(["export-legacy", synthetic_store, "--image", "0", "--out", str(folder), "--formats", "npz,image"]) == 0
    proc = run("test_data.py", folder)
    assert proc.returncode == 0 and "seed004" in proc.stdout and ": ok" in proc.stdout
    (folder / "attentions_5" / "attention_fp16_rounded_layer_0.npz").unlink()
    proc = run("test_data.py", folder)
    assert proc.returncode == 1 and "missing layer file" in proc.stderr and "Traceback" not in proc.stderr
