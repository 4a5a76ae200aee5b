"""`attnstore extract` and `attnstore demo`."""

from pathlib import Path
from typing import Annotated

import typer

from attnstore.cli import app
from attnstore.cli.runs import BATCH_HELP, DEVICE_HELP, DTYPE_HELP, KERNEL_HELP, summarise_run
from attnstore.cli.serve import ALLOW_HOST_OPTION, allowed_hosts, check_port, serve_store
from attnstore.errors import AttnstoreError, InvalidArgument


@app.command()
def extract(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files.")] = None,
    image_dir: Annotated[
        Path | None, typer.Option("--image-dir", help="Folder of images (searched recursively).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most N images (0 = all).")] = 0,
    prompt: Annotated[str, typer.Option(help="User prompt asked with every image.")] = "Can you describe this image?",
    model: Annotated[
        str, typer.Option(help="Hub id (from the HF cache) or local folder.")
    ] = "HuggingFaceTB/SmolVLM-256M-Instruct",
    out: Annotated[str, typer.Option(help="Store path or fsspec URL (created or appended to).")] = "attention.zarr",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length budget (greedy).")] = 32,
    keep_bits: Annotated[
        int | None,
        typer.Option(
            help="fp16 mantissa bits kept, 0-10 (10 = lossless; default 10, or the store's own when appending)."
        ),
    ] = None,
    queries: Annotated[
        str,
        typer.Option(
            help="'text': prompt text + answer rows; 'text+image': those + the image patches' rows (where a "
            "patch looks); 'all': every row (full square)."
        ),
    ] = "text",
    codec: Annotated[
        str | None,
        typer.Option(help="Attention codec of a new store: auto (default: the smallest of the candidates measured on "
                     "the first image that keeps the read goals), or a name, e.g. blosc-zstd1-bitshuffle, zstd3, "
                     "codes3-blosc-zstd5-shuffle (see docs/storage-figures.md)."),
    ] = None,  # fmt: skip
    round_decimals: Annotated[
        int | None,
        typer.Option("--round", help="Round attention to this many decimals (absolute, as seed 004 stores it; 1-3)."),
    ] = None,
    map_error: Annotated[
        float | None,
        typer.Option(help="Map-faithful lossy mode: error at most this fraction of the maximum of every map drawn "
                     "from a row (e.g. 0.005); see docs/storage-figures.md."),
    ] = None,  # fmt: skip
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
    dtype: Annotated[str | None, typer.Option(help=DTYPE_HELP)] = None,
    attn_kernel: Annotated[str, typer.Option(help=KERNEL_HELP)] = "sdpa",
    batch_size: Annotated[int, typer.Option(help=BATCH_HELP)] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    workers: Annotated[
        int, typer.Option(help="Run on a local dask cluster of N worker processes (0 = in this process).")
    ] = 0,
    scheduler: Annotated[
        str | None, typer.Option(help="Run on an existing dask cluster (scheduler address, e.g. tcp://host:8786).")
    ] = None,
    storage_options: Annotated[
        str | None,
        typer.Option(help='fsspec options for a remote --out as JSON, e.g. \'{"endpoint_url": "http://..."}\'.'),
    ] = None,
    boxes: Annotated[
        Path | None,
        typer.Option(
            help="Object boxes to store with the images: COCO json, or json/jsonl of image name -> label, x, y, w, h "
            "(pixels)."
        ),
    ] = None,
) -> None:
    """Run a VLM over images and store every layer's and head's attention."""
    from attnstore.inputs.images import collect_images
    from attnstore.models import load_adapter
    from attnstore.models.hub import read_model_type
    from attnstore.quiet import quiet_transformers
    from attnstore.store.remote import parse_storage_options

    if keep_bits is not None and not 0 <= keep_bits <= 10:
        raise AttnstoreError(f"--keep-bits must be between 0 and 10, got {keep_bits}")
    if not prompt.strip():
        raise AttnstoreError("the prompt is empty: pass --prompt TEXT")
    from attnstore.extraction.pipeline import storage_settings

    storage = storage_settings(codec, round_decimals, map_error)  # a bad value fails before any model work
    paths = collect_images([str(p) for p in images or []], str(image_dir) if image_dir else None, limit)
    options = parse_storage_options(storage_options)
    boxes_by_name = None
    if boxes is not None:
        from attnstore.inputs.boxes import load_boxes

        boxes_by_name = load_boxes(boxes)  # a bad file fails before any model work
    if not (workers or scheduler):
        read_model_type(model)  # a missing model fails here, before transformers or torch are imported
    from attnstore.extraction.pipeline import ExtractSettings, WriteOptions, image_items, run_items

    items = image_items(paths, prompt, str(image_dir) if image_dir else None)
    if boxes_by_name is not None:
        from attnstore.inputs.boxes import boxes_for_items

        boxes_for_items(boxes_by_name, items)
    settings = ExtractSettings(max_new_tokens=max_new_tokens, queries=queries)
    # What to extract and how to store it: the same for a serial and a distributed run.
    write = WriteOptions(storage_options=options, keep_bits=keep_bits, storage=storage)
    run = dict(settings=settings, write=write, show_progress=progress)
    loading = dict(device=device, dtype=dtype, attn_kernel=attn_kernel)  # how the model is loaded
    if workers or scheduler:
        from attnstore.extraction.distributed import run_distributed

        report = run_distributed(model, items, out, workers=workers, scheduler=scheduler, **loading, **run)
    else:
        quiet_transformers()
        report = run_items(load_adapter(model, **loading), items, out, batch_size=batch_size, **run)
    summarise_run(report, out)


@app.command()
def demo(
    out: Annotated[str, typer.Option(help="Where to build the demo store.")] = "demo_store.zarr",
    serve: Annotated[bool, typer.Option(help="Serve the explorer on the demo store afterwards.")] = True,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 = this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the explorer.")] = 5001,
    random: Annotated[
        bool, typer.Option("--random", help="Use the random-weight tiny model on the sample images (geometry only).")
    ] = False,
    allow_host: ALLOW_HOST_OPTION = None,
    queries: Annotated[
        str, typer.Option(help="Rows kept, as extract's --queries ('text+image': where each image patch looks too).")
    ] = "text",
) -> None:
    """Build a demo store offline (the shipped demo model on synthetic scenes if this installation
    has it, else the tiny random-weight model), then explore it."""
    from attnstore.cli.inspect import print_info
    from attnstore.extraction.demo import RANDOM_WEIGHTS_NOTICE, build_demo_store, has_trained_model, trained_notice
    from attnstore.quiet import quiet_transformers
    from attnstore.records import QUERY_MODES

    if serve:  # before minutes of building: a wildcard host without --allow-host, or a busy port, fails at once
        allowed_hosts(host, tuple(allow_host or ()))
        check_port(host, port)
    if queries not in QUERY_MODES:  # before minutes of building
        raise InvalidArgument("queries", f"must be one of {', '.join(QUERY_MODES)}, not '{queries}'")
    quiet_transformers()
    model = "random" if random or not has_trained_model() else "trained"
    typer.secho(RANDOM_WEIGHTS_NOTICE if model == "random" else trained_notice(), fg="yellow")
    report = build_demo_store(out, model=model, queries=queries)
    summarise_run(report, out)
    print_info(out)
    if serve:
        serve_store(out, host=host, port=port, allow_hosts=tuple(allow_host or ()))
