"""Crash safety of `attnstore extract` run as a real process: SIGKILL part-way then rerun gives the
uninterrupted result; Ctrl-C (SIGINT) stops cleanly after the current image, serial or distributed."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from attnstore.store import open_dataset
from attnstore.store.validation import check_image, row_sum_tolerance

pytestmark = pytest.mark.slow


def start(images, out, model, *more) -> subprocess.Popen:
    """`attnstore extract` in its own process group (like a shell job: Ctrl-C reaches every process)."""
    args = ["extract", "--image-dir", str(images), "--out", str(out), "--model", str(model)]
    args += ["--max-new-tokens", "3", "--no-progress", *more]
    code = "from attnstore.cli import run; run()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def wait_for_complete(proc: subprocess.Popen, out, n: int, timeout: float = 120) -> int:
    """Poll the store (as another reader would) until `n` images are complete; returns the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = int(np.asarray(zarr.open_group(str(out), mode="r")["complete"][:]).sum())
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
            done = 0
        if done >= n:
            return done
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before {n} images were complete: {proc.communicate()}")


def by_name(ds):
    return {str(n): i for i, n in enumerate(ds.image_name.values)}


def assert_entry_equal(ds, i, ref, j):
    for name in ("attention", "token_id", "token_text", "patch_box", "pixels", "answer", "n_query", "n_key"):
        np.testing.assert_array_equal(ds[name].values[i], ref[name].values[j], err_msg=name)


@pytest.fixture(scope="module")
def reference(serial_store):
    """The uninterrupted run, in this process."""
    return open_dataset(serial_store)


def test_sigkill_then_rerun_gives_the_uninterrupted_store(tmp_path, shared_images, tiny_model_path, reference):
    out = tmp_path / "s.zarr"
    proc = start(shared_images, out, tiny_model_path)
    wait_for_complete(proc, out, 2)
    time.sleep(0.3)  # somewhere inside the next image: model, attention write or metadata
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = open_dataset(str(out))
    complete = killed.complete.values.astype(bool)
    assert 2 <= complete.sum() < 4, "killed too late to test anything"
    ref_index = by_name(reference)
    tol = row_sum_tolerance(10)
    for i in np.flatnonzero(complete):  # whatever is marked complete is whole and right
        assert check_image(killed.isel(image=i), tol) == []
        assert_entry_equal(killed, i, reference, ref_index[str(killed.image_name.values[i])])

    rerun = start(shared_images, out, tiny_model_path)
    stdout, stderr = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr
    assert f"{int(complete.sum())} already complete" in stdout
    ds = open_dataset(str(out))
    names = [str(n) for n in ds.image_name.values]
    assert sorted(names) == sorted(ref_index) and len(set(names)) == 4  # each exactly once, none lost
    assert ds.complete.values.all() and ds.sizes["image"] == 4  # incomplete slots were reused
    for i, name in enumerate(names):
        assert_entry_equal(ds, i, reference, ref_index[name])


@pytest.mark.parametrize("workers", [0, 1], ids=["serial", "dask-worker"])
def test_ctrl_c_stops_after_the_current_images(tmp_path, shared_images, tiny_model_path, reference, workers):
    out = tmp_path / "s.zarr"
    proc = start(shared_images, out, tiny_model_path, "--workers", str(workers))
    wait_for_complete(proc, out, 1)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal Ctrl-C: every process of the job gets it
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "interrupted: rerun the same command" in stdout, stderr
    assert "Traceback" not in stderr
    ds = open_dataset(str(out))
    complete = ds.complete.values.astype(bool)
    written = int(stdout.split(": ")[1].split(" written")[0])
    assert 1 <= complete.sum() == written < 4
    ref_index = by_name(reference)
    for i in np.flatnonzero(complete):
        assert_entry_equal(ds, i, reference, ref_index[str(ds.image_name.values[i])])
    for i in np.flatnonzero(~complete):  # slots reserved up front (distributed) but never started
        assert (ds.token_id.values[i] == -1).all() and not ds.attention.values[i].any()


# -- a failed run changes nothing --------------------------------------------------------------


# One process runs the commands in turn (torch is imported once) and hashes the store's files after each.
CLI_SEQUENCE = """
import contextlib, hashlib, io, json, pathlib, sys
from attnstore.cli import main

def tree(folder):
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}

out, commands = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
for what, args in commands.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["extract", *args, "--out", str(out)])
    print(json.dumps({"what": what, "code": code, "stderr": err.getvalue(), "tree": tree(out)}), flush=True)
"""


def run_cli_sequence(out, commands: dict[str, list[str]]) -> list[dict]:
    """`attnstore extract ARGS --out OUT` for every command, in one subprocess; exit code, stderr and the
    sha256 of every file of OUT (None: no store) after each."""
    import json

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-c", CLI_SEQUENCE, str(out), json.dumps(commands)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, shared_images):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    (folder / "empty.jpg").write_bytes(b"")
    only_bad = folder / "only-bad"
    only_bad.mkdir()
    (only_bad / "broken.jpg").write_bytes(b"JFIF? no")
    return {"corrupt": folder / "corrupt.png", "empty": folder / "empty.jpg", "folder": only_bad}


def failing_commands(bad, good_image, model, other_model) -> dict[str, list[str]]:
    """Every bad input the README lists for `extract` (plus bad option values), as CLI arguments."""
    base = ["--model", str(model), "--max-new-tokens", "2", "--no-progress"]
    return {
        "corrupt image": [str(bad["corrupt"]), *base],
        "empty image file": [str(bad["empty"]), *base],
        "folder of bad images": ["--image-dir", str(bad["folder"]), *base],
        "missing file": [str(bad["corrupt"].with_name("nope.png")), *base],
        "empty prompt": [str(good_image), *base, "--prompt", "  "],
        "unknown model": [str(good_image), "--model", "nobody/no-such-model", "--no-progress"],
        "another model's store": [str(good_image), "--model", str(other_model), "--no-progress"],
        "keep-bits out of range": [str(good_image), *base, "--keep-bits", "12"],
        "unknown query mode": [str(good_image), *base, "--queries", "images"],
        "unknown device": [str(good_image), *base, "--device", "tpu"],
        "unknown dtype": [str(good_image), *base, "--dtype", "float8"],
        "unknown kernel": [str(good_image), *base, "--attn-kernel", "fast"],
        "batch size 0": [str(good_image), *base, "--batch-size", "0"],
    }


def test_failed_extract_leaves_the_store_byte_identical(tmp_path, shared_images, tiny_model_path, bad_inputs):
    from attnstore.extraction.demo import tiny_model_dir

    out = tmp_path / "existing.zarr"
    good, other = sorted(shared_images.glob("*.png"))[:2]
    commands = failing_commands(bad_inputs, other, tiny_model_path, tiny_model_dir("llava"))
    first = {"a good image": [str(good), "--model", str(tiny_model_path), "--max-new-tokens", "2", "--no-progress"]}
    results = run_cli_sequence(out, {**first, **commands})
    assert [r["what"] for r in results] == [*first, *commands]
    assert results[0]["code"] == 0 and results[0]["tree"]
    for result in results[1:]:
        assert result["code"] == 1, result
        assert "Traceback" not in result["stderr"] and result["stderr"].strip(), result  # said why, in a line
        assert result["tree"] == results[0]["tree"], f"{result['what']} changed the store"


def test_failed_extract_leaves_no_store_behind(tmp_path, shared_images, tiny_model_path, bad_inputs):
    from attnstore.extraction.demo import tiny_model_dir

    commands = failing_commands(
        bad_inputs, sorted(shared_images.glob("*.png"))[0], tiny_model_path, tiny_model_dir("llava")
    )
    commands.pop("another model's store")  # there is no store to disagree with
    for result in run_cli_sequence(tmp_path / "new.zarr", commands):
        assert result["code"] == 1, result
        assert result["tree"] is None, f"{result['what']} left a store behind"
