"""Explorer speed in a real browser: page load, click -> heatmap drawn, layer change, server callback time.

Drives Debian chromium with playwright against `attnstore serve` (a subprocess) on a
real-size synthetic store (30 layers, 9 heads, 3x4 tiles, 20 images, 80 answer tokens)
and prints p50/p95 for each measure against the goals of issues 4 and 15.

Timing: the page's own clock (`performance.now()`), from the click / key press (a
capture-phase listener) to the first animation frame after plotly's `plotly_afterplot`
of the heatmap figure (assets/explorer.js records it). A click's map is drawn first from
GET /api/view, then Dash's callback brings the whole view: both times are reported. Server
time is the main callback's own time (reported in the view-state element) and the HTTP
round trip of its request (Resource Timing).

    .venv/bin/python benchmarks/bench_explorer.py [--store PATH] [--clicks 40] [--port 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from explorer.screenshot import CHROMIUM, CHROMIUM_ARGS

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, wait_until_serving  # noqa: E402

GOALS = {
    "page load": (1000, None),  # issue 21
    "click -> heatmap": (50, 200),  # p50: issue 15; p95: issue 4
    "layer change -> heatmap": (100, 200),
    "server callback (function)": (15, None),
}

# Records the time of the user's action in page time, before any handler runs, and counts requests in flight.
INIT_SCRIPT = """
for (const type of ["click", "keydown"]) {
  document.addEventListener(type, () => { window.__benchT0 = performance.now(); window.__benchDrawn = null; }, true);
}
// the first heatmap drawn after the action (a click may draw twice: its map early, then Dash's whole view)
document.addEventListener("attnstore:render", (e) => { window.__benchDrawn = window.__benchDrawn || e.detail; });
window.__benchPending = 0;
const _fetch = window.fetch;
window.fetch = function () {
  window.__benchPending++;
  return _fetch.apply(this, arguments).finally(() => { window.__benchPending--; });
};
"""
# The page is at rest: no request in flight, side panels updated (see SETTLE_MS in assets/explorer.js).
SETTLED = (
    "() => window.__benchPending === 0 && !window.__attnSettlePending"
    " && Array.from(document.images).every(i => i.complete)"
)


def build_store(path: str) -> str:
    from attnstore.extraction.synthetic import make_synthetic_store

    t = time.perf_counter()
    make_synthetic_store(path, n_images=20, n_layers=30, n_heads=9, n_answer=80)
    print(f"built real-size store {path} in {time.perf_counter() - t:.1f} s")
    return path


def start_server(store: str, port: int) -> subprocess.Popen:
    code = f"from attnstore.cli.serve import serve_store; serve_store({store!r}, port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return wait_until_serving(proc, f"http://127.0.0.1:{port}/api/initialize", timeout=60)


def pct(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def renders(page) -> int:
    return int(page.evaluate("window.__attnRenders || 0"))


def wait_render(page, before: int, timeout_ms: int = 10_000) -> float:
    """Milliseconds from the recorded action to the frame after the first heatmap render since."""
    page.wait_for_function(f"() => (window.__attnRenders || 0) > {before} && window.__benchDrawn", timeout=timeout_ms)
    return float(page.evaluate("window.__benchDrawn.frame - window.__benchT0"))


def settle(page) -> None:
    """Wait until the page is at rest (a user looks at the result before the next click)."""
    page.wait_for_function(SETTLED, timeout=10_000)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def view_state(page) -> dict:
    return json.loads(page.inner_text("#view-state"))


# Where a page load's time goes, from the browser's own timings (ms since navigation): each step ends
# at the first of these moments; "scripts evaluated" is DOMContentLoaded (the page's scripts are
# synchronous), "page built" the first element Dash renders from the layout.
LOAD_STEPS = ("HTML received", "scripts fetched", "scripts evaluated", "layout received", "page built", "heatmap drawn")
LOAD_MILESTONES = """() => { const n = performance.getEntriesByType('navigation')[0];
  const r = performance.getEntriesByType('resource');
  const end = (f) => Math.max(...r.filter(f).map(e => e.responseEnd));
  return [n.responseEnd, end(e => e.initiatorType === 'script' || e.name.endsWith('.js')),
    n.domContentLoadedEventEnd, end(e => e.name.includes('/_dash-layout')), window.__benchBuilt,
    window.__attnLastRender.frame]; }"""
# The moment the page built from the layout is in the DOM (its view-state element).
BUILT_SCRIPT = """document.addEventListener('DOMContentLoaded', () => { const seen = new MutationObserver(() => {
  if (document.getElementById('view-state')) { window.__benchBuilt = performance.now(); seen.disconnect(); } });
  seen.observe(document.body, {childList: true, subtree: true}); });"""


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def wait_server_idle(pid: int, quiet_s: float = 0.5, timeout_s: float = 30.0) -> None:
    """Wait until the server has used < 2% of a core for `quiet_s`: a closed page's side panels (sent
    before it closed) are computed by then, as they would be before a person opened the next page."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(quiet_s)
        if cpu_seconds(pid) - before < 0.02 * quiet_s:
            return


def open_page(browser, url: str, script: str = INIT_SCRIPT, wait_until: str = "load"):
    """A fresh context's tab on the explorer at `url` (`script` added before the page's own), once
    its first heatmap is drawn."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.add_init_script(script)
    page.goto(url, wait_until=wait_until)
    page.wait_for_function("() => (window.__attnRenders || 0) > 0", timeout=30_000)
    return page


def measure_loads(browser, url: str, n: int, server_pid: int | None = None) -> tuple[list[float], list[list[float]]]:
    """Navigation start -> first heatmap drawn, each in a fresh context (nothing cached), with the
    moments of `LOAD_STEPS` per load. With `server_pid`, each load starts on a server at rest (else
    they follow each other at once, and a load may share the CPU with the previous page's panels)."""
    times, steps = [], []
    for _ in range(n):
        if server_pid is not None:
            wait_server_idle(server_pid)
        page = open_page(browser, url, INIT_SCRIPT + BUILT_SCRIPT, wait_until="commit")
        times.append(float(page.evaluate("window.__attnLastRender.frame")))  # performance.now() counts from navigation
        steps.append([float(v) for v in page.evaluate(LOAD_MILESTONES)])
        page.close()
    return times, steps


# Where a click's time goes, in page time: action -> the request that brought the drawn values sent
# (GET /api/view, or Dash's callback when the page drew through it) -> its response -> plotly's
# afterplot -> the next frame.
BREAKDOWN = """() => { const t0 = window.__benchT0, r = window.__benchDrawn;
  const e = performance.getEntriesByType('resource').filter(x => (x.name.includes('/api/view?')
      || x.name.includes('_dash-update')) && x.startTime >= t0 && x.responseEnd <= r.afterplot);
  if (!e.length) return null;
  const sent = Math.min(...e.map(x => x.startTime)), back = Math.max(...e.map(x => x.responseEnd));
  return [sent - t0, back - sent, r.afterplot - back, r.frame - r.afterplot]; }"""
BREAKDOWN_STEPS = ("action -> request sent", "request (server + HTTP)", "response -> plotly drawn", "drawn -> frame")
# The whole view has arrived (Dash's callback: status line, view state, permalink): checked every frame.
VIEW_ARRIVED = """(key) => { const e = document.getElementById('view-state');
  if (!e || !e.textContent || JSON.parse(e.textContent).token !== key) return false;
  window.__benchViewT = performance.now(); return true; }"""


def measure_clicks(page, n: int, rng: random.Random) -> dict[str, list]:
    """Clicks on random text tokens (cache misses: a new row is read each time): click -> heatmap drawn,
    click -> whole view (status line), server callback time and round trip, and the breakdown."""
    tokens = page.locator("#token-strip .tok.clickable")
    count = tokens.count()
    order = rng.sample(range(count), min(n, count))
    out = {"drawn": [], "view": [], "server": [], "rtt": [], "parts": []}
    page.evaluate("performance.clearResourceTimings()")
    for i in order:
        settle(page)
        before = renders(page)
        token = tokens.nth(i)
        key = int(token.get_attribute("data-k"))
        token.click()
        out["drawn"].append(wait_render(page, before))
        out["parts"].append(page.evaluate(BREAKDOWN))
        page.wait_for_function(VIEW_ARRIVED, arg=key, timeout=10_000)
        out["view"].append(float(page.evaluate("window.__benchViewT - window.__benchT0")))
        out["server"].append(view_state(page)["server_ms"])
        out["rtt"].append(_last_main_request(page))
    out["parts"] = [p for p in out["parts"] if p]
    return out


def measure_first_clicks(browser, store: str, servers: int = 2, clicks: int = 3) -> list[float]:
    """Click -> heatmap for the first clicks on a page opened as soon as a fresh server answers (the
    store's first-use work may still be running: `explorer.app.warm_panels`), `servers` times."""
    out = []
    for _ in range(servers):
        port = free_port()
        server = start_server(store, port)
        try:
            page = open_page(browser, f"http://127.0.0.1:{port}/")
            page.wait_for_timeout(500)  # the side panels of the first view have been asked for
            tokens = page.locator("#token-strip .tok.clickable")
            for i in range(clicks):
                before = renders(page)
                tokens.nth(3 + 4 * i).click()
                out.append(wait_render(page, before))
                page.wait_for_timeout(300)  # a person looks, without waiting for the page to rest
            page.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    return out


def _last_main_request(page) -> float:
    """Duration of the slowest-to-finish main-callback request since the previous call (ms)."""
    value = page.evaluate(
        """() => { const e = performance.getEntriesByType('resource').filter(r => r.name.includes('_dash-update'));
                   performance.clearResourceTimings(); return e.length ? Math.min(...e.map(r => r.duration)) : NaN; }"""
    )
    return float(value)


def measure_layers(page, n: int, rest: bool = True) -> tuple[list[float], list[float]]:
    """Arrow keys on the layer slider's thumb (the Radix slider commits on key press); with `rest`,
    the page settles between presses, else the next press follows the previous heatmap at once."""
    thumb = page.locator("#layer-slider [role=slider]").first
    thumb.focus()
    top = int(thumb.get_attribute("aria-valuemax"))
    latencies, server = [], []
    step = 1
    for _ in range(n):
        if rest:
            settle(page)
        layer = view_state(page)["layer"]
        if not 0 <= layer + step <= top:  # bounce between the first and last layer
            step = -step
        before = renders(page)
        page.keyboard.press("ArrowRight" if step > 0 else "ArrowLeft")
        latencies.append(wait_render(page, before))
        server.append(view_state(page)["server_ms"])
    return latencies, server


def report(name: str, values: list[float]) -> str:
    p50, p95 = pct(values)
    goal50, goal95 = GOALS.get(name, (None, None))
    ok = (goal50 is None or p50 <= goal50) and (goal95 is None or p95 <= goal95)
    goal = "" if goal50 is None else f"goal p50 <= {goal50}" + (f", p95 <= {goal95}" if goal95 else "")
    flag = "" if not goal else ("  ok" if ok else "  MISSED")
    return f"{name:<32} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   (n={len(values)})  {goal}{flag}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="existing store (default: build a real-size synthetic one in a temp dir)")
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or build_store(str(Path(tmp) / "real.zarr"))
        port = args.port or free_port()
        server = start_server(store, port)
        url = f"http://127.0.0.1:{port}/"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                loads, load_steps = measure_loads(browser, url, args.loads, server_pid=server.pid)
                back_to_back, _ = measure_loads(browser, url, args.loads)
                page = open_page(browser, url)
                rng = random.Random(0)
                clicks = measure_clicks(page, args.clicks, rng)
                layers, layer_server = measure_layers(page, args.clicks)
                rapid, _ = measure_layers(page, args.clicks, rest=False)
                page.locator("#mode").get_by_text("entropy-weighted top-k").click()
                page.locator("#over").get_by_text("all layers and heads").click()
                page.wait_for_timeout(500)
                agg = measure_clicks(page, min(20, args.clicks), rng)
                first = measure_first_clicks(browser, store)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(
        f"\nexplorer benchmark: store {'(synthetic real-size)' if not args.store else args.store}, "
        f"chromium headless, {os.cpu_count()} cores"
    )
    print(report("page load", loads) + f"   (server at rest before each; first load: {loads[0]:.0f} ms)")
    for step, values in zip(LOAD_STEPS, zip(*load_steps)):
        print(report(f"  {step} at", list(values)))
    print(report("page load, back-to-back", back_to_back) + "   (each right after the previous page closed)")
    print(report("click -> heatmap", clicks["drawn"]))
    for step, values in zip(BREAKDOWN_STEPS, zip(*clicks["parts"])):
        print(report(f"  {step}", list(values)))
    print(report("click -> whole view", clicks["view"]) + "   (status line, permalink: Dash's callback)")
    print(report("layer change -> heatmap", layers))
    print(report("layer change, back-to-back", rapid) + "   (next key press as soon as the heatmap is drawn)")
    print(report("server callback (function)", clicks["server"] + layer_server))
    print(report("server callback (HTTP round trip)", clicks["rtt"]))
    print(report("click, entropy top-k all L x H", agg["drawn"]) + f"   server p50 {pct(agg['server'])[0]:.1f} ms")
    print(report("first clicks, fresh server", first) + "   (page opened as soon as the server answers)")


if __name__ == "__main__":
    main()
