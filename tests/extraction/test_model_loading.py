"""Model loading: local folder, the Hugging Face cache under HF_HUB_OFFLINE, the seed's hub-id spelling."""

import os
import shutil
import subprocess
import sys

import pytest

from attnstore.errors import ModelLoadError
from attnstore.models import adapter_for_model_type, load_adapter
from attnstore.models.base import canonical_model_id

REAL_ID = "HuggingFaceTB/SmolVLM-256M-Instruct"


def fake_hub_cache(root, model_dir, repo_id=REAL_ID):
    """Lay a saved model out the way huggingface_hub caches a download."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return root


def test_seed_spelling_maps_to_hub_id():
    assert canonical_model_id("HuggingFaceTB/SmolVLM-Instruct-256M") == REAL_ID
    assert canonical_model_id("some/other") == "some/other"


@pytest.mark.parametrize("spelling", [REAL_ID, "HuggingFaceTB/SmolVLM-Instruct-256M"])
def test_loads_from_hf_cache_offline(tmp_path, tiny_model_path, spelling):
    cache = fake_hub_cache(tmp_path / "hub", tiny_model_path)
    code = (
        "from attnstore.models import load_adapter; "
        f"a = load_adapter({spelling!r}); print(a.family, a.model_id, a.n_layers)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-3:] == ["idefics3", REAL_ID, "2"]


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="hf download nobody/no-such-model"):
        load_adapter("nobody/no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_adapter(str(empty))


def test_unsupported_architecture_lists_supported():
    with pytest.raises(ModelLoadError, match="supported: .*idefics3"):
        adapter_for_model_type("bert")
