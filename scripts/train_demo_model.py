"""Train the demo model: a tiny Idefics3 (real architecture, processor, image splitting and
SmolVLM chat template) learning one-word answers about synthetic scenes, from scratch on CPU.

    python scripts/train_demo_model.py --minutes 55 --out demo_model_run
    python scripts/train_demo_model.py --steps 3 --eval-size 8 --out /tmp/probe   # smoke run

Each sample is one scene and several questions about it in a multi-turn chat; the loss covers
only the answer words (and the end-of-utterance after them). A curriculum goes from one object
on a plain background to up to four objects on any background. Held-out accuracy per question
type (greedy first answer token over the whole vocabulary, single-question prompts as the demo
asks them) is printed and logged to a CSV; the best checkpoint by colour + shape accuracy is
saved with `save_pretrained` (model and processor).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from attnstore.models.idefics3_layout import END_OF_UTTERANCE, IMAGE_TOKEN, parse_idefics3_layout
from attnstore.models.tiny import make_tiny_idefics3
from attnstore.scenes import COLORS, QUESTION_TYPES, SHAPES, make_scene, scene_questions, vocabulary_text

DIMS = dict(
    hidden=128, intermediate=384, layers=4, heads=4, kv_heads=2, vision_hidden=96, vision_layers=3, vision_heads=4
)
GEOMETRY = dict(longest_edge=128, tile=64, patch=8, scale_factor=2)
# (fraction of the run at which the stage starts, objects per scene, backgrounds)
CURRICULUM = [(0.0, (1, 1), "plain"), (0.15, (1, 2), None), (0.35, (1, 4), None)]
EVAL_OBJECTS = (1, 4)  # held-out scenes: the training distribution
BINDING_OBJECTS = (2, 4)  # and a held-out subset where a colour or shape must be bound to one of several objects
SINGLE_OBJECT = (1, 1)  # and one of lone objects: can the model see shapes and places at all?
IGNORE = -100


def parse_curriculum(spec: str) -> list:
    """ "0:1-1:plain,0.3:1-2:any" -> [(0.0, (1, 1), "plain"), (0.3, (1, 2), None)]."""
    stages = []
    for part in spec.split(","):
        start, objects, background = part.split(":")
        low, high = (int(v) for v in objects.split("-"))
        stages.append((float(start), (low, high), None if background == "any" else background))
    return stages


def stage_at(progress: float, curriculum=CURRICULUM) -> tuple[int, tuple[int, int], str | None]:
    """(stage index, objects range, background) of the stage in force at `progress` in [0, 1]."""
    index = max(i for i, (start, _, _) in enumerate(curriculum) if progress >= start)
    return index, curriculum[index][1], curriculum[index][2]


def conversation(questions) -> list[dict]:
    """A multi-turn SmolVLM chat: the image with the first question, then one question a turn."""
    messages = []
    for i, q in enumerate(questions):
        content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": q.text}]
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": q.answer}]})
    return messages


def answer_labels(input_ids: torch.Tensor, processor, answers_per_row: list[list[str]]) -> torch.Tensor:
    """Labels that keep only each answer's token(s) and the end-of-utterance after it.

    The answer of turn k follows the k-th "Assistant:"; found from the token ids, not by offsets.
    """
    tok = processor.tokenizer
    eou = tok.convert_tokens_to_ids(END_OF_UTTERANCE)
    labels = torch.full_like(input_ids, IGNORE)
    for row, answers in enumerate(answers_per_row):
        ids = input_ids[row].tolist()
        start = 0
        for answer in answers:
            piece = tok(" " + answer, add_special_tokens=False)["input_ids"]
            pos = _find(ids, piece, start)
            labels[row, pos : pos + len(piece)] = input_ids[row, pos : pos + len(piece)]
            if pos + len(piece) < len(ids) and ids[pos + len(piece)] == eou:
                labels[row, pos + len(piece)] = eou
            start = pos + len(piece)
    return labels


def _find(ids: list[int], piece: list[int], start: int) -> int:
    for pos in range(start, len(ids) - len(piece) + 1):
        if ids[pos : pos + len(piece)] == piece:
            return pos
    raise ValueError("answer tokens not found in the conversation")


def training_batch(processor, rng, batch: int, objects, background, questions_per_image: int):
    scenes = [
        make_scene(rng, n_objects=objects, longest=GEOMETRY["longest_edge"], background=background)
        for _ in range(batch)
    ]
    qsets = [scene_questions(s, rng, every_object=True)[:questions_per_image] for s in scenes]
    texts = [processor.apply_chat_template(conversation(qs)) for qs in qsets]
    inputs = processor(text=texts, images=[[s.image] for s in scenes], return_tensors="pt", padding=True)
    inputs["labels"] = answer_labels(inputs["input_ids"], processor, [[q.answer for q in qs] for qs in qsets])
    return inputs, scenes


def patch_labels(input_ids: torch.Tensor, processor, scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and colour class of the object under each image token's centre (last class: background).

    Returns two # [image token] int64 tensors, in the order the connector's outputs fill the
    `<image>` positions (batch row, then position).
    """
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    shapes, colors = [], []
    for row, scene in enumerate(scenes):
        ids = input_ids[row].tolist()
        layout = parse_idefics3_layout(tok.convert_ids_to_tokens(ids), processor.image_seq_len)
        boxes = layout.patch_box[np.asarray(ids) == image_id]  # [token, 4]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        shape = np.full(len(boxes), len(SHAPES))
        color = np.full(len(boxes), len(COLORS))
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            inside = (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
            shape[inside], color[inside] = SHAPES.index(obj.shape), list(COLORS).index(obj.color)
        shapes.append(shape)
        colors.append(color)
    return torch.from_numpy(np.concatenate(shapes)), torch.from_numpy(np.concatenate(colors))


class PatchProbe(torch.nn.Module):
    """Auxiliary training-only heads: the object's shape and colour under each image token, read
    from the connector's output (the LM's image-token inputs). Dense labels from the scene boxes
    teach the vision tower shape features; the heads are not part of the saved model, and the
    language model's attention gets no supervision."""

    def __init__(self, model):
        super().__init__()
        hidden = model.config.text_config.hidden_size
        self.shape = torch.nn.Linear(hidden, len(SHAPES) + 1)
        self.color = torch.nn.Linear(hidden, len(COLORS) + 1)
        self.captured: list[torch.Tensor] = []
        model.model.connector.register_forward_hook(lambda _m, _i, out: self.captured.append(out))

    def loss(self, shape_labels: torch.Tensor, color_labels: torch.Tensor) -> torch.Tensor:
        feats = self.captured.pop().reshape(-1, self.shape.in_features)  # [image token, hidden]
        self.captured.clear()
        ce = torch.nn.functional.cross_entropy
        return ce(self.shape(feats), shape_labels) + ce(self.color(feats), color_labels)


def held_out_set(seed: int, size: int, objects=EVAL_OBJECTS, suffix: str = ""):
    """(scene, question) pairs of each type, from a generator the training never uses."""
    rng = np.random.default_rng(10_000 + seed + len(suffix))
    pairs = {kind + suffix: [] for kind in QUESTION_TYPES}
    while min(len(v) for v in pairs.values()) < size:
        scene = make_scene(rng, n_objects=objects, longest=GEOMETRY["longest_edge"])
        for q in scene_questions(scene, rng):
            if len(pairs[q.kind + suffix]) < size:
                pairs[q.kind + suffix].append((scene, q))
    return pairs


@torch.no_grad()
def evaluate(model, processor, pairs, batch: int = 32) -> dict[str, float]:
    """Share of held-out questions whose greedy first answer token is the answer's first token."""
    model.eval()
    tok = processor.tokenizer
    tok.padding_side = "left"  # the last position is the one that predicts the answer
    scores = {}
    for kind, items in pairs.items():
        hits = 0
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            texts = [processor.apply_chat_template(conversation([q])[:1], add_generation_prompt=True) for _, q in chunk]
            inputs = processor(text=texts, images=[[s.image] for s, _ in chunk], return_tensors="pt", padding=True)
            logits = model(**inputs).logits[:, -1]  # [batch, vocab]
            want = torch.tensor([tok(" " + q.answer, add_special_tokens=False)["input_ids"][0] for _, q in chunk])
            hits += int((logits.argmax(-1) == want).sum())
        scores[kind] = hits / len(items)
    tok.padding_side = "right"
    model.train()
    return scores


def lr_at(step: int, progress: float, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a cosine over the run's progress (to 5 % of peak)."""
    ramp = min(1.0, (step + 1) / warmup)
    return peak * ramp * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(args) -> dict:
    """Train in this process, or in `args.procs` single-thread processes that average gradients
    (on a busy shared machine, separate processes keep their share without thread barriers)."""
    if args.procs > 1:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as sock:  # a free loopback port for the process group
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(_train_rank, args=(args, port), nprocs=args.procs, join=True)
    else:
        _train_rank(0, args, None)
    return json.loads((Path(args.out) / "best" / "held_out_accuracy.json").read_text())


def _train_rank(rank: int, args, port: int | None) -> None:
    import torch.distributed as dist

    world = args.procs
    GEOMETRY.update(json.loads(args.geometry))  # this process's geometry (scenes, processor, model card)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # every rank starts from the same weights
    rng = np.random.default_rng([args.seed, rank])  # and draws its own scenes
    corpus = vocabulary_text() + "\nUser: Assistant:\n" * 4
    dims = {**DIMS, **json.loads(args.dims)}
    curriculum = parse_curriculum(args.curriculum) if args.curriculum else CURRICULUM
    model, processor = make_tiny_idefics3(dims, GEOMETRY, seed=args.seed, corpus=corpus)
    model.train()
    lead = rank == 0
    if lead:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"parameters: {n_params:,}  dims: {dims}  geometry: {GEOMETRY}  processes: {world}", flush=True)
    probe = PatchProbe(model)
    params = [*model.parameters(), *probe.parameters()]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    if lead:
        pairs = held_out_set(args.seed, args.eval_size)
        binding = held_out_set(args.seed, args.eval_size, BINDING_OBJECTS, "_2to4")
        pairs.update({k: v for k, v in binding.items() if k.startswith(("color", "shape"))})
        single = held_out_set(args.seed, args.eval_size, SINGLE_OBJECT, "_1")  # tells vision from binding
        pairs.update({k: v for k, v in single.items() if k.startswith(("shape", "position"))})
        columns = list(pairs)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        log = open(out / "curve.csv", "w", newline="")
        writer = csv.writer(log)
        writer.writerow(["step", "minutes", "stage", "loss", *columns])
    started, step, best, smooth = time.time(), 0, -1.0, None
    total = args.steps or 10**9
    while True:
        # The lead's clock decides progress and the end for every rank.
        progress = step / total if args.steps else (time.time() - started) / (60 * args.minutes)
        state = torch.tensor([progress, float(step >= total or progress >= 1.0)])
        if world > 1:
            dist.broadcast(state, src=0)
        progress, done = float(state[0]), bool(state[1])
        if done:
            break
        stage, objects, background = stage_at(progress, curriculum)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, progress, args.lr, args.warmup)
        batch, scenes = training_batch(processor, rng, args.batch // world, objects, background, args.questions)
        probe.captured.clear()
        lm_loss = model(**batch).loss
        loss = lm_loss
        if args.aux_weight > 0:
            loss = loss + args.aux_weight * probe.loss(*patch_labels(batch["input_ids"], processor, scenes))
        optim.zero_grad(set_to_none=False)
        loss.backward()
        if world > 1:
            _average_gradients(params, world)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        step += 1
        value = lm_loss.item()
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        last = step == total or (not args.steps and time.time() - started >= 60 * args.minutes)
        if lead and (step % args.eval_every == 0 or last):
            scores = evaluate(model, processor, pairs)
            minutes = (time.time() - started) / 60
            writer.writerow([step, f"{minutes:.2f}", stage, f"{smooth:.4f}", *(f"{scores[k]:.3f}" for k in columns)])
            log.flush()
            shown = "  ".join(f"{k} {scores[k]:.2f}" for k in columns)
            print(
                f"step {step:5d}  {minutes:5.1f} min  stage {stage}  loss {smooth:.3f}  held-out: {shown}", flush=True
            )
            key = scores["color"] + scores["shape"]
            if key > best:
                best = key
                save(model, processor, out / "best", scores, step)
    if lead:
        log.close()
    if world > 1:
        dist.destroy_process_group()


def _average_gradients(params, world: int) -> None:
    """One all-reduce of every gradient, flattened (the ranks' batches make one batch)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


def save(model, processor, folder: Path, scores: dict, step: int) -> None:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "held_out_accuracy.json").write_text(json.dumps({"step": step, **scores}, indent=1))
    (folder / "MODEL_CARD.md").write_text(model_card(model, scores, step))


def model_card(model, scores: dict, step: int) -> str:
    """What the model is, what it was trained on, and how well it does (held-out accuracy)."""
    from attnstore.scenes import ASPECTS, BACKGROUNDS, COLORS, SHAPES, TEMPLATES

    n_params = sum(p.numel() for p in model.parameters())
    table = "\n".join(f"| {k} | {v:.1%} |" for k, v in scores.items())
    templates = "\n".join(f"- {kind}: `{text}`" for kind, text in TEMPLATES.items())
    return f"""# attnstore demo model (a toy)

A tiny Idefics3 (the SmolVLM architecture, processor, image splitting, chat template and special
tokens) with {n_params:,} parameters, trained from scratch on CPU for {step} steps on synthetic
scenes by `scripts/train_demo_model.py`. It answers one-word questions about coloured shapes and
knows nothing else: its purpose is to show what attention looks like in a model that has learned
to look, next to boxes of the objects it was asked about.

- Scenes: 1-4 objects of distinct shapes ({", ".join(SHAPES)}) and distinct colours
  ({", ".join(COLORS)}), sides 18-32 % of the shorter image edge, on {", ".join(BACKGROUNDS)}
  greyish backgrounds; aspect ratios {", ".join(f"{a:.2f}" for a in ASPECTS)} (width / height).
- Image geometry: longest edge {GEOMETRY["longest_edge"]} px, {GEOMETRY["tile"]} px tiles plus the
  global view, patch {GEOMETRY["patch"]}, pixel-shuffle scale {GEOMETRY["scale_factor"]}.
- Questions (answers are one word: a colour, a shape, yes/no, left/right/top/bottom):
{templates}

## Held-out accuracy (greedy first answer token, single-question prompts, step {step})

Suffix `_2to4`: scenes of 2-4 objects, where the attribute must be bound to the right object.

| question type | accuracy |
|---|---|
{table}
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="run folder: curve.csv and best/ (save_pretrained)")
    ap.add_argument("--minutes", type=float, default=55.0, help="wall-time budget")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--questions", type=int, default=4, help="questions per image (turns of one chat)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-size", type=int, default=200, help="held-out questions per type")
    ap.add_argument("--dims", default="{}", help="JSON overrides of the model sizes")
    ap.add_argument("--geometry", default="{}", help='JSON overrides of the image geometry, e.g. {"patch": 4}')
    ap.add_argument(
        "--curriculum", default="", help='stages "start:objects:background,...", e.g. "0:1-1:plain,0.3:1-4:any"'
    )
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the patch shape/colour probe loss")
    # One thread a process: on a shared, oversubscribed machine two threads measured ~7x slower per step.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--procs", type=int, default=2, help="processes sharing each batch (gradients averaged)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


if __name__ == "__main__":
    final = train(parse_args())
    print("best held-out accuracy:", "  ".join(f"{k} {v:.3f}" for k, v in final.items() if k != "step"))
