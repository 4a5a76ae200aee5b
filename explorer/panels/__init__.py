"""The explorer's panels, one module each.

A panel module has:

    COLUMN                       where its components go: "top", "picker", "center", "controls",
                                 "side" or "hidden" (explorer.layout.COLUMNS)
    layout(page) -> list         its components for one visit (`explorer.layout.Page`: the store,
                                 the view, what the heatmap panel drew)
    register(app, state) -> None its callbacks, on the Dash app, for the store's `StoreState`
    warm(state) -> None          optional: store-level first-use work (e.g. a dataset mean), done by
                                 `attnstore serve` at start-up in the background (`explorer.app.warm_panels`)

`explorer.app.PANELS` lists them in page order; docs/adding-a-panel.md walks through a new one.
"""
