"""Grounding metrics against plain loop references on hand-made layouts (tiles + a global view)."""

from __future__ import annotations

import numpy as np
import pytest

from attnstore.analysis.grounding import (
    box_area,
    grounding_scores,
    inbox_share,
    patch_overlap,
    pointing_hit,
    rank_heads,
    view_keys,
)
from attnstore.errors import InvalidArgument
from attnstore.geometry import global_view, tile_views, view_boxes
from attnstore.schema import TokenKind


def layout(rows: int, cols: int, side: int = 2, n_text: int = 3):
    """patch_box [key, 4] and token_kind [key] of: text, R x C tiles of side x side patches, global."""
    boxes = [np.full((n_text, 4), np.nan, np.float32)]
    kinds = [np.full(n_text, int(TokenKind.PROMPT_TEXT))]
    for view in [*tile_views(rows, cols, side, side), global_view(side, side)]:
        boxes.append(view_boxes(view))
        kinds.append(np.full(view.n_patches, int(view.kind)))
    boxes.append(np.full((2, 4), np.nan, np.float32))  # trailing answer tokens
    kinds.append(np.full(2, int(TokenKind.GENERATED)))
    return np.concatenate(boxes), np.concatenate(kinds).astype(np.int8)


def batch(n_images=3, n_layers=2, n_heads=3, seed=0):
    """Several images of different grids padded to one key length, random rows, random boxes."""
    rng = np.random.default_rng(seed)
    grids = [(1, 2), (2, 3), (3, 4)][:n_images]
    parts = [layout(r, c) for r, c in grids]
    n_key = max(len(k) for _, k in parts)
    patch_box = np.full((n_images, n_key, 4), np.nan, np.float32)
    kinds = np.zeros((n_images, n_key), np.int8)
    for i, (pb, k) in enumerate(parts):
        patch_box[i, : len(k)], kinds[i, : len(k)] = pb, k
    weights = rng.random((n_images, n_layers, n_heads, n_key)).astype(np.float32) ** 4
    weights *= (kinds != int(TokenKind.PAD))[:, None, None, :]  # padding keys carry no weight
    # Boxes that straddle tile edges: centred on the image centre / a third, odd sizes.
    box = np.array([[0.31, 0.12, 0.74, 0.58], [0.2, 0.4, 0.55, 0.95], [0.05, 0.3, 0.52, 0.71]], np.float32)[:n_images]
    return weights, patch_box, kinds, box


def ref_overlap(patch_box, box):
    out = np.zeros(patch_box.shape[:2], np.float32)
    for i in range(patch_box.shape[0]):
        for k in range(patch_box.shape[1]):
            px0, py0, px1, py1 = patch_box[i, k]
            if np.isnan(px0):
                continue
            bx0, by0, bx1, by1 = box[i]
            w = max(0.0, min(px1, bx1) - max(px0, bx0))
            h = max(0.0, min(py1, by1) - max(py0, by0))
            area = (px1 - px0) * (py1 - py0)
            out[i, k] = w * h / area if area > 0 else 0.0
    return out


def ref_share_and_hit(weights, patch_box, keys, box):
    n_img, n_layer, n_head, n_key = weights.shape
    overlap = ref_overlap(patch_box, box)
    share = np.zeros((n_img, n_layer, n_head))
    hit = np.zeros((n_img, n_layer, n_head), bool)
    for i in range(n_img):
        for layer in range(n_layer):
            for head in range(n_head):
                total, inside, best, best_k = 0.0, 0.0, -1.0, -1
                for k in range(n_key):
                    if not keys[i, k]:
                        continue
                    w = float(weights[i, layer, head, k])
                    total += w
                    inside += w * overlap[i, k]
                    if w > best:
                        best, best_k = w, k
                share[i, layer, head] = inside / total
                cx = (patch_box[i, best_k, 0] + patch_box[i, best_k, 2]) / 2
                cy = (patch_box[i, best_k, 1] + patch_box[i, best_k, 3]) / 2
                x0, y0, x1, y1 = box[i]
                hit[i, layer, head] = x0 <= cx <= x1 and y0 <= cy <= y1
    return share, hit


@pytest.mark.parametrize("view", ["all", "tiles", "global"])
def test_metrics_match_loop_reference(view):
    weights, patch_box, kinds, box = batch()
    keys = view_keys(kinds, view)
    np.testing.assert_allclose(patch_overlap(patch_box, box), ref_overlap(patch_box, box), atol=1e-6)
    share, hit = ref_share_and_hit(weights, patch_box, keys, box)
    np.testing.assert_allclose(inbox_share(weights, patch_overlap(patch_box, box), keys), share, rtol=1e-5)
    np.testing.assert_array_equal(pointing_hit(weights, patch_box, keys, box), hit)
    scores = grounding_scores(weights, patch_box, kinds, box, keys=view)
    chance = np.array([(b[2] - b[0]) * (b[3] - b[1]) for b in box])
    np.testing.assert_allclose(scores["chance"].values, chance, rtol=1e-6)
    np.testing.assert_allclose(scores["inbox_lift"].values, share / chance[:, None, None], rtol=1e-5)
    np.testing.assert_allclose(scores["pointing_lift"].values, hit / chance[:, None, None], rtol=1e-5)


@pytest.mark.parametrize("view", ["all", "tiles", "global"])
def test_uniform_attention_is_at_chance(view):
    """A uniform row over the patches of views that tile the image puts the box's area inside it,
    whichever tiles the box straddles."""
    weights, patch_box, kinds, box = batch()
    keys = view_keys(kinds, view)
    uniform = np.broadcast_to(keys[:, None, None, :], weights.shape).astype(np.float32)
    share = inbox_share(uniform, patch_overlap(patch_box, box), keys)
    np.testing.assert_allclose(share, np.broadcast_to(box_area(box)[:, None, None], share.shape), rtol=1e-5)


def test_a_head_looking_at_the_box_scores_high_and_ranks_first():
    weights, patch_box, kinds, box = batch()
    keys = view_keys(kinds, "all")
    overlap = patch_overlap(patch_box, box)  # [image, key]
    # Layer 1, head 2 looks at the patches mostly inside the box (their centres are inside).
    weights[:, 1, 2] = np.where(overlap > 0.5, overlap, 0.001)
    scores = grounding_scores(weights, patch_box, kinds, box)
    assert scores["inbox_share"].values[:, 1, 2].min() > 0.5
    assert scores["pointing"].values[:, 1, 2].all()
    ranked = rank_heads(scores)
    assert (int(ranked["layer"][0]), int(ranked["head"][0])) == (1, 2)
    assert float(ranked["inbox_lift"][0]) > 2.5
    assert int(ranked["rank"][0]) == 1  # ranks count from 1, as the CLI's table prints them
    assert keys.sum() > 0


def test_text_keys_never_count():
    """Weight on text tokens (no patch box) changes neither metric."""
    weights, patch_box, kinds, box = batch()
    before = grounding_scores(weights, patch_box, kinds, box)
    text = ~view_keys(kinds, "all")
    weights[np.broadcast_to(text[:, None, None, :], weights.shape)] = 50.0
    after = grounding_scores(weights, patch_box, kinds, box)
    np.testing.assert_allclose(after["inbox_share"].values, before["inbox_share"].values, rtol=1e-5)
    np.testing.assert_array_equal(after["pointing"].values, before["pointing"].values)


def test_bad_view_and_score_names_are_clear_errors():
    weights, patch_box, kinds, box = batch()
    with pytest.raises(InvalidArgument, match="keys"):
        grounding_scores(weights, patch_box, kinds, box, keys="tile")
    with pytest.raises(InvalidArgument, match="by"):
        rank_heads(grounding_scores(weights, patch_box, kinds, box), by="share")
