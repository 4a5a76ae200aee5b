"""Screenshots of the explorer on a store (for the docs), taken with Debian chromium via playwright.

    python -m explorer.screenshot STORE OUT.png [--query "image=0&layer=1&norm=no_sinks"] [--shot NAME]

Serves the store on a free port of 127.0.0.1 in a background thread, opens the
view given by the permalink query, then takes one of `SHOTS`: "page" (the whole
page, a patch selected for the reverse view: docs/explorer.png), "patch-query"
(a patch clicked, cut to the map and the "where does a patch look?" panel; needs
a store written with `--queries text+image`) or "shared-scale" (the gallery with
every head on one colour scale). Needs the `test` extra (playwright) and
/usr/bin/chromium; never downloads a browser.
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass

from explorer import ids

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


@dataclass(frozen=True)
class Shot:
    """What one screenshot shows: a permalink query added to the page's, whether a patch is clicked
    (and what then shows the click was answered), and the elements the picture is cut to (none:
    the whole page)."""

    query: str = ""
    click_patch: bool = True
    answered: str = "#token-strip .tok.rev"
    clip: tuple[str, ...] = ()
    faint_layer: bool = False  # open the layer where most heads have a negligible image share (marked)


SHOTS = {
    "page": Shot(),
    "patch-query": Shot(
        answered=f"#{ids.PATCH_QUERY_MAP} .js-plotly-plot .heatmaplayer",
        clip=(f"#{ids.PATCH_QUERY_ON}", f"#{ids.PATCH_QUERY_TEXT}"),
    ),
    "shared-scale": Shot(
        query="scale=shared",
        click_patch=False,
        answered=f"#{ids.GALLERY} .gallery-item",
        clip=(f"#{ids.GALLERY}",),
        faint_layer=True,
    ),
}


def take(store: str, out: str, query: str = "", width: int = 1500, height: int = 1080, shot: str = "page") -> None:
    """Save the screenshot `shot` (a name of `SHOTS`) of the explorer on `store` showing the permalink view `query`."""
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from explorer import create_app, views

    if shot not in SHOTS:
        raise ValueError(f"shot must be one of {', '.join(SHOTS)}, not '{shot}'")
    look = SHOTS[shot]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(store)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            if look.faint_layer and "layer=" not in query:
                query = "&".join(q for q in (query, _faint_layer(app.attnstore_state, query)) if q)
            page.goto(
                f"http://127.0.0.1:{server.server_port}/?{'&'.join(q for q in (query, look.query) if q)}",
                timeout=120_000,
            )
            page.wait_for_function("() => (window.__attnRenders || 0) > 0", timeout=30_000)
            image = int(page.evaluate("JSON.parse(document.getElementById('view-state').textContent).image"))
            geom = views.geometry(app.attnstore_state, image)
            if look.click_patch and geom.tiles is not None:  # a patch to click (sequence-only stores have none)
                _click_patch(page, geom.tiles, look.answered)
            elif not look.click_patch:
                page.wait_for_selector(look.answered, timeout=30_000)
            else:  # nothing to wait on: give the side panels the time a click would have
                page.wait_for_timeout(3000)
            page.mouse.move(5, 5)
            page.wait_for_timeout(800)  # side panels settle
            page.evaluate("document.getElementById('token-strip').scrollTop = 0")
            if look.clip:
                page.screenshot(path=out, clip=_around(page, look.clip), full_page=True)
            else:
                page.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        server.shutdown()


def _faint_layer(state, query: str) -> str:
    """ "layer=N" of the view's token where most heads give the image a negligible share ("" if none does)."""
    import numpy as np

    from attnstore.render.scale import negligible
    from explorer import views

    params, _ = views.parse_query(query, state)
    share = views.layer_head_stats(state, params)["share"]  # [layer, head]
    faint = np.vectorize(negligible)(share).sum(axis=1)  # [layer]
    return f"layer={int(faint.argmax())}" if faint.max() > 0 else ""


def _around(page, selectors: tuple[str, ...], margin: int = 8) -> dict:
    """The page rectangle (page coordinates) holding the elements `selectors` and their panels' headings."""
    return page.evaluate(
        """([selectors, m]) => { const boxes = selectors.map(s => document.querySelector(s)).flatMap(e =>
              [e, e.previousElementSibling].filter(Boolean)).map(e => e.getBoundingClientRect());
            const x = Math.min(...boxes.map(b => b.left)) + scrollX - m;
            const y = Math.min(...boxes.map(b => b.top)) + scrollY - m;
            return {x: Math.max(x, 0), y: Math.max(y, 0),
                    width: Math.max(...boxes.map(b => b.right)) + scrollX + m - Math.max(x, 0),
                    height: Math.max(...boxes.map(b => b.bottom)) + scrollY + m - Math.max(y, 0)}; }""",
        [list(selectors), margin],
    )


def _click_patch(page, tiles, answered: str) -> None:
    """Select a patch a third of the way into the grid; wait until `answered` shows."""
    r, c = tiles.shape[0] // 3, tiles.shape[1] // 3
    xy = page.evaluate(
        """([x, y]) => { const gd = document.querySelector('#heatmap .js-plotly-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, b = gd.getBoundingClientRect();
            return [b.left + xa._offset + xa.l2p(x), b.top + ya._offset + ya.l2p(y)]; }""",
        [float(tiles.x_edges[c : c + 2].mean()), float(tiles.y_edges[r : r + 2].mean())],
    )
    page.mouse.click(*xy)
    page.wait_for_selector(answered, timeout=15_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("out")
    parser.add_argument("--query", default="", help="permalink query string of the view to show")
    parser.add_argument("--shot", default="page", choices=list(SHOTS), help="what to show (default: the whole page)")
    args = parser.parse_args()
    take(args.store, args.out, args.query, shot=args.shot)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
