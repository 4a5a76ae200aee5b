"""docs/notebooks/quickstart.ipynb runs in a fresh kernel (nbclient), its map is `compute_map`'s, and
its HTML rendering (nbconvert) draws the overlay in Debian chromium."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import numpy as np
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "quickstart.ipynb"
SHOTS = os.environ.get("ATTNSTORE_NOTEBOOK_SHOTS")  # a folder: save screenshots of the rendered page there

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed in a fresh kernel of this interpreter (the repository first on its path)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    folder = tmp_path_factory.mktemp("notebook")
    repo = str(NOTEBOOK.parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}  # fmt: skip
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is the kernel of this interpreter (jupyter_client's native kernel: sys.executable)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": folder}})
    client.execute(env=env)
    return nb


def cell(nb, tag: str):
    return next(c for c in nb.cells if tag in c.metadata.get("tags", []))


def plotly_outputs(nb, tag: str) -> list[dict]:
    return [o["data"]["application/vnd.plotly.v1+json"] for o in cell(nb, tag).outputs
            if "application/vnd.plotly.v1+json" in o.get("data", {})]  # fmt: skip


def test_the_notebook_map_is_compute_maps(executed):
    import attnstore
    from attnstore.analysis import MapSpec, compute_map, patch_grid

    text = cell(executed, "summary").outputs[0]["data"]["text/html"]
    path = re.search(r"<b>([^<]+demo\.zarr)</b>", text).group(1)  # the store the notebook built
    ds = attnstore.open_dataset(path)
    (fig,) = plotly_outputs(executed, "map")
    result = compute_map(ds, MapSpec(image=0, token="dog", layers=(1,), heads=(2,), method="mean"))
    tiles = decoded(fig["data"][0]["z"])
    expected = patch_grid(result.values, result.img, "tiles").values
    np.testing.assert_array_equal(tiles, np.where(np.isnan(expected), np.nan, expected))
    assert np.isfinite(tiles).any()


def test_every_step_of_the_notebook_shows_something(executed):
    assert text_of(executed, "summary").count("<img src='data:image/png;base64,") == 3
    assert len(plotly_outputs(executed, "heads")[0]["data"]) == 4
    assert len(plotly_outputs(executed, "layers")) == 2
    for tag in ("matplotlib", "analysis"):
        assert any("image/png" in o.get("data", {}) for o in cell(executed, tag).outputs), tag
    assert "image_share" in text_of(executed, "aggregate")
    frame = text_of(executed, "explore")
    assert "<iframe" in frame and "http://127.0.0.1:" in frame
    assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def decoded(values) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(values, dict) and "bdata" in values:
        flat = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
        return flat.reshape([int(n) for n in str(values.get("shape", flat.size)).split(",")]).astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def text_of(nb, tag: str) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell(nb, tag).outputs)


ROWS = """(() => Array.from(document.querySelector('.js-plotly-plot')._fullData[0].z,
    row => Array.from(row, v => (v === null || Number.isNaN(v)) ? null : v)))()"""


@pytest.mark.browser
def test_the_rendered_notebook_draws_the_overlay_in_chromium(executed, tmp_path, browser_executable):
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    from explorer.screenshot import CHROMIUM_ARGS

    page_file = tmp_path / "quickstart.html"
    page_file.write_text(HTMLExporter().from_notebook_node(executed)[0])
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=browser_executable, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(page_file.as_uri())
        page.wait_for_selector(".js-plotly-plot .heatmaplayer image", state="attached", timeout=60_000)
        first = page.locator(".js-plotly-plot").first
        drawn = page.evaluate(ROWS)  # the first figure's tile heatmap as plotly.js drew it (decoded)
        expected = decoded(plotly_outputs(executed, "map")[0]["data"][0]["z"])
        np.testing.assert_array_equal(np.array(drawn, dtype=np.float64), expected)
        assert page.locator(".js-plotly-plot .imagelayer image").count() >= 1  # the picture under it
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{SHOTS}/quickstart_page.png", full_page=True)
            for i, figure in enumerate(page.locator(".js-plotly-plot").all()):
                figure.scroll_into_view_if_needed()
                figure.screenshot(path=f"{SHOTS}/figure_{i}.png")
        first.scroll_into_view_if_needed()
        chromium.close()
    assert not errors, errors


@pytest.fixture
def browser_executable():
    from explorer.screenshot import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


@pytest.mark.browser
def test_the_explorer_runs_inline_in_the_notebook_and_stops(tmp_path, browser_executable):
    """With the kernel alive, the notebook's explorer cell is a live explorer in its page (an iframe
    on 127.0.0.1 that draws the map); its `.stop()` cell frees the port."""
    import nbformat
    import requests
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    from explorer.screenshot import CHROMIUM_ARGS

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    repo = str(NOTEBOOK.parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    stop = next(i for i, c in enumerate(nb.cells) if "stop" in c.metadata.get("tags", []))
    with client.setup_kernel(env=env):
        for index in range(stop):
            client.execute_cell(nb.cells[index], index)
        url = re.search(r"http://127\.0\.0\.1:\d+/", text_of(nb, "explore")).group(0)
        page_file = tmp_path / "live.html"
        page_file.write_text(HTMLExporter().from_notebook_node(nb)[0])
        with sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=browser_executable, args=CHROMIUM_ARGS)
            page = chromium.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(page_file.as_uri())
            frame = page.frame_locator("iframe").first
            frame.locator(".js-plotly-plot .heatmaplayer image").first.wait_for(state="attached", timeout=60_000)
            if SHOTS:
                page.locator("iframe").first.scroll_into_view_if_needed()
                page.locator("iframe").first.screenshot(path=f"{SHOTS}/explore_inline.png")
            chromium.close()
        client.execute_cell(nb.cells[stop], stop)
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
