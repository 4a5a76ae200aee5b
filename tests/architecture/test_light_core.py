"""The light core: reading, analysing and serving a store never imports torch or transformers.

Checked in a fresh interpreter (a test process has torch loaded already by other tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.probes import probe_output, without

HEAVY = ("torch", "transformers", "tokenizers", "safetensors")

SCRIPT = """
import json, sys
HEAVY = ("torch", "transformers", "tokenizers", "safetensors")
import attnstore
from attnstore.analysis import MapSpec, compute_map, aggregate_token
from attnstore.render import Style, export_map
from explorer import create_app

ds = attnstore.open_dataset(sys.argv[1])
grid = ds.attn.heatmap(token="jacket", image=0, method="entropy_topk", k=5)      # the README's accessor
result = compute_map(ds, MapSpec(image=1, token="dog", normalise="no_sinks"))
png = export_map(result, "png", Style())
table = aggregate_token(ds, "dog", num_workers=1)
client = create_app(sys.argv[1]).server.test_client()
answer = client.post("/api/generate_attention_map", json={"word": "dog", "layer": 0, "head": 0})
print(json.dumps({
    "heavy": [m for m in HEAVY if m in sys.modules],
    "grid": list(grid.shape), "png": png[:4].decode("latin1"), "rows": int(table.sizes["occurrence"]),
    "status": answer.status_code,
}))
"""


def test_reading_analysing_and_serving_leave_torch_out(synthetic_store):
    seen = json.loads(probe_output(SCRIPT, synthetic_store, timeout=300).strip().splitlines()[-1])
    assert seen["heavy"] == [], f"imported by the light core: {seen['heavy']}"
    assert seen["grid"][0] > 0 and seen["png"] == "\x89PNG" and seen["rows"] == 3 and seen["status"] == 200


def test_cli_commands_that_read_a_store_leave_torch_out(synthetic_store):
    """`attnstore info` etc. start without loading a model stack (checked inside the process)."""
    probe = (
        "import sys, runpy; sys.argv = ['attnstore', 'info', sys.argv[1]];\n"
        "from attnstore.cli import main; code = main(sys.argv[1:]);\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules]); sys.exit(code)"
    )
    assert "HEAVY []" in probe_output(probe, synthetic_store)


def test_model_commands_without_the_model_side_say_what_to_install(tmp_path, tiny_model_path):
    """A light install (no torch) gets one line naming the extra, not a traceback."""
    probe = (
        without("torch", "transformers") +
        "from attnstore.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    proc = subprocess.run(
        [sys.executable, "-c", probe, "extract", str(image), "--model", str(tiny_model_path),
         "--out", str(tmp_path / "s.zarr")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "attnstore[extract]" in proc.stderr, proc.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_importing_the_library_leaves_numba_out():
    """numba (the optional compiled aggregate kernel) loads on the kernel's first use, not on import."""
    probe = "import sys, attnstore, attnstore.analysis, attnstore.store; print('numba' in sys.modules)"
    assert probe_output(probe).strip() == "False"


def test_info_reads_no_attention_row_and_imports_no_tensorstore(synthetic_store):
    """`attnstore info` opens the "auto" read backend lazily: it names the backend a read will use
    without importing tensorstore (~0.6 s of start-up); the first attention read then opens it."""
    probe = (
        "import sys\n"
        "from attnstore.cli import main\n"
        "code = main(['info', sys.argv[1]])\n"
        "print('AFTER_INFO', 'tensorstore' in sys.modules)\n"
        "import attnstore\n"
        "from attnstore.store.xarray_glue import reader_name\n"
        "ds = attnstore.open_dataset(sys.argv[1])\n"
        "ds['attention'].isel(image=0, query=0).values\n"
        "print('AFTER_READ', 'tensorstore' in sys.modules, reader_name(ds))\n"
        "sys.exit(code)"
    )
    env = {k: v for k, v in os.environ.items() if k != "ATTNSTORE_READ_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", probe, synthetic_store], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "AFTER_INFO False" in proc.stdout
    assert "read backend: tensorstore (file kvstore)" in " ".join(proc.stdout.split())  # what a read will use
    assert "AFTER_READ True tensorstore (file kvstore), " in proc.stdout and "decoded by numcodecs" in proc.stdout


INFO_HEAVY = ("dask", "tensorstore", "numba", "matplotlib", "plotly", "dash", "scipy", "PIL", *HEAVY)


@pytest.mark.parametrize("which", ["synthetic_store", "scene_store"])
def test_info_imports_no_heavy_module(which, request):
    """`attnstore info` reads no attention row and computes nothing, so it starts without dask (xarray's
    own default indexes imported it on open, and so does building any DataArray: the scene store's
    right/wrong column), tensorstore, numba, plotting or imaging libraries or a model stack."""
    store = request.getfixturevalue(which)
    probe = (
        "import sys\n"
        "from attnstore.cli import main\n"
        "code = main(['info', sys.argv[1]])\n"
        f"print('HEAVY', sorted({{m.split('.')[0] for m in sys.modules}} & set({INFO_HEAVY!r})))\n"
        "sys.exit(code)"
    )
    env = {k: v for k, v in os.environ.items() if k != "ATTNSTORE_READ_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", probe, store], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert ("synthetic_00000.png" if which == "synthetic_store" else "answers:") in proc.stdout  # it printed
    assert "HEAVY []" in proc.stdout, proc.stdout[-300:]
