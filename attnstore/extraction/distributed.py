"""Distributed extraction on dask.distributed: many workers, one pre-sized store.

The coordinator (this process) plans the run exactly like the serial pipeline
(`pipeline.store_plan`, `pipeline.open_run`, `driver.RunDriver`): it opens
the store if there is one, skips complete entries, checks every image decodes, then
(only if something is left to write) creates or grows the store and reserves all slots
at once (names written, incomplete slots of a killed run reused). Workers load the
model once per process and write each entry into its own slot: every array of an
entry is its own chunk or shard, so no two writers touch the same object, and a
worker never resizes (an entry that does not fit comes back as "capacity"; the
coordinator grows the store once the other writers are done and resubmits it).
The coordinator records completion: it flags an entry complete once its worker
reports every array written, so `complete` has a single writer. At most one entry
per worker thread is in flight, so Ctrl-C stops cleanly after the current entries.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from attnstore.errors import AttnstoreError, InputImageError, InvalidArgument
from attnstore.extraction.driver import RunDriver, RunReport
from attnstore.extraction.pipeline import ExtractSettings, WorkItem, WriteOptions, extract_item, open_run, store_plan
from attnstore.inputs.images import load_image
from attnstore.models.base import ModelAdapter
from attnstore.store import AttnStore, CapacityError
from attnstore.store.journal import write_error_message, write_errors
from attnstore.store.lock import writer_lock

CHECK_BATCH = 64  # images decoded per pre-check task

# Per worker process: the loaded model, and a lock because one capture at a time runs through it.
_ADAPTERS: dict[WorkerConfig, ModelAdapter] = {}
_LOAD_LOCK = threading.Lock()
_RUN_LOCK = threading.Lock()


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker loads its model (sent with every task; the model itself is cached per process)."""

    model: str
    device: str = "cpu"  # "cuda" with several GPUs: each worker takes one (`worker_device`)
    torch_threads: int | None = None  # None: leave torch's setting alone
    dtype: str | None = None
    attn_kernel: str = "sdpa"


@dataclass
class TaskResult:
    name: str
    status: str  # "written" | "failed" | "capacity"
    message: str = ""
    needed: tuple[int, int] = (0, 0)  # (n_query, n_key) for "capacity"


def worker_adapter(config: WorkerConfig) -> ModelAdapter:
    """This process's adapter for `config`, loaded on first use."""
    from attnstore.models import load_adapter
    from attnstore.quiet import quiet_transformers

    with _LOAD_LOCK:
        if config.torch_threads:
            import torch

            torch.set_num_threads(config.torch_threads)
        if config not in _ADAPTERS:
            quiet_transformers()
            device = worker_device(config.device)
            _ADAPTERS[config] = load_adapter(
                config.model, device=device, dtype=config.dtype, attn_kernel=config.attn_kernel
            )
        return _ADAPTERS[config]


def worker_device(device: str) -> str:
    """The device this worker uses: plain "cuda" with several GPUs spreads workers over them
    (worker i of a LocalCluster takes GPU i mod count); any other device is used as given."""
    if device != "cuda":
        return device
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        return device
    from distributed import get_worker

    try:
        name = get_worker().name
    except ValueError:  # not in a worker (a test calling the task directly)
        return device
    index = name if isinstance(name, int) else sum(map(ord, str(name)))
    return f"cuda:{index % count}"


# -- tasks (run on workers) ---------------------------------------------------------------------
def plan_task(config: WorkerConfig, prompts: list[str], settings: ExtractSettings, keep_bits: int | None):
    """Store shape and attrs, computed where the model is (the coordinator never loads it)."""
    return store_plan(worker_adapter(config), prompts, settings, keep_bits)


def check_task(paths: list[str]) -> dict[str, str]:
    """Decode each image; returns {path: error} for those that fail."""
    errors = {}
    for path in paths:
        try:
            load_image(path)
        except InputImageError as err:
            errors[path] = str(err)
    return errors


def extract_task(
    config: WorkerConfig,
    out: str,
    storage_options: dict | None,
    index: int,
    item: WorkItem,
    settings: ExtractSettings,
) -> TaskResult:
    """Extract one entry into slot `index` of the store (never resizing it, never flagging it complete)."""
    adapter = worker_adapter(config)
    try:
        image = load_image(item.path)
        store = AttnStore.open(out, storage_options=storage_options)  # fresh handle: live metadata
        with _RUN_LOCK:
            extract_item(adapter, store, index, item, image, settings, resize=False, mark_complete=False)
    except CapacityError as err:
        return TaskResult(item.name, "capacity", str(err), err.needed)
    except AttnstoreError as err:
        return TaskResult(item.name, "failed", str(err))
    except OSError as err:  # disk full, read-only store: the entry stays incomplete, said in one line
        return TaskResult(item.name, "failed", write_error_message(out, err))
    return TaskResult(item.name, "written")


# -- coordinator ---------------------------------------------------------------------------------
def run_distributed(
    model: str,
    items: list[WorkItem],
    out: str,
    *,
    settings: ExtractSettings = ExtractSettings(),
    write: WriteOptions = WriteOptions(),
    device: str = "cpu",
    dtype: str | None = None,
    attn_kernel: str = "sdpa",
    workers: int = 2,
    scheduler: str | None = None,
    client=None,
    torch_threads: int | None = None,
    show_progress: bool = True,
) -> RunReport:
    """Extract `items` into the store at `out` on a dask cluster; same result as `pipeline.run_items`.

    Parameters
    ----------
    model : hub id or local folder; every worker loads it once.
    write : how the store is written (`pipeline.WriteOptions`), as in a serial run.
    items : entries to extract (`pipeline.image_items` for one prompt over many images).
    workers : size of the LocalCluster (processes, one thread each, torch threads = cores / workers),
        used when neither `scheduler` nor `client` is given.
    scheduler : address of an existing dask scheduler; its workers must see the image files, the
        model and the store (shared disk or s3://).
    client : an existing `distributed.Client` (tests, notebooks).
    torch_threads : torch threads per worker; default cores / workers on a LocalCluster, else unchanged.
    device, dtype, attn_kernel : how workers load the model (`ModelAdapter.load`); with device "cuda"
        and several GPUs each worker takes one.

    The store is created or grown only once entries are ready to be written (`driver.RunStore`).
    """
    # One writer per store: the coordinator holds the lock for its workers (only it creates, grows or flags).
    with writer_lock(out), dask_client(workers, scheduler, client) as (cluster, default_threads):
        config = WorkerConfig(model, device, torch_threads or default_threads, dtype, attn_kernel)
        shape, attrs = _warm_up(cluster, config, sorted({it.prompt for it in items}), settings, write.keep_bits)
        attrs = {**attrs, **(write.storage or {})}  # no first image here: the codec is forced or the default
        run_store, plan = open_run(out, items, shape, attrs, write)
        report = RunReport(skipped=plan.done)
        bad = _check_images(cluster, [it.path for it in plan.todo])
        report.failed.update({it.name: bad[it.path] for it in plan.todo if it.path in bad})
        todo = [it for it in plan.todo if it.path not in bad]
        if not todo:
            return report
        # Workers never resize: the store gets the planned capacity before they start.
        with run_store.writing() as store:  # all of the set-up, or (a write error) the store as before it
            run_store.fit(shape.query_capacity, shape.key_capacity)
            slots = plan.reserve(store, todo)
        with write_errors(out):
            options = write.storage_options
            _extract_all(cluster, config, store, out, options, todo, slots, settings, report, show_progress)
    return report


def _warm_up(client, config: WorkerConfig, prompts: list[str], settings: ExtractSettings, keep_bits: int | None):
    """Plan the store on every worker at once, so all of them load the model in parallel, now."""
    pins = [[address] for address in client.nthreads()] or [None]  # no worker yet: the first to join
    futures = [client.submit(plan_task, config, prompts, settings, keep_bits, workers=pin, pure=False) for pin in pins]
    return client.gather(futures)[0]


def _check_images(client, paths: list[str]) -> dict[str, str]:
    batches = [paths[i : i + CHECK_BATCH] for i in range(0, len(paths), CHECK_BATCH)]
    errors: dict[str, str] = {}
    for part in client.gather(client.map(check_task, batches, pure=False)):
        errors.update(part)
    return errors


def _extract_all(client, config, store, out, storage_options, todo, slots, settings, report, show_progress) -> None:
    width = max(1, sum(client.nthreads().values()))
    with RunDriver(f"extracting ({width} workers)", len(todo), show_progress) as driver:
        submit = lambda it: client.submit(  # noqa: E731
            extract_task, config, out, storage_options, slots[it.name], it, settings, pure=False
        )
        done = lambda result: _record(result, store, slots, report, driver)  # noqa: E731
        pending = list(todo)
        while pending:
            retry = _run_round(pending, submit, width, driver, done)
            if not retry or driver.stop_requested:
                break
            # Only now, with no writer running, grow the store; then redo those entries.
            store.ensure_capacity(max(r.needed[0] for r in retry), max(r.needed[1] for r in retry))
            names = {r.name for r in retry}
            pending = [it for it in todo if it.name in names]
        report.interrupted = driver.stop_requested and len(report.written) + len(report.failed) < len(todo)


def _run_round(items, submit, width, driver: RunDriver, done) -> list[TaskResult]:
    """Run `items` with at most `width` in flight, `done(result)` for each; returns those that did not fit."""
    from distributed import as_completed

    queue = deque(items)
    running = as_completed([submit(queue.popleft()) for _ in range(min(width, len(queue)))])
    retry = []
    for future in running:
        result: TaskResult = future.result()  # a bug in a worker re-raises here, like the serial run
        if result.status == "capacity":
            retry.append(result)
        else:
            done(result)
        if queue and not driver.stop_requested:
            running.add(submit(queue.popleft()))
    return retry


def _record(result: TaskResult, store: AttnStore, slots: dict[str, int], report: RunReport, driver: RunDriver) -> None:
    if result.status == "written":
        store.mark_complete(slots[result.name])  # every array of the entry is written: now it is complete
        report.written.append(result.name)
    else:
        report.failed[result.name] = result.message
    driver.advance()


@contextmanager
def dask_client(workers: int, scheduler: str | None = None, client=None) -> Iterator[tuple[object, int | None]]:
    """(client, torch threads per worker) for an existing client, a scheduler address, or a LocalCluster
    of `workers` processes (one thread each; torch threads = cores / workers)."""
    if client is not None:
        yield client, None
        return
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            connected = Client(scheduler)  # waits distributed.comm.timeouts.connect (dask config)
        except (OSError, TimeoutError) as err:
            raise AttnstoreError(f"cannot reach the dask scheduler at '{scheduler}': {err}") from err
        with connected:
            yield connected, None
        return
    if workers < 1:
        raise InvalidArgument("workers", f"must be at least 1, got {workers}")
    threads = max(1, (os.cpu_count() or 1) // workers)
    # dask spawns workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive mmap
    # threshold: every torch tensor > 128 KB is then mmap'ed and unmapped again; measured 2x slower
    # extraction (tiny model). Workers keep glibc's default instead.
    no_trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with _workers_ignore_sigint(), dask.config.set(no_trim):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",  # this machine only
            dashboard_address="127.0.0.1:0",  # any free port: never collides with another cluster
            silence_logs=logging.CRITICAL,  # worker errors re-raise on the coordinator
        )
    with cluster, Client(cluster) as local:
        yield local, threads


@contextmanager
def _workers_ignore_sigint():
    """Worker processes started in here inherit SIGINT = ignored: a terminal Ctrl-C reaches the
    whole process group, and only the coordinator should act on it (finish current entries, stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
