"""Distributed extraction: same store as a serial run, image for image; slot reuse; capacity retry; errors."""

import pickle
import shutil

import numpy as np
import pytest

import attnstore.extraction.distributed as distributed
from attnstore.cli import main
from attnstore.extraction.pipeline import ExtractSettings, image_items
from attnstore.extraction.pope import annotate
from attnstore.store import AttnStore, StoreShape, open_dataset

PROMPT = "Can you describe this image?"


FP16_ULP = 2.0**-10  # relative spacing of fp16 values


def assert_same_store(a, b) -> None:
    """Every variable equal, entry for entry (matched by name, whatever the slot order); attention
    within one fp16 step: worker processes run torch with another thread count than the serial run,
    which changes fp32 summation order, so a value can round to the neighbouring fp16."""
    x, y = (open_dataset(s) if isinstance(s, str) else s for s in (a, b))
    names_x, names_y = [str(n) for n in x.image_name.values], [str(n) for n in y.image_name.values]
    assert sorted(names_x) == sorted(names_y)
    y = y.isel(image=[names_y.index(n) for n in names_x])
    assert set(x.data_vars) == set(y.data_vars)
    for name in x.data_vars:
        if name == "attention":  # compare on the common (valid) extent: capacities may differ
            q, k = min(x.sizes["query"], y.sizes["query"]), min(x.sizes["key"], y.sizes["key"])
            got, want = x[name].values[..., :q, :k].astype(np.float32), y[name].values[..., :q, :k].astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=FP16_ULP, atol=2.0**-24)
        elif x[name].dims == y[name].dims and x[name].shape == y[name].shape:
            np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)


@pytest.fixture(scope="module")
def threaded_client():
    """An in-process cluster (threads): fast, and monkeypatches reach the 'workers'."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


@pytest.mark.slow
def test_two_worker_processes_match_serial_run(tmp_path, shared_images, tiny_model_path, serial_store, capsys):
    out = str(tmp_path / "dist.zarr")
    args = ["extract", "--image-dir", str(shared_images), "--model", str(tiny_model_path), "--out", out]
    args += ["--max-new-tokens", "3", "--no-progress", "--workers", "2"]
    assert main(args) == 0
    assert "4 written" in capsys.readouterr().out
    assert_same_store(serial_store, out)
    names = lambda path: [str(n) for n in open_dataset(path).image_name.values]  # noqa: E731
    assert names(out) == names(serial_store)  # same slots, too
    assert main(["validate", out]) == 0


def test_resume_reuses_slots_and_skips_bad_images(
    tmp_path, shared_images, tiny_model_path, serial_store, threaded_client
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")  # a serial run fails it too, without a slot
    out = str(tmp_path / "dist.zarr")
    shutil.copytree(serial_store, out)
    store = AttnStore.open(out)
    store.group["complete"][2] = 0  # as if killed while writing image 2
    store.allocate([""], [""])  # and an unnamed slot from a kill during allocation
    items = image_items([*sorted(shared_images.glob("*.png")), broken], PROMPT, str(shared_images))
    report = distributed.run_distributed(
        str(tiny_model_path),
        items,
        out,
        settings=ExtractSettings(max_new_tokens=3),
        client=threaded_client,
        show_progress=False,
    )
    assert report.written == ["img02.png"] and len(report.skipped) == 3
    assert list(report.failed) == ["broken.png"] and "cannot decode" in report.failed["broken.png"]
    ds = open_dataset(out)
    assert ds.sizes["image"] == 5 and int(ds.complete.values.sum()) == 4  # the orphan is left, nothing added
    assert_same_store(serial_store, ds.isel(image=slice(0, 4)))


def test_entry_too_big_is_resubmitted_after_the_coordinator_grows_the_store(
    tmp_path, shared_images, tiny_model_path, tiny_adapter, serial_store, threaded_client, monkeypatch
):
    small = StoreShape(tiny_adapter.n_layers, tiny_adapter.n_heads, query_capacity=8, key_capacity=100)
    monkeypatch.setattr(distributed, "store_plan", lambda *a: (small, {"model_id": "tiny"}))  # runs in-process
    grown, original = [], AttnStore.ensure_capacity

    def recording(self, n_query, n_key):
        grown.append((n_query, n_key))
        return original(self, n_query, n_key)

    monkeypatch.setattr(AttnStore, "ensure_capacity", recording)
    out = str(tmp_path / "dist.zarr")
    items = image_items(sorted(shared_images.glob("*.png")), PROMPT, str(shared_images))
    report = distributed.run_distributed(
        str(tiny_model_path), items, out, settings=ExtractSettings(max_new_tokens=3), client=threaded_client
    )
    assert sorted(report.written) == sorted(it.name for it in items) and not report.failed
    assert len(grown) == 1  # once, after the first round, for every entry that did not fit
    ds = open_dataset(out)
    assert ds.sizes["key"] >= int(ds.n_key.max()) > 100
    assert_same_store(serial_store, out)


def test_settings_and_results_cross_process_boundaries():
    settings = ExtractSettings(max_new_tokens=3, annotate=annotate)
    assert pickle.loads(pickle.dumps(settings)) == settings  # the POPE hook travels by reference
    result = distributed.TaskResult("a", "capacity", "too big", (3, 4))
    assert pickle.loads(pickle.dumps(result)) == result


def test_unreachable_scheduler_is_one_line(tmp_path, shared_images, capsys):
    import dask

    args = ["extract", "--image-dir", str(shared_images), "--out", str(tmp_path / "s.zarr"), "--no-progress"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*args, "--scheduler", "tcp://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the dask scheduler" in err and "Traceback" not in err
