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
    from attnstore.extraction.demo import tiny_model_dir
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_path):
    from attnstore.models import load_adapter

    return load_adapter(str(tiny_model_path))


@pytest.fixture(scope="session")
def family_adapter(attnstore_cache):
    """`(family, kernel="sdpa") -> adapter`: the family's tiny model (`tiny_model_dir`), loaded once per session."""
    from attnstore.extraction.demo import tiny_model_dir
    from attnstore.models import load_adapter
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    loaded = {}

    def get(family: str, kernel: str = "sdpa"):
        if (family, kernel) not in loaded:
            loaded[family, kernel] = load_adapter(str(tiny_model_dir(family)), attn_kernel=kernel)
        return loaded[family, kernel]

    return get


@pytest.fixture
def images(tmp_path):
    """Two small images (320x240, 200x300) in tmp_path/images (tests/scale has its own, wider ones)."""
    from attnstore.extraction.synthetic import _gradient_image

    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate([(320, 240), (200, 300)]):
        _gradient_image(*size, seed=i).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """A small complete synthetic store (3 images: 3x4, 4x3, 2x2 tiles; 2 layers, 4 heads). Read-only."""
    from attnstore.extraction.synthetic import make_synthetic_store

    return make_synthetic_store(str(tmp_path_factory.mktemp("stores") / "synthetic.zarr"), n_images=3)


@pytest.fixture(scope="session")
def image_rows_store(tmp_path_factory):
    """A synthetic store with the image patches' rows too (`queries="text+image"`): 2 images, 2x2 and
    1x2 tiles. Read-only."""
    from attnstore.extraction.synthetic import make_synthetic_store

    path = str(tmp_path_factory.mktemp("stores") / "image_rows.zarr")
    return make_synthetic_store(path, n_images=2, grids=[(2, 2), (1, 2)], queries="text+image", seed=5)


@pytest.fixture(scope="session")
def scene_store(tmp_path_factory, tiny_model_path):
    """Demo scenes (object boxes, `target_object`) run through the tiny random model: 3 images. Read-only."""
    from attnstore.extraction.demo import build_scene_store

    path = str(tmp_path_factory.mktemp("stores") / "scenes.zarr")
    build_scene_store(path, tiny_model_path, n_scenes=3, seed=3, show_progress=False)
    return path


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, tiny_model_path):
    """The demo store (tiny model on the shipped sample images). Read-only."""
    from attnstore.extraction.demo import build_demo_store

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


class TransformersReference:
    """What plain transformers computes for a saved model, independently of attnstore's capture:
    its own eager `output_attentions`, and a plain greedy `generate`."""

    def __init__(self):
        self._models = {}

    def model(self, path: str, implementation: str):
        import torch
        from transformers import AutoModelForImageTextToText

        key = (path, implementation)
        if key not in self._models:
            self._models[key] = AutoModelForImageTextToText.from_pretrained(
                path, attn_implementation=implementation, dtype=torch.float32, local_files_only=True
            ).eval()
        return self._models[key]

    def attention(self, adapter, image, prompt: str, token_ids):
        """Eager attention weights of one forward pass over `token_ids`  # [layer, head, seq, seq] float32."""
        import numpy as np
        import torch

        inputs = adapter.prepare(image, prompt)
        sequence = torch.as_tensor(np.asarray(token_ids), dtype=torch.long)
        extra = adapter.forward_inputs(inputs, sequence)  # pixels (+ per-token inputs over the answer)
        with torch.inference_mode():
            out = self.model(adapter.model_id, "eager")(
                input_ids=sequence[None],
                attention_mask=torch.ones_like(sequence)[None],
                output_attentions=True,
                use_cache=False,
                **extra,
            )
        return np.stack([a[0].float().numpy() for a in out.attentions])

    def generate(self, adapter, image, prompt: str, max_new_tokens: int):
        """Answer ids of a plain greedy SDPA generate (the adapter's end tokens, image-placeholder tokens
        suppressed)  # [answer]."""
        import torch

        inputs = adapter.prepare(image, prompt)
        with torch.inference_mode():
            out = self.model(adapter.model_id, "sdpa").generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                suppress_tokens=adapter.banned_token_ids() or None,
                eos_token_id=adapter.eos_token_ids or None,
            )
        return out[0, inputs["input_ids"].shape[1] :].numpy()


@pytest.fixture(scope="session")
def transformers_reference():
    """One `TransformersReference` per session (models loaded once per path and implementation)."""
    return TransformersReference()
