"""Screenshot of the explorer on a store (for the docs), taken with Debian chromium via playwright.

    python -m explorer.screenshot STORE OUT.png [--query "image=0&layer=1&norm=no_sinks"]

Serves the store on a free port of 127.0.0.1 in a background thread, opens the
view given by the permalink query, selects a patch for the reverse view, then
saves the whole page. Needs the `test` extra (playwright)
and /usr/bin/chromium; never downloads a browser.
"""

from __future__ import annotations

import argparse
import logging
import threading

CHROMIUM = "/usr/bin/chromium"
# Headless Debian chromium on a closed network: no background traffic that would be refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def take(store: str, out: str, query: str = "", width: int = 1500, height: int = 1080) -> None:
    """Save a screenshot of the explorer on `store` showing the permalink view `query`."""
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from explorer import create_app, views

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(store)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(f"http://127.0.0.1:{server.server_port}/?{query}")
            page.wait_for_function("() => (window.__attnRenders || 0) > 0", timeout=30_000)
            image = int(page.evaluate("JSON.parse(document.getElementById('view-state').textContent).image"))
            geom = views.geometry(app.attnstore_state, image)
            if geom.tiles is not None:  # a patch to click (sequence-only stores have none)
                _click_patch(page, geom.tiles)
            else:  # nothing to wait on: give the side panels the time the click would have
                page.wait_for_timeout(3000)
            page.mouse.move(5, 5)
            page.wait_for_timeout(800)  # side panels settle
            page.evaluate("document.getElementById('token-strip').scrollTop = 0")
            page.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        server.shutdown()


def _click_patch(page, tiles) -> None:
    """Select a patch a third of the way into the grid, for the reverse view."""
    r, c = tiles.shape[0] // 3, tiles.shape[1] // 3
    xy = page.evaluate(
        """([x, y]) => { const gd = document.querySelector('#heatmap .js-plotly-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, b = gd.getBoundingClientRect();
            return [b.left + xa._offset + xa.l2p(x), b.top + ya._offset + ya.l2p(y)]; }""",
        [float(tiles.x_edges[c : c + 2].mean()), float(tiles.y_edges[r : r + 2].mean())],
    )
    page.mouse.click(*xy)
    page.wait_for_selector("#token-strip .tok.rev", timeout=15_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("out")
    parser.add_argument("--query", default="", help="permalink query string of the view to show")
    args = parser.parse_args()
    take(args.store, args.out, args.query)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
