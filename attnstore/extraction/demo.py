"""The demo: by default the trained demo model (a tiny Idefics3 shipped with the package, trained
on synthetic scenes) answering one-word questions about held-out scenes, with the objects' boxes
in the store. `model="random"` runs the tiny random-weight model on the sample images instead
(geometry only: every output says it comes from random weights)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from attnstore.errors import InvalidArgument, ModelLoadError
from attnstore.inputs.images import DATA_DIR, sample_images
from attnstore.schema import TARGET_OBJECT

DEMO_PROMPT = "Can you describe this image?"
DEMO_MAX_NEW_TOKENS = 12
TINY_MODEL_VERSION = "1"  # bump when the builder changes, so caches are rebuilt
RANDOM_WEIGHTS_NOTICE = "RANDOM-WEIGHT DEMO MODEL: answers and attention are meaningless, geometry is real"
TRAINED_NOTICE = "DEMO MODEL: a toy Idefics3 trained on synthetic shapes ({accuracy}); see its MODEL_CARD.md"
DEMO_MODEL_DIR = DATA_DIR / "demo_model"
SHIPPED_MODEL_ID = "attnstore/data/demo_model"  # stores of the shipped model name it by its place in the package
DEMO_SCENES = 8
DEMO_LONGEST = 256  # scene size in pixels (the processor rescales it)
DEMO_ANSWER_TOKENS = 3  # one word and the end of the utterance
DEMO_SEED = 20261129  # held out: the training script never draws scenes from this seed
DEMO_KINDS = ("color", "shape")
DEMO_EXTRAS = {
    "question_type": ("str", "question template of the scene (scenes.QUESTION_TYPES)"),
    "expected_answer": ("str", "the correct one-word answer"),
    TARGET_OBJECT: ("int32", "object the question is about (index on the object axis; -1 = none)"),
}


def cache_dir() -> Path:
    """User cache folder (ATTNSTORE_CACHE overrides ~/.cache/attnstore)."""
    root = os.environ.get("ATTNSTORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "attnstore")
    return Path(root)


def tiny_model_dir(family: str = "idefics3") -> Path:
    """Path of the tiny random-weight model of `family`, built on first use."""
    from attnstore.models import tiny_builder

    path = cache_dir() / f"tiny-{family}-v{TINY_MODEL_VERSION}"
    if not (path / "config.json").is_file() or not (path / "processor_config.json").is_file():
        tmp = path.with_name(path.name + ".partial")
        tiny_builder(family)(tmp)
        tmp.rename(path) if not path.exists() else None
    return path


def trained_model_dir() -> Path:
    """The shipped demo model (a save_pretrained folder inside the package)."""
    if not has_trained_model():
        raise ModelLoadError(f"the trained demo model is not in this installation ({DEMO_MODEL_DIR})", param="model")
    return DEMO_MODEL_DIR


def trained_notice() -> str:
    """The demo's banner for the trained model, with its held-out accuracy (from its model folder)."""
    import json

    scores = json.loads((trained_model_dir() / "held_out_accuracy.json").read_text())
    shown = ", ".join(f"{k} {scores[k]:.0%}" for k in ("color", "shape", "color_2to4", "shape_2to4") if k in scores)
    return TRAINED_NOTICE.format(accuracy=f"held-out accuracy {shown}")


def write_demo_model(out: str | Path) -> Path:
    """Copy the trained demo model to `out` as a save_pretrained folder (model + processor)."""
    source, target = trained_model_dir(), Path(out)
    if target.exists() and any(target.iterdir()):
        raise InvalidArgument("out", f"'{target}' exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copy2(path, target / path.name)
    return target


def demo_scene_items(folder: Path, n_scenes: int = DEMO_SCENES, seed: int = DEMO_SEED) -> list:
    """Held-out scenes saved as PNGs in `folder`, each with one colour or shape question and its boxes."""
    import numpy as np

    from attnstore.extraction.pipeline import WorkItem
    from attnstore.inputs.scenes import make_scene, scene_questions

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n_scenes):
        scene = make_scene(rng, n_objects=(2, 4), longest=DEMO_LONGEST)
        question = scene_questions(scene, rng, kinds=(DEMO_KINDS[i % len(DEMO_KINDS)],))[0]
        path = folder / f"scene_{i:02d}.png"
        scene.image.save(path)
        w, h = scene.image.size
        objects = [(o.label, o.box[0] * w, o.box[1] * h, (o.box[2] - o.box[0]) * w, (o.box[3] - o.box[1]) * h)
                   for o in scene.objects]  # fmt: skip
        extra = {"question_type": question.kind, "expected_answer": question.answer, TARGET_OBJECT: question.target}
        items.append(WorkItem(path.stem, str(path), question.text, extra=extra, objects=objects))
    return items


def has_trained_model() -> bool:
    """Whether this installation ships the trained demo model."""
    return (DEMO_MODEL_DIR / "config.json").is_file()


def build_demo_store(out: str, show_progress: bool = True, model: str | None = None, queries: str = "text"):
    """Build the demo store at `out` (skips what is already there).

    Parameters
    ----------
    model : "trained" (the shipped demo model on held-out scenes, with object boxes), "random"
        (the tiny random-weight model on the sample images), or None: trained if shipped.
    queries : the rows kept (`attnstore.records.QUERY_MODES`).
    """
    model = model or ("trained" if has_trained_model() else "random")
    from attnstore.extraction.pipeline import run_extraction
    from attnstore.models import load_adapter

    if model == "random":
        adapter = load_adapter(str(tiny_model_dir()))
        return run_extraction(
            adapter,
            sample_images(),
            DEMO_PROMPT,
            out,
            max_new_tokens=DEMO_MAX_NEW_TOKENS,
            show_progress=show_progress,
            queries=queries,
        )
    if model != "trained":
        raise InvalidArgument("model", f"must be 'trained' or 'random', not '{model}'")
    return build_scene_store(out, trained_model_dir(), show_progress=show_progress, queries=queries)


def build_scene_store(
    out: str,
    model_dir: str | Path,
    n_scenes: int = DEMO_SCENES,
    seed: int = DEMO_SEED,
    show_progress: bool = True,
    queries: str = "text",
):
    """Extract held-out scenes (one colour or shape question each, object boxes, the target object
    and the expected answer as extra variables) with the model at `model_dir` into `out`;
    `queries="text+image"` keeps the image patches' rows too (explorer/screenshot.py's patch view)."""
    from attnstore.extraction.pipeline import ExtractSettings, WriteOptions, run_items
    from attnstore.models import load_adapter

    adapter = load_adapter(str(model_dir))
    if Path(model_dir).resolve() == DEMO_MODEL_DIR.resolve():  # the same name on every machine, not a local path
        adapter.model_id = SHIPPED_MODEL_ID
    items = demo_scene_items(cache_dir() / f"demo-scenes-{seed}-{n_scenes}", n_scenes, seed)
    return run_items(
        adapter,
        items,
        out,
        settings=ExtractSettings(max_new_tokens=DEMO_ANSWER_TOKENS, queries=queries),
        write=WriteOptions(extras=DEMO_EXTRAS),
        show_progress=show_progress,
    )


def random_twin(model_dir: str | Path, folder: str | Path) -> Path:
    """The model at `model_dir`'s architecture and processor with freshly initialised weights
    (seed 0), saved to `folder`: what attention looks like in a model that learned nothing."""
    import torch
    from transformers import AutoProcessor, Idefics3Config, Idefics3ForConditionalGeneration

    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(Idefics3Config.from_pretrained(model_dir))
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(model_dir).save_pretrained(folder)
    return Path(folder)


def scene_check(model_dir: str | Path, workdir: str | Path, n_scenes: int, seed: int) -> dict:
    """Answer and grounding figures of a model on held-out demo scenes (one colour or shape
    question each, as the demo asks): the share of right answers, and the best head's in-box lift
    (its mean share of the image attention inside the asked object's box over the box's mean area
    share; 1 = chance), with its layer and head. The lift is measured on the row that generated the
    first answer word (`@answer-step`: the prompt's last row, where a decoder chooses that word),
    and, for comparison, on the answer word's own row (`@answer`: it chooses what follows)."""
    import attnstore  # noqa: F401  (registers ds.attn)
    from attnstore.analysis.correctness import accuracy
    from attnstore.analysis.grounding import rank_heads, store_grounding
    from attnstore.analysis.tokens import ANSWER, ANSWER_STEP
    from attnstore.store import open_dataset

    path = Path(workdir) / f"scenes-{Path(model_dir).name}.zarr"
    build_scene_store(str(path), model_dir, n_scenes, seed, show_progress=False)
    ds = open_dataset(str(path))
    right, judged = accuracy(ds.attn.answer_correct().values)
    ranked = rank_heads(store_grounding(ds, token=ANSWER_STEP))
    answer_row = rank_heads(store_grounding(ds, token=ANSWER))
    return {
        "store": str(path),
        "right": right,
        "judged": judged,
        "accuracy": right / max(judged, 1),
        "best_lift": float(ranked["inbox_lift"][0]),
        "best_layer": int(ranked["layer"][0]),
        "best_head": int(ranked["head"][0]),
        "mean_lift": float(ranked["inbox_lift"].mean()),
        "answer_row_best_lift": float(answer_row["inbox_lift"][0]),
    }
