"""Modality allocation (FastV): the selected token's attention mass per layer on prompt text, image,
generated and special tokens, next to the dataset's mean over the same kind of rows."""

from __future__ import annotations

import dash
import numpy as np

from attnstore.analysis.studies import token_allocation
from attnstore.analysis.studies.modality import KEY_GROUPS
from attnstore.schema import TokenKind
from explorer import figures, ids
from explorer.callbacks import follows_view, outputs
from explorer.layout import Page, side_panel
from explorer.state import StoreState
from explorer.views import ViewParams, plural

COLUMN = "side"
MEAN_IMAGES = 50  # the dataset mean reads every answer row of these images: a larger store uses its first ones


def layout(page: Page) -> list:
    tip = "attention mass on each token type, per layer (FastV)"
    return side_panel("Modality allocation", tip, info=ids.MODALITY_INFO, graphs=[ids.MODALITY_CHART])


def queries_of(state: StoreState, params: ViewParams) -> str:
    """The rows the token is compared with: answer tokens for an answer token, else the prompt's rows."""
    kinds = np.asarray(state.image(params.image).img["token_kind"].values)
    return "generated" if kinds[params.token] == int(TokenKind.GENERATED) else "prompt"


def allocation(state: StoreState, params: ViewParams) -> np.ndarray:
    """The token's attention mass on each token type  # [layer, kind] (raw weights, mean over heads)."""
    meta = state.image(params.image)
    weights = state.ds.attn.weights(params.image, meta.query_of(params.token))  # [layer, head, key]
    return token_allocation(weights.values, meta.img)


def dataset_mean(state: StoreState, queries: str) -> tuple[np.ndarray, int, int]:
    """`ds.attn.modality` mass averaged over images  # [layer, kind], the images used and the store's
    complete images; computed once per opened store (on the first view that needs it)."""

    def make():
        complete = np.flatnonzero(state.catalog()["complete"])
        used = complete[:MEAN_IMAGES]
        mass = state.ds.attn.modality(queries=queries, images=used)["mass"]  # [image, layer, kind]
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(mass.values, axis=0) if mass.sizes["image"] else np.full(mass.shape[1:], np.nan)
        return mean, int(used.size), int(complete.size)

    return state.cached("modality-mean", make, key=queries)


def describe_mean(queries: str, used: int, complete: int) -> str:
    rows = "answer tokens" if queries == "generated" else "prompt tokens"
    where = f"the first {plural(used, 'image')} of {complete}" if used < complete else plural(used, "image")
    return f"solid: this token · dotted: mean over the {rows} of {where}"


def warm(state: StoreState) -> None:
    """Both dataset means, made before a first view asks (`explorer.app.warm_panels`)."""
    for queries in ("generated", "prompt"):
        dataset_mean(state, queries)


def register(app: dash.Dash, state: StoreState) -> None:
    targets = outputs((ids.MODALITY_CHART, "figure"), (ids.MODALITY_INFO, "children"))

    @follows_view(app, targets, lambda reason: (figures.empty_figure(reason), reason))
    def modality_chart(params) -> tuple:
        token, queries = allocation(state, params), queries_of(state, params)
        mean, used, complete = dataset_mean(state, queries)
        chart = figures.modality_figure(token, mean, list(KEY_GROUPS), params.layer)
        return chart, describe_mean(queries, used, complete)
