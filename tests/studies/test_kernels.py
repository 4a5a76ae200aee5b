"""The numpy kernels of the analyses against plain loops: components, spatial entropy, AUROC
(with ties and case weights), the elbow, Jensen-Shannon divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from studies.reference import auroc as ref_auroc
from studies.reference import components, jsd, spatial_entropy

from attnstore.analysis.studies.stats import (
    auroc,
    cluster_bootstrap_weights,
    elbow_index,
    jensen_shannon,
    label_components,
)
from attnstore.analysis.studies.stats import (
    spatial_entropy as fast_entropy,
)


@pytest.mark.parametrize("backend", ["numpy", "scipy"])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_components_and_entropy_match_breadth_first_search(connectivity, backend):
    if backend == "scipy":
        pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    masks = rng.random((6, 5, 9, 11)) < rng.uniform(0.2, 0.7, size=(6, 5, 1, 1))  # [map..., r, c]
    masks[0, 0] = False  # an empty map
    masks[0, 1] = True  # one blob
    snake = np.zeros((9, 11), bool)
    snake[::2] = True
    snake[1::4, -1] = snake[3::4, 0] = True  # one long winding component
    masks[0, 2] = snake
    labels = label_components(masks, connectivity)
    entropy, count = fast_entropy(masks, connectivity, backend)
    for idx in np.ndindex(masks.shape[:2]):
        sizes = components(masks[idx], connectivity)
        got = np.unique(labels[idx][labels[idx] > 0], return_counts=True)[1]
        assert sorted(got) == sorted(sizes) and count[idx] == len(sizes)
        ref = spatial_entropy(masks[idx], connectivity)
        assert (math.isnan(ref) and math.isnan(entropy[idx])) or entropy[idx] == pytest.approx(ref)
    assert count[0, 2] == 1 and entropy[0, 1] == 0
    weights = rng.random(masks.shape)
    weighted, _ = fast_entropy(masks, connectivity, backend, weights=weights)
    for idx in np.ndindex(masks.shape[:2]):
        ref = spatial_entropy(masks[idx], connectivity, weights[idx])
        assert (math.isnan(ref) and math.isnan(weighted[idx])) or weighted[idx] == pytest.approx(ref)


def test_auroc_matches_pairs_with_ties_and_weights_are_duplicates():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 5, size=(40, 6)).astype(float)  # many ties
    positive = rng.random(40) < 0.4
    got = auroc(values, positive)[0]
    for c in range(values.shape[1]):
        assert got[c] == pytest.approx(ref_auroc(list(values[:, c]), list(positive)))
    weights = rng.integers(0, 3, size=(3, 40)).astype(float)
    for b, w in enumerate(auroc(values, positive, weights)):
        rows = np.repeat(np.arange(40), weights[b].astype(int))
        for c in range(values.shape[1]):
            assert w[c] == pytest.approx(ref_auroc(list(values[rows, c]), list(positive[rows])))
    assert np.isnan(auroc(values, np.zeros(40, bool))).all()  # one class only


def test_cluster_bootstrap_resamples_whole_groups():
    groups = np.array([0, 0, 0, 5, 5, 9])
    w = cluster_bootstrap_weights(groups, 200, seed=2)
    assert w.shape == (200, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all()  # rows of one image move together
    assert (w[:, [0, 3, 5]].sum(1) == 3).all()  # three images drawn per replicate


def test_elbow():
    assert elbow_index(np.array([1.0, 0.1, 0.09, 0.08, 0.07, 0.0])) == 1
    assert elbow_index(np.array([1.0, 0.95, 0.9, 0.85, 0.1, 0.05, 0.0])) == 3  # concave top: the last high head
    assert elbow_index(np.ones(5)) == 4 and elbow_index(np.array([3.0, 1.0])) == 1


def test_jensen_shannon():
    rng = np.random.default_rng(3)
    p, q = rng.random((4, 7)), rng.random((4, 7))
    p[0, :3] = 0
    got = jensen_shannon(p, q)
    assert got == pytest.approx([jsd(list(a), list(b)) for a, b in zip(p, q)], abs=1e-6)  # float32
    assert jensen_shannon(p[:1], p[:1])[0] == pytest.approx(0, abs=1e-12)
    assert jensen_shannon(np.eye(2)[:1], np.eye(2)[1:])[0] == pytest.approx(1.0)
    assert np.isnan(jensen_shannon(np.zeros((1, 3)), q[:1, :3]))[0]
