"""Model loading: local folder, the Hugging Face cache (first), the seed's hub-id spelling, fast offline errors.

No test touches the network: "no network" is a hub endpoint on a closed loopback port.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from attnstore.errors import ModelLoadError
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import adapter_for_model_type, hub, load_adapter
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


# -- without network: the cache first, then one short probe instead of the hub client's retries ----------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def no_network_env(cache: Path) -> dict:
    """HF_HUB_OFFLINE unset (as a new user has it), the hub on a closed loopback port."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return {**env, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_CACHE": str(cache)}


def tree_hashes(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("existing", [False, True], ids=["new-store", "existing-store"])
def test_default_model_without_weights_or_network_is_one_line_before_torch(tmp_path, synthetic_store, existing):
    image = tmp_path / "photo.png"
    _gradient_image(64, 48).save(image)
    out = tmp_path / "out.zarr"
    if existing:
        shutil.copytree(synthetic_store, out)
    before = tree_hashes(out) if existing else None
    code = (
        "import sys; from attnstore.cli import main; "
        f"code = main(['extract', {str(image)!r}, '--out', {str(out)!r}]); "
        "print('imported:', sorted(m for m in ('torch', 'transformers') if m in sys.modules)); sys.exit(code)"
    )  # the default --model: SmolVLM-256M-Instruct, in no cache here
    env = no_network_env(tmp_path / "empty-cache")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr  # no hub retry warnings before it
    assert lines[0].startswith("error: model 'HuggingFaceTB/SmolVLM-256M-Instruct' is neither")
    assert f"the Hugging Face hub ({env['HF_ENDPOINT']}) cannot be reached" in lines[0]
    assert "imported: []" in proc.stdout  # failed before loading torch or transformers
    assert (tree_hashes(out) == before) if existing else not out.exists()  # the store is byte-identical


def test_cached_model_loads_without_asking_the_hub(tmp_path, tiny_model_path):
    cache = fake_hub_cache(tmp_path / "hub", tiny_model_path)
    code = f"from attnstore.models import load_adapter; a = load_adapter({REAL_ID!r}); print(a.family, a.n_layers)"
    env = no_network_env(cache)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["idefics3", "2"]
    assert "127.0.0.1" not in proc.stderr and "Retry" not in proc.stderr  # the hub was never asked


def test_hub_probe_sees_a_listening_endpoint_and_a_closed_one(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(hub, "hub_endpoint", lambda: f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_reachable()
    monkeypatch.setattr(hub, "hub_endpoint", lambda: f"http://127.0.0.1:{closed_port()}")
    assert not hub.hub_reachable()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelLoadError, match=r"nobody/no-such-model' .* cannot be reached") as err:
        hub.read_model_type("nobody/no-such-model")
    assert err.value.param == "model"
