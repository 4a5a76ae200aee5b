"""Each analysis against plain loops on small stores: padding (images of different sizes), an image
without answer tokens, one without image tokens, one head."""

from __future__ import annotations

import math

import numpy as np
import pytest
from studies.reference import (
    GROUPS,
    auroc,
    generated_rows,
    image_arrays,
    image_keys,
    jsd,
    last_prompt_row,
    spatial_entropy,
)

from attnstore.analysis.studies import (
    attention_sinks,
    compare_stores,
    localisation_heads,
    modality_allocation,
    token_allocation,
    visual_attention_ratio,
)
from attnstore.errors import InvalidArgument
from attnstore.store import open_dataset


@pytest.fixture(params=["edge_store", "one_head_store"])
def ds(request):
    return open_dataset(request.getfixturevalue(request.param))


def test_modality_allocation_equals_loops(ds):
    result = modality_allocation(ds, batch_size=3)  # several batches
    assert list(result["image"].values) == list(range(ds.sizes["image"]))
    for i in range(ds.sizes["image"]):
        a = image_arrays(ds, i)
        rows = generated_rows(a)
        assert int(result["n_queries"][i]) == len(rows)
        for g, kinds in enumerate(GROUPS.values()):
            keys = [k for k, kind in enumerate(a["kind"]) if kind in kinds]
            assert int(result["count"][i, g]) == len(keys)
            for layer in range(ds.sizes["layer"]):
                got = float(result["mass"][i, layer, g])
                if not rows:  # an image without answer tokens has nothing to allocate
                    assert math.isnan(got)
                    continue
                cells = [a["att"][layer, h, r, keys].sum() for h in range(ds.sizes["head"]) for r in rows]
                assert got == pytest.approx(np.mean(cells), abs=2e-6)
                eff = float(result["efficiency"][i, layer, g])
                assert math.isnan(eff) if not keys else eff == pytest.approx(np.mean(cells) / len(keys), abs=1e-6)
    has_rows = result["n_queries"] > 0
    np.testing.assert_allclose(result["mass"].sum("kind").values[has_rows.values], 1.0, atol=2e-3)  # fp16 rows
    no_image = [i for i in range(ds.sizes["image"]) if not image_keys(image_arrays(ds, i))]
    assert no_image and all(float(result["mass"].sel(kind="image")[i].max()) == 0 for i in no_image if has_rows[i])


def test_one_tokens_allocation_is_what_the_dataset_table_averages(ds):
    result = modality_allocation(ds, images=[0])
    img = ds.attn.image(0)
    rows = [r for r, p in enumerate(img["query_position"].values) if img["token_kind"].values[p] == 5]
    each = np.stack([token_allocation(ds.attn.weights(0, r).values, img) for r in rows])  # [row, layer, kind]
    np.testing.assert_allclose(each.mean(0), result["mass"].values[0], atol=1e-6)


def test_visual_ratio_equals_loops_and_ranks_by_auroc(ds):
    result = visual_attention_ratio(ds, label="pope_correct", bootstrap=50)
    n_layers, n_heads = ds.sizes["layer"], ds.sizes["head"]
    expected, per_image = [], {}
    for i in range(ds.sizes["image"]):
        a = image_arrays(ds, i)
        keys = image_keys(a)
        for r in generated_rows(a):
            cell = [[a["att"][lay, h, r, keys].sum() for h in range(n_heads)] for lay in range(n_layers)]
            expected.append((i, int(a["qpos"][r]), cell))
            per_image.setdefault(i, []).append(cell)
    assert [int(v) for v in result["image"].values] == [e[0] for e in expected]  # image 1 has no rows
    assert 1 not in result["image"].values
    assert [int(v) for v in result["position"].values] == [e[1] for e in expected]
    np.testing.assert_allclose(result["ratio"].values, np.array([e[2] for e in expected]), atol=2e-6)
    correct = ds["pope_correct"].values
    images = sorted(per_image)
    for lay in range(n_layers):
        for h in range(n_heads):
            scores = [float(np.mean([c[lay][h] for c in per_image[i]])) for i in images]
            ref = auroc(scores, [bool(correct[i] == 1) for i in images])
            assert float(result["auroc"][lay, h]) == pytest.approx(ref, abs=1e-6)
            assert result["auroc_low"][lay, h] <= result["auroc_high"][lay, h]
    effect = np.abs(result["auroc"].values - 0.5).reshape(-1)
    rank = result["head_rank"].values.reshape(-1)
    assert sorted(rank) == list(range(1, effect.size + 1))
    assert np.all(np.diff(effect[np.argsort(rank)]) <= 1e-7)  # rank 1 separates best
    assert result.attrs["positive"] == "pope_correct == 1" and result.attrs["unit"] == "image"


def test_visual_ratio_word_labels_are_per_token(ds):
    result = visual_attention_ratio(ds, label="auto", words=["dog", "Ġbeach"], bootstrap=0)
    assert "auroc" in result  # auto picks pope_correct here: the store is a POPE run
    words = visual_attention_ratio(ds, label="words", words=["Man", "Ġred"], bootstrap=0)
    tokens = [t.strip("Ġ").lower() for t in words["token"].values]
    assert list(words["row_label"].values) == [int(t in ("man", "red")) for t in tokens]
    assert 0 < words["row_label"].values.sum() < len(tokens)
    values = words["ratio"].values[:, 0, 0]
    assert float(words["auroc"][0, 0]) == pytest.approx(auroc(list(values), [t in ("man", "red") for t in tokens]))
    assert np.isnan(words["auroc_low"].values).all()  # bootstrap=0: no interval
    assert "auroc" not in visual_attention_ratio(ds, label=None)


def test_localisation_equals_loops(ds):
    result = localisation_heads(ds, connectivity=8, all_heads=True)
    n_layers, n_heads = ds.sizes["layer"], ds.sizes["head"]
    for pos, i in enumerate(result["image"].values):
        a = image_arrays(ds, int(i))
        r = last_prompt_row(a)
        keys = image_keys(a)
        tiles = [k for k in keys if a["kind"][k] == 2]
        for lay in range(n_layers):
            for h in range(n_heads):
                w = a["att"][lay, h, r]
                assert float(result["image_sum"][pos, lay, h]) == pytest.approx(w[keys].sum(), abs=2e-6)
                grid = np.full(a["grid"], np.nan)
                for k in tiles:
                    grid[a["row"][k], a["col"][k]] = w[k]
                cells = grid[np.isfinite(grid)]
                mask = np.isfinite(grid) & (grid > (cells.mean() if cells.size else 0))
                got = float(result["spatial_entropy"][pos, lay, h])
                ref = spatial_entropy(mask, 8)
                assert (math.isnan(got) and math.isnan(ref)) or got == pytest.approx(ref, abs=1e-5)
    no_image = [p for p, i in enumerate(result["image"].values) if not image_keys(image_arrays(ds, int(i)))]
    assert no_image and np.isnan(result["spatial_entropy"].values[no_image]).all()
    assert (result["image_sum"].values[no_image] == 0).all()
    mean = result["image_sum"].values.mean(0)
    above = result["above_elbow"].values
    assert above.any() and mean[above].min() >= mean[~above].max(initial=-1)  # the elbow cuts the sorted curve
    assert result["frequency"].values[~above].max(initial=0) == 0
    # As the paper: criterion 2 only for the heads above the elbow; the same with nothing cached (read again).
    for default in (localisation_heads(ds), localisation_heads(ds, cache_mb=0, batch_size=2)):
        np.testing.assert_array_equal(default["above_elbow"].values, above)
        ent, full = default["spatial_entropy"].values, result["spatial_entropy"].values
        assert np.isnan(ent[:, ~above]).all()
        np.testing.assert_array_equal(ent[:, above], full[:, above])
        np.testing.assert_array_equal(default["frequency"].values, result["frequency"].values)


@pytest.mark.parametrize("threshold,weight,connectivity", [(0.5, "size", 4), ("2mean", "mass", 8)])
def test_localisation_threshold_variants(ds, threshold, weight, connectivity):
    result = localisation_heads(ds, threshold=threshold, weight=weight, connectivity=connectivity, all_heads=True)
    for pos, i in enumerate(result["image"].values[:3]):
        a = image_arrays(ds, int(i))
        if not image_keys(a):
            continue
        for lay, h in [(0, 0), (ds.sizes["layer"] - 1, ds.sizes["head"] - 1)]:
            w = a["att"][lay, h, last_prompt_row(a)]
            grid = np.full(a["grid"], np.nan)
            for k in image_keys(a):
                if a["kind"][k] == 2:
                    grid[a["row"][k], a["col"][k]] = w[k]
            if threshold == "2mean":  # the authors' released code: relu(map - 2 mean), components weighted by it
                excess = np.maximum(np.nan_to_num(grid) - 2 * np.nanmean(grid), 0)
                ref = spatial_entropy(excess > 0, connectivity, excess)
            else:
                ref = spatial_entropy(np.nan_to_num(grid) >= threshold * np.nanmax(grid), connectivity)
            assert float(result["spatial_entropy"][pos, lay, h]) == pytest.approx(ref, abs=1e-5)


def test_sinks_equal_loops(ds):
    factor = 3.0
    result = attention_sinks(ds, factor=factor)
    n_layers, n_heads = ds.sizes["layer"], ds.sizes["head"]
    for i in range(ds.sizes["image"]):
        a = image_arrays(ds, i)
        rows = generated_rows(a)
        if not rows:
            assert np.isnan(result["first_mass"].values[i]).all() and result["sink_positions"].values[i] == ""
            continue
        keys = image_keys(a)
        flagged_any = set()
        for lay in range(n_layers):
            cells = [a["att"][lay, h, r] for h in range(n_heads) for r in rows]
            mean = np.mean(cells, axis=0)
            assert float(result["first_mass"][i, lay]) == pytest.approx(mean[0], abs=2e-6)
            assert int(result["top_position"][i, lay]) == int(np.argmax(mean))
            heads = [np.mean([a["att"][lay, h, r] for r in rows], axis=0) for h in range(n_heads)]
            typical = [sorted(hd[k] for hd in heads)[n_heads // 2] for k in range(len(mean))]
            baseline = np.median([typical[k] for k in keys]) if keys else 0
            flagged = [k for k in keys if typical[k] > factor * max(baseline, 1e-12)]
            flagged_any |= set(flagged)
            assert int(result["n_sinks"][i, lay]) == len(flagged)
            assert float(result["sink_mass"][i, lay]) == pytest.approx(sum(mean[k] for k in flagged), abs=2e-6)
        assert result["sink_positions"].values[i] == " ".join(str(k) for k in sorted(flagged_any))


def test_compare_equals_loops(edge_store, other_store):
    a_ds, b_ds = open_dataset(edge_store), open_dataset(other_store)
    result = compare_stores(a_ds, other_store, jsd_per_head=True, batch_size=2)
    per_layer = compare_stores(a_ds, b_ds)
    assert result.attrs["shared_images"] == 5
    expected, expected_layer = [], []
    for i in range(5):
        a, b = image_arrays(a_ds, i), image_arrays(b_ds, i)
        row_b = {int(p): r for r, p in enumerate(b["qpos"])}
        ka, kb = image_keys(a), image_keys(b)
        for r in generated_rows(a):
            p = int(a["qpos"][r])
            if p not in row_b or p >= len(b["text"]) or a["text"][p] != b["text"][p]:
                continue
            rb = row_b[p]
            for lay in range(a_ds.sizes["layer"]):
                mean_a = sum(a["att"][lay, h, r][ka] for h in range(a_ds.sizes["head"])) / a_ds.sizes["head"]
                mean_b = sum(b["att"][lay, h, rb][kb] for h in range(a_ds.sizes["head"])) / a_ds.sizes["head"]
                expected_layer.append(jsd(list(mean_a), list(mean_b)) if len(ka) == len(kb) else math.nan)
                for h in range(a_ds.sizes["head"]):
                    wa, wb = a["att"][lay, h, r], b["att"][lay, h, rb]
                    d = jsd(list(wa[ka]), list(wb[kb])) if len(ka) == len(kb) else math.nan
                    expected.append((i, p, lay, h, wa[ka].sum(), wb[kb].sum(), d))
    got = [
        (int(result["image"][r]), int(result["position"][r]), lay, h, float(result["share_a"][r, lay, h]),
         float(result["share_b"][r, lay, h]), float(result["jsd"][r, lay, h]))
        for r in range(result.sizes["row"]) for lay in range(result.sizes["layer"]) for h in range(result.sizes["head"])
    ]  # fmt: skip
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    assert np.isfinite([e[6] for e in expected]).sum() > 100  # real comparisons, not only NaN
    np.testing.assert_allclose([g[4:] for g in got], [e[4:] for e in expected], atol=2e-5)
    np.testing.assert_allclose(per_layer["jsd"].values.reshape(-1), expected_layer, atol=2e-5)
    assert per_layer["jsd"].dims == ("row", "layer")
    assert np.isnan([g[6] for g in got if g[0] == 2]).all()  # no image keys: no distribution to compare
    assert 4 not in result["image"].values or np.isnan(result["jsd"].values[result["image"].values == 4]).all()
    same = compare_stores(a_ds, a_ds)
    assert np.abs(same["share_diff"].values).max() == 0
    assert np.nanmax(same["jsd"].values) == pytest.approx(0.0, abs=1e-6)


def test_compare_needs_the_same_layers_and_heads(edge_store, one_head_store):
    with pytest.raises(InvalidArgument) as err:
        compare_stores(open_dataset(edge_store), one_head_store)
    assert err.value.param == "other"


@pytest.mark.parametrize(
    "call,param",
    [
        (lambda ds: modality_allocation(ds, queries="nope"), "queries"),
        (lambda ds: visual_attention_ratio(ds, label="nope"), "label"),
        (lambda ds: visual_attention_ratio(ds, label="pope_label", unit="row"), "unit"),
        (lambda ds: visual_attention_ratio(ds, label="words"), "words"),
        (lambda ds: localisation_heads(ds, threshold=1.5), "threshold"),
        (lambda ds: localisation_heads(ds, connectivity=6), "connectivity"),
        (lambda ds: localisation_heads(ds, weight="area"), "weight"),
        (lambda ds: attention_sinks(ds, factor=0), "factor"),
        (lambda ds: attention_sinks(ds, images=[99]), "images"),
    ],
)
def test_bad_options_name_their_parameter(edge_store, call, param):
    with pytest.raises(InvalidArgument) as err:
        call(open_dataset(edge_store))
    assert err.value.param == param


def test_compare_scans_once_with_prefetch_and_b_batches_loaded_once(edge_store, other_store, monkeypatch):
    """Every batch in one scan (A's next batch preloads while one computes; it once ran a scan per
    batch), B's small variables loaded once per batch, and the same answer at any batch size."""
    from attnstore.analysis.studies import compare

    scans, loads = [], []
    real_scan, real_preload = compare.scan_batches, compare.preload

    def counting_scan(*args, **kwargs):
        scans.append(args[2])
        return real_scan(*args, **kwargs)

    def counting_preload(ds, images, names):
        loads.append(list(images))
        return real_preload(ds, images, names)

    monkeypatch.setattr(compare, "scan_batches", counting_scan)
    monkeypatch.setattr(compare, "preload", counting_preload)
    a_ds = open_dataset(edge_store)
    small = compare_stores(a_ds, other_store, batch_size=2)
    assert len(scans) == 1 and len(loads) == 3  # 5 shared images: 3 batches of B
    whole = compare_stores(a_ds, other_store, batch_size=32)
    for name in ("share_a", "share_b", "jsd", "image", "position"):
        np.testing.assert_array_equal(small[name].values, whole[name].values)
