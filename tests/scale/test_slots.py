"""Store pieces the distributed run relies on: slot planning, orphan reuse, extras, no-resize writes, O(1) open."""

import shutil

import pytest
import zarr

from attnstore.cli import main
from attnstore.errors import StoreError
from attnstore.extraction.extract import extract
from attnstore.extraction.pipeline import WorkItem, plan_run
from attnstore.extraction.synthetic import _gradient_image
from attnstore.schema import EXTRA_ATTR
from attnstore.store import AttnStore, CapacityError, StoreShape, open_dataset


@pytest.fixture
def store_copy(tmp_path, synthetic_store):
    path = str(tmp_path / "copy.zarr")
    shutil.copytree(synthetic_store, path)
    return path


def items(*names):
    return [WorkItem(n, f"/data/{n}", "Describe.") for n in names]


def test_plan_skips_complete_reuses_incomplete_and_orphans(store_copy):
    store = AttnStore.open(store_copy)
    store.group["complete"][1] = 0  # killed while writing image 1
    orphans = store.allocate(["", ""], ["", ""])  # killed after growing, before naming the slots
    plan = plan_run(store, items("synthetic_00000.png", "synthetic_00001.png", "new_a", "new_b", "new_c"))
    assert plan.done == ["synthetic_00000.png"]
    assert [it.name for it in plan.todo] == ["synthetic_00001.png", "new_a", "new_b", "new_c"]
    slots = plan.reserve(store, plan.todo)
    assert slots["synthetic_00001.png"] == 1  # same slot as before
    assert [slots["new_a"], slots["new_b"]] == orphans and slots["new_c"] == 5  # orphans first, then one new
    assert store.image_names()[3:] == ["new_a", "new_b", "new_c"]
    assert store.n_images == 6


def test_allocate_writes_every_name_at_once(tmp_path):
    store = AttnStore.create(str(tmp_path / "s.zarr"), StoreShape(1, 1, 4, 8), {"model_id": "m"})
    names = [f"dir/img_{i}.png" for i in range(25)]
    assert store.allocate(names, [f"/src/{n}" for n in names]) == list(range(25))
    ds = open_dataset(str(tmp_path / "s.zarr"))
    assert [str(n) for n in ds.image_name.values] == names
    assert str(ds.image_source.values[24]) == "/src/dir/img_24.png"
    assert not ds.complete.values.any()


def test_extras_are_added_written_before_complete_and_ignored_by_validate(store_copy, tiny_adapter, capsys):
    store = AttnStore.open(store_copy)
    spec = {"label": ("str", "ground truth"), "correct": ("int32", "1 if right")}
    store.ensure_extras(spec)
    store.ensure_extras(spec)  # idempotent
    assert store.extra_kinds() == {"label": "str", "correct": "int32"}
    index = store.allocate(["q1"], ["q1"])[0]
    result = extract(tiny_adapter, _gradient_image(400, 100), "Describe.", max_new_tokens=2)
    store.write_image(index, result, _gradient_image(400, 100), extra={"label": "yes", "correct": 1})
    ds = open_dataset(store_copy)
    assert ds.attrs[EXTRA_ATTR] == {"label": "str", "correct": "int32"}
    assert [str(v) for v in ds.label.values] == ["", "", "", "yes"]
    assert ds.correct.values.tolist() == [-1, -1, -1, 1] and ds.correct.dims == ("image",)
    assert main(["validate", store_copy]) == 0 and main(["info", store_copy]) == 0
    with pytest.raises(StoreError, match="unknown extra"):
        store.write_image(index, result, _gradient_image(400, 100), extra={"nope": 1})
    with pytest.raises(StoreError, match="of kind str"):
        store.ensure_extras({"label": ("int32", "")})
    with pytest.raises(StoreError, match="cannot add"):
        store.ensure_extras({"answer": ("str", "clashes with the schema")})


def test_no_resize_write_refuses_before_writing(tmp_path, tiny_adapter):
    path = str(tmp_path / "small.zarr")
    store = AttnStore.create(path, StoreShape(tiny_adapter.n_layers, tiny_adapter.n_heads, 4, 50), {"model_id": "m"})
    index = store.allocate(["a"], ["a"])[0]
    image = _gradient_image(400, 100)
    result = extract(tiny_adapter, image, "Describe.", max_new_tokens=2)
    before = {name: store.group[name].shape for name in store.group.array_keys()}
    with pytest.raises(CapacityError) as err:
        store.write_image(index, result, image, resize=False)
    assert err.value.needed == (result.n_query, result.n_key)
    assert {name: store.group[name].shape for name in store.group.array_keys()} == before
    assert int(store.group["complete"][0]) == 0 and store.group["n_key"][0] == 0  # nothing written


def count_reads(monkeypatch):
    calls = []
    original = zarr.storage.LocalStore.get

    async def get(self, key, *args, **kwargs):
        calls.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)
    return calls


def test_open_reads_the_same_objects_whatever_the_number_of_images(tmp_path, monkeypatch):
    def metadata_store(n):
        path = str(tmp_path / f"s{n}.zarr")
        AttnStore.create(path, StoreShape(2, 4, 16, 64), {"model_id": "synthetic"}).allocate(
            [f"i{k}" for k in range(n)], [""] * n
        )
        return path

    small, large = metadata_store(10), metadata_store(300)
    calls = count_reads(monkeypatch)
    open_dataset(small)
    n_small = len(calls)
    calls.clear()
    ds = open_dataset(large)
    assert ds.sizes["image"] == 300 and len(calls) == n_small  # metadata only: no per-image chunk is read
    assert all(c.endswith("zarr.json") or "/c/" in c for c in calls)
    assert sum("/c/" in c for c in calls) <= 3  # at most the tiny layer/head/box coordinates
