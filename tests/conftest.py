"""Shared fixtures. Everything is offline: HF_HUB_OFFLINE=1, models built with random weights."""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from support.servers import BUCKET, free_port, serve_folder, stop  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def attnstore_cache(tmp_path_factory):
    """A private cache folder so tests never touch (or depend on) the user's ~/.cache/attnstore."""
    path = tmp_path_factory.mktemp("attnstore-cache")
    os.environ["ATTNSTORE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(attnstore_cache):
    """The tiny random-weight Idefics3 model (built once per session, offline)."""
    from attnstore.demo import tiny_model_dir
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_path):
    from attnstore.models import load_adapter

    return load_adapter(str(tiny_model_path))


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """A small complete synthetic store (3 images: 3x4, 4x3, 2x2 tiles; 2 layers, 4 heads). Read-only."""
    from attnstore.synthetic import make_synthetic_store

    return make_synthetic_store(str(tmp_path_factory.mktemp("stores") / "synthetic.zarr"), n_images=3)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, tiny_model_path):
    """The demo store (tiny model on the shipped sample images). Read-only."""
    from attnstore.demo import build_demo_store

    path = str(tmp_path_factory.mktemp("stores") / "demo.zarr")
    build_demo_store(path, show_progress=False, model="random")
    return path


# -- local servers (loopback only) ----------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 with one bucket; AWS_* variables point s3fs (and subprocesses) at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=endpoint)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir(BUCKET)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture
def http_server():
    """Factory: serve a folder on 127.0.0.1 (with or without Range support); returns the base URL."""
    servers = []

    def serve(root: Path, ranges: bool = True) -> str:
        servers.append(serve_folder(root, ranges))
        return f"http://127.0.0.1:{servers[-1].server_address[1]}"

    yield serve
    for server in servers:
        stop(server)
