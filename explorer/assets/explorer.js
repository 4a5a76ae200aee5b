/* attnstore explorer: the token strip (drawn from JSON), clicks, keyboard, permalink, render signal.
 *
 * Clicks are delegated from the document and sent to Dash with dash_clientside.set_props, so
 * a click costs one callback request, whatever the number of tokens on the page. A clicked
 * token's map is drawn first, from GET /api/view, before Dash is told (selectToken).
 * Component ids are not spelled here: the page carries them (explorer/ids.py `for_js`, written by
 * the layout into the data-attnstore-ids attribute), read on first use once Dash has drawn the page.
 */
(function () {
  "use strict";
  let ids = null;
  const ID = new Proxy({}, {
    get(_, name) {
      if (!ids) {
        const holder = document.querySelector("[data-attnstore-ids]");
        if (!holder) return undefined;
        ids = JSON.parse(holder.getAttribute("data-attnstore-ids"));
      }
      return ids[name];
    },
  });
  const SETTLE_MS = 120;  // side panels (charts, gallery, reverse view) update after the view rests this long
  const noUpdate = () => window.dash_clientside.no_update;
  const setProps = (id, props) => window.dash_clientside.set_props(id, props);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- the token strip --------------------------------------------------------------------
  function shown(text) {
    // newlines stay line breaks (white-space: pre-wrap) but get a visible mark
    return text.replace(/\n/g, "\u21b5\n");
  }

  function chip(item) {
    // the 64-ish patch cells are built on first expand: most chips are never opened
    const c = el("span", "chip chip-" + item.kind);
    const keys = item.keys;
    const label = el("span", "chip-label", "\u25a6 " + item.label);
    label.title = keys.length + " tokens (#" + keys[0] + "\u2013#" + keys[keys.length - 1] +
      "): click to expand, then click a cell to see which tokens look at that patch";
    c.appendChild(label);
    c.__item = item;
    return c;
  }

  function chipBody(item) {
    const body = el("span", "chip-body");
    let cols = 1;
    for (const cell of item.cells) cols = Math.max(cols, cell[2] + 1);
    body.style.gridTemplateColumns = "repeat(" + cols + ", 9px)";
    for (const [k, r, col] of item.cells) {
      const cell = el("span", "cell");
      cell.dataset.k = k;
      cell.style.gridRow = r + 1;
      cell.style.gridColumn = col + 1;
      cell.title = "#" + k + " " + item.label + ", sub-patch " + r + "," + col;
      body.appendChild(cell);
    }
    return body;
  }

  function toggleChip(c) {
    if (!c.querySelector(".chip-body")) c.appendChild(chipBody(c.__item));
    c.classList.toggle("open");
    if (c.classList.contains("open")) scrollInto(c.closest(".strip"), c, true);
  }

  function buildStrip(box, strip) {
    box.textContent = "";
    box.dataset.image = strip.image;
    const frag = document.createDocumentFragment();
    let inAnswer = false;
    for (const item of strip.items) {
      if (item.t === "br") { frag.appendChild(el("br")); continue; }
      if (item.t === "chip") { frag.appendChild(chip(item)); continue; }
      if (item.p === "answer" && !inAnswer) {
        inAnswer = true;
        frag.appendChild(el("br"));
        frag.appendChild(el("span", "answer-mark", "answer"));
      }
      const tok = el("span", "tok tok-" + item.p + (item.q >= 0 ? " clickable" : ""), shown(item.s));
      tok.dataset.k = item.k;
      tok.dataset.q = item.q;
      tok.title = "#" + item.k + (item.q >= 0 ? "" : " (no attention row stored for this token)");
      frag.appendChild(tok);
    }
    box.appendChild(frag);
  }

  function scrollInto(box, node, whole) {
    // scroll the strip (not the page) so that `node` is visible; `whole`: all of it, if it fits
    if (!box || !node) return;
    const top = node.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop;
    const bottom = top + node.offsetHeight;
    if (whole && top >= box.scrollTop && bottom <= box.scrollTop + box.clientHeight) return;
    if (whole) box.scrollTop = Math.max(0, Math.min(top, bottom - box.clientHeight));
    else if (top < box.scrollTop || bottom > box.scrollTop + box.clientHeight) {
      box.scrollTop = Math.max(0, top - box.clientHeight / 3);
    }
  }

  function markSelected(box, token) {
    // the strip scrolls to the selected token only when the selection changes (a patch picked in an
    // opened chip must not scroll that chip away)
    const moved = box.dataset.token !== String(token);
    box.dataset.token = String(token);
    box.querySelectorAll(".tok.sel").forEach((e) => e.classList.remove("sel"));
    if (token !== null && token !== undefined) {
      const node = box.querySelector('.tok[data-k="' + token + '"]');
      // scrolled in the next frame: measuring now would force a layout of the whole page before the
      // click's request is even sent
      if (node) { node.classList.add("sel"); if (moved) requestAnimationFrame(() => scrollInto(box, node, false)); }
    }
  }

  function highlight(box, token, rev) {
    markSelected(box, token);
    box.querySelectorAll(".tok.rev").forEach((e) => { e.classList.remove("rev"); e.style.removeProperty("--rev"); });
    box.querySelectorAll(".cell.cell-sel").forEach((e) => e.classList.remove("cell-sel"));
    if (rev && rev.rows && String(rev.image) === box.dataset.image) {
      let top = 0;
      for (const row of rev.rows) top = Math.max(top, row[1]);
      for (const [k, v] of rev.rows) {
        const node = box.querySelector('.tok[data-k="' + k + '"]');
        if (node && top > 0) { node.classList.add("rev"); node.style.setProperty("--rev", (v / top).toFixed(3)); }
      }
      const cell = box.querySelector('.cell[data-k="' + rev.key + '"]');
      if (cell) cell.classList.add("cell-sel");
    }
  }

  // -- selecting a token: its map drawn first ----------------------------------------------
  // Dash's round trip for a click (the callback request, then React and plotly redrawing the whole
  // figure) takes ~70 ms. The map alone comes from GET /api/view (the same values, by the same
  // library call) and is drawn with Plotly.update; then the token goes to Dash, whose callback
  // brings the status line, the side panels and the permalink (and draws the same values again).
  // The map's request goes alone: sent beside Dash's, both wait on the server and the page.
  let selectSeq = 0;

  function apiUrl(path) {
    // Dash's own request prefix (the app may be mounted under a path: url_base_pathname)
    const config = document.getElementById("_dash-config");
    const prefix = config ? JSON.parse(config.textContent).requests_pathname_prefix || "/" : "/";
    return prefix + path;
  }

  function shownView() {
    // the view the figure shows, when the page is at rest (no main callback in flight: Dash marks
    // its outputs while it runs) and the strip belongs to that image; else null
    const stateEl = document.getElementById(ID.viewState);
    const box = document.getElementById(ID.strip);
    const gd = document.querySelector("#" + ID.figure + " .js-plotly-plot");
    if (!stateEl || !stateEl.textContent || stateEl.hasAttribute("data-dash-is-loading")) return null;
    if (!gd || !gd.data || !window.Plotly || !box) return null;
    const text = stateEl.textContent;
    const view = JSON.parse(text);
    return String(view.image) === box.dataset.image ? { view: view, text: text, stateEl: stateEl, gd: gd } : null;
  }

  function drawMap(shown, key, seq) {
    // the map of token `key` in the shown view, drawn straight into the figure unless a newer
    // selection came meanwhile (responses may arrive out of order) or Dash has drawn another view
    // since; resolves when drawn
    const query = new URLSearchParams(shown.view.permalink);
    query.delete("token");
    query.set("token_index", String(key));
    return fetch(apiUrl("api/view?" + query)).then((r) => (r.ok ? r.json() : null)).then((update) => {
      if (!update || seq !== selectSeq || shown.stateEl.textContent !== shown.text) return;
      window.__attnPreviews = (window.__attnPreviews || 0) + 1;
      const layout = { "coloraxis.cmax": update.cmax, "coloraxis.colorbar.title.text": update.colourbar };
      return window.Plotly.update(shown.gd, { z: update.z }, layout, update.traces);
    });
  }

  function cancelSelection() {
    // another action changes the view (Escape, another image): a selection on its way is dropped
    selectSeq++;
  }

  function selectToken(key) {
    const seq = ++selectSeq;
    const shown = shownView();
    const box = document.getElementById(ID.strip);
    if (box) markSelected(box, key);  // at once: the next arrow key moves on from here
    const tellDash = () => { if (seq === selectSeq) setProps(ID.token, { data: key }); };  // a newer one tells its own
    if (!shown) { tellDash(); return; }
    // Dash is told once the map is painted: its work on the page (React, the strip) would delay the
    // frame. An error (or a token without a row) draws nothing here: Dash's callback shows the message.
    const afterPaint = () => requestAnimationFrame(() => setTimeout(tellDash, 0));
    drawMap(shown, key, seq).catch(() => {}).finally(afterPaint);
  }

  // -- document-level events --------------------------------------------------------------
  document.addEventListener("click", (ev) => {
    const target = ev.target;
    if (!(target instanceof Element)) return;
    const tok = target.closest("#" + ID.strip + " .tok.clickable");
    if (tok) { selectToken(Number(tok.dataset.k)); return; }
    const label = target.closest(".chip-label");
    if (label) { toggleChip(label.parentElement); return; }
    const cell = target.closest("#" + ID.strip + " .cell");
    if (cell) {
      const box = document.getElementById(ID.strip);
      document.querySelectorAll(".cell.cell-sel").forEach((e) => e.classList.remove("cell-sel"));
      cell.classList.add("cell-sel");
      setProps(ID.reverse, { data: { image: Number(box.dataset.image), key: Number(cell.dataset.k) } });
      return;
    }
    const card = target.closest(".card[data-image]");
    if (card) { cancelSelection(); setProps(ID.pick, { data: { image: Number(card.dataset.image), t: Date.now() } }); return; }
    const item = target.closest(".gallery-item[data-head]");
    if (item) { setProps(ID.mode, { value: "head" }); setProps(ID.head, { value: Number(item.dataset.head) }); }
  });

  function editing(node) {
    if (!node || node === document.body) return false;
    const tag = node.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || node.isContentEditable ||
      node.getAttribute("role") === "slider" || !!node.closest(".dash-dropdown, [role=combobox], [role=listbox]");
  }

  function moveToken(step) {
    const box = document.getElementById(ID.strip);
    if (!box) return;
    const tokens = Array.from(box.querySelectorAll(".tok.clickable"));
    if (!tokens.length) return;
    const current = box.querySelector(".tok.sel");
    let i = current ? tokens.indexOf(current) : (step > 0 ? -1 : tokens.length);
    i = Math.min(Math.max(i + step, 0), tokens.length - 1);
    selectToken(Number(tokens[i].dataset.k));
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      cancelSelection();
      setProps(ID.token, { data: null });
      setProps(ID.reverse, { data: null });
      return;
    }
    if (editing(document.activeElement) || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      ev.preventDefault();
      moveToken(ev.key === "ArrowRight" ? 1 : -1);
    }
  });

  // -- render-complete signal (tests and benchmarks time clicks with it) -------------------
  function hookFigure() {
    const gd = document.querySelector("#" + ID.figure + " .js-plotly-plot");
    if (!gd || gd.__attnHooked || typeof gd.on !== "function") return;
    gd.__attnHooked = true;
    gd.on("plotly_afterplot", () => {
      // only the real figure (with the image) counts, not dcc.Graph's empty first plot
      if (!gd.layout || !gd.layout.images || !gd.layout.images.length) return;
      const afterplot = performance.now();
      requestAnimationFrame(() => {
        window.__attnRenders = (window.__attnRenders || 0) + 1;
        const info = { n: window.__attnRenders, afterplot: afterplot, frame: performance.now() };
        window.__attnLastRender = info;
        const signal = document.getElementById(ID.signal);
        if (signal) { signal.dataset.count = String(info.n); signal.dataset.t = info.frame.toFixed(1); }
        document.dispatchEvent(new CustomEvent("attnstore:render", { detail: info }));
      });
    });
  }
  new MutationObserver(hookFigure).observe(document.documentElement, { childList: true, subtree: true });

  // -- clientside callbacks -------------------------------------------------------------------
  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.attnstore = {
      drawStrip: function (strip, token, rev) {
        const box = document.getElementById(ID.strip);
        if (!box || !strip) return noUpdate();
        const triggered = (window.dash_clientside.callback_context.triggered || []).map((t) => t.prop_id);
        if (String(strip.image) !== box.dataset.image || triggered.includes(ID.stripData + ".data") || !box.firstChild) {
          buildStrip(box, strip);
          delete box.dataset.token;
        }
        highlight(box, token, rev);
        return noUpdate();
      },
      viewChanged: function (viewState) {
        // keep the URL a permalink of the view, and tell the side panels once the view has settled
        if (!viewState) return noUpdate();
        const query = "?" + JSON.parse(viewState).permalink;
        if (window.location.search !== query) {
          window.history.replaceState(window.history.state, "", window.location.pathname + query + window.location.hash);
        }
        clearTimeout(window.__attnSettleTimer);
        window.__attnSettlePending = true;
        window.__attnSettleTimer = setTimeout(() => {
          window.__attnSettlePending = false;
          setProps(ID.settled, { data: viewState });
        }, SETTLE_MS);
        return noUpdate();
      },
      playStep: function (n, layer, max) {
        return ((Number(layer) || 0) + 1) % (Number(max) + 1);
      },
  };
})();
