"""A writer killed while it grows the store (arrays resized one by one, metadata consolidated after):
readers see the images the store had, a rerun repairs it and finishes the run as if never killed."""

import numpy as np
import pytest
import zarr

from attnstore.errors import StoreError
from attnstore.extraction.pipeline import run_extraction
from attnstore.extraction.synthetic import _gradient_image
from attnstore.store import AttnStore, open_dataset

PROMPT = "Describe."


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception` handlers)."""


def kill_after_resizes(monkeypatch, n: int, axis_size: int) -> None:
    """The run dies before its (n+1)-th resize of an image axis to `axis_size`."""
    real = zarr.Array.resize
    done = []

    def resize(self, shape):
        if shape[0] == axis_size:
            if len(done) == n:
                raise Killed
            done.append(self.name)
        return real(self, shape)

    monkeypatch.setattr(zarr.Array, "resize", resize)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("half-images")
    paths = [folder / "a.png", folder / "b.png"]
    for i, path in enumerate(paths):
        _gradient_image(300 + 60 * i, 200, seed=i).save(path)
    return paths


@pytest.fixture(scope="module")
def uninterrupted(two_images, tiny_adapter, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    run_extraction(tiny_adapter, two_images, PROMPT, out, max_new_tokens=2, show_progress=False)
    return open_dataset(out)


# How far the killed run got growing the store for the second image: one array, most of them, all of
# them (the consolidated metadata not yet rewritten).
@pytest.mark.parametrize("resized", [1, 12, 10_000], ids=["one-array", "some-arrays", "all-arrays"])
def test_killed_while_growing_then_rerun(tmp_path, two_images, tiny_adapter, uninterrupted, monkeypatch, resized):
    out = str(tmp_path / "s.zarr")
    run_extraction(tiny_adapter, two_images[:1], PROMPT, out, max_new_tokens=2, show_progress=False)
    if resized == 10_000:  # every resize goes through, the run dies before consolidating
        monkeypatch.setattr(AttnStore, "consolidate", lambda self: (_ for _ in ()).throw(Killed()))
    else:
        kill_after_resizes(monkeypatch, resized, axis_size=2)
    with pytest.raises(Killed):
        run_extraction(tiny_adapter, two_images, PROMPT, out, max_new_tokens=2, show_progress=False)
    monkeypatch.undo()
    lengths = {arr.shape[0] for _, arr in zarr.open_group(out, mode="r", use_consolidated=False).arrays()
               if arr.metadata.dimension_names[0] == "image"}  # fmt: skip
    assert lengths in ({1, 2}, {2}), lengths  # the kill left what it should have

    killed = open_dataset(out)  # readers: the store as it was before the killed run grew it
    assert killed.sizes["image"] == 1 and killed.attention.shape[0] == 1
    assert str(killed.image_name.values[0]) == "a.png" and bool(killed.complete.values[0])
    np.testing.assert_array_equal(killed.attention.values[0], uninterrupted.attention.values[0])

    report = run_extraction(tiny_adapter, two_images, PROMPT, out, max_new_tokens=2, show_progress=False)
    assert report.written == ["b.png"] and report.skipped == ["a.png"]
    ds = open_dataset(out)
    assert ds.sizes["image"] == 2 and ds.complete.values.all()
    assert [str(n) for n in ds.image_name.values] == ["a.png", "b.png"]
    for name in ("attention", "token_id", "token_text", "patch_box", "pixels", "answer", "n_key"):
        np.testing.assert_array_equal(ds[name].values, uninterrupted[name].values, err_msg=name)
    store = AttnStore.open(out)
    assert store.n_images == 2 and not store.repair()  # nothing left to repair


@pytest.mark.filterwarnings("ignore:Failed to open Zarr store with consolidated:RuntimeWarning")
def test_disagreeing_arrays_without_consolidated_metadata_are_a_clear_error(tmp_path):
    import json

    from attnstore.extraction.synthetic import make_synthetic_store

    out = tmp_path / "s.zarr"
    make_synthetic_store(str(out), n_images=2)
    root = json.loads((out / "zarr.json").read_text())
    root.pop("consolidated_metadata")  # as if killed before the store was first consolidated
    (out / "zarr.json").write_text(json.dumps(root))
    zarr.open_group(str(out), mode="r+", use_consolidated=False)["answer"].resize((3,))
    with pytest.raises(StoreError, match="half-written .*'image'.* rerun"):
        open_dataset(str(out))


def test_extra_variable_left_by_a_killed_run_is_adopted_not_a_name_clash(tmp_path):
    from attnstore.extraction.synthetic import make_synthetic_store
    from attnstore.schema import EXTRA_ATTR

    out = str(tmp_path / "s.zarr")
    make_synthetic_store(out, n_images=2)
    store = AttnStore.open(out)
    # Killed between creating the array and recording it in the group's attributes:
    store.group.create_array("label", shape=(2,), chunks=(1,), dtype=str, fill_value="", dimension_names=("image",),
                             attributes={"long_name": "ground truth"})  # fmt: skip
    store.ensure_extras({"label": ("str", "ground truth")})
    assert AttnStore.open(out).extra_kinds() == {"label": "str"}
    assert open_dataset(out).attrs[EXTRA_ATTR] == {"label": "str"}
    with pytest.raises(StoreError, match="cannot add"):  # another run's variable of that name is not adopted
        store.ensure_extras({"prompt": ("str", "ground truth")})
