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

from attnstore.inputs.scenes import COLORS, QUESTION_TYPES, SHAPES, make_scene, scene_questions, vocabulary_text
from attnstore.models.idefics3_layout import END_OF_UTTERANCE, IMAGE_TOKEN, parse_idefics3_layout
from attnstore.models.tiny import make_tiny_idefics3

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
TOWER_PREFIXES = ("model.vision_model.", "model.connector.")  # what the vision stage trains


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


def token_objects(input_ids: torch.Tensor, processor, scenes) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Which object each image token shows, in the order the connector's outputs fill the
    `<image>` positions (batch row, then position).

    Returns (# [image token] int64 object index in its scene, -1 = background: the object covering
    most of the token's patch, if it covers at least a third of it; and per scene # [object, image
    token] bool: the object overlaps the token's patch at all).
    """
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    owners, touches = [], []
    for row, scene in enumerate(scenes):
        ids = input_ids[row].tolist()
        layout = parse_idefics3_layout(tok.convert_ids_to_tokens(ids), processor.image_seq_len)
        patches = layout.patch_box[np.asarray(ids) == image_id]  # [token, 4]
        boxes = scene.boxes()  # [object, 4]
        cover = patch_cover(patches, boxes)  # [object, token]
        owner = np.full(len(patches), -1)
        if len(boxes):
            best = cover.argmax(0)
            owner = np.where(cover.max(0) >= 1 / 3, best, -1)
        owners.append(owner)
        touches.append(cover > 0)
    return torch.from_numpy(np.concatenate(owners)), touches


def patch_cover(patches: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Share of each patch's area inside each box  # [object, token]; patches # [token, 4], boxes # [object, 4]."""
    lo = np.maximum(patches[None, :, :2], boxes[:, None, :2])  # [object, token, xy]
    hi = np.minimum(patches[None, :, 2:], boxes[:, None, 2:])
    inside = np.clip(hi - lo, 0, None).prod(-1)
    area = (patches[:, 2] - patches[:, 0]) * (patches[:, 3] - patches[:, 1])  # [token]
    return inside / np.maximum(area, 1e-9)


def patch_labels(input_ids: torch.Tensor, processor, scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and colour class of the object under each image token (last class: background).

    Returns two # [image token] int64 tensors, in the order the connector's outputs fill the
    `<image>` positions (batch row, then position).
    """
    owners, _ = token_objects(input_ids, processor, scenes)
    shapes, colors = [], []
    start = 0
    for row, scene in enumerate(scenes):
        n = int((input_ids[row] == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).sum())
        owner = owners[start : start + n].numpy()
        start += n
        shape_of = np.array([SHAPES.index(o.shape) for o in scene.objects] + [len(SHAPES)])
        color_of = np.array([list(COLORS).index(o.color) for o in scene.objects] + [len(COLORS)])
        shapes.append(shape_of[owner])  # -1 (background) picks the last entry
        colors.append(color_of[owner])
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


class VisionHeads(torch.nn.Module):
    """Training-only heads of the vision stage, on the connector's output (the language model's
    image-token inputs): per token, the shape and colour of the object it shows (or background);
    per object, its shape and colour from the max over the tokens it touches. Max pooling lets the
    few tokens that see a shape's outline decide (the mean of ~80 mostly-background tokens hides
    it); the per-token heads make every token of an object carry both of its attributes, which
    the language model's attention can then match a question word against."""

    def __init__(self, hidden: int):
        super().__init__()
        self.token_shape = torch.nn.Linear(hidden, len(SHAPES) + 1)
        self.token_color = torch.nn.Linear(hidden, len(COLORS) + 1)
        self.object_shape = torch.nn.Linear(hidden, len(SHAPES))
        self.object_color = torch.nn.Linear(hidden, len(COLORS))

    def forward(self, feats: torch.Tensor, owners: torch.Tensor, touches: list, scenes):
        """Losses and per-object predictions; feats # [image token, hidden] (all rows, in order)."""
        ce = torch.nn.functional.cross_entropy
        shape_of = torch.tensor([SHAPES.index(o.shape) for s in scenes for o in s.objects])
        color_of = torch.tensor([list(COLORS).index(o.color) for s in scenes for o in s.objects])
        offsets = np.cumsum([0] + [t.shape[1] for t in touches])
        first = np.cumsum([0] + [len(s.objects) for s in scenes])
        token_owner = owners + torch.from_numpy(np.repeat(first[:-1], np.diff(offsets)))  # index over all objects
        background = owners < 0
        token_shape = torch.where(background, len(SHAPES), shape_of[token_owner.clamp(min=0)] if len(shape_of) else 0)
        token_color = torch.where(background, len(COLORS), color_of[token_owner.clamp(min=0)] if len(color_of) else 0)
        pooled = torch.stack(
            [
                feats[offsets[r] : offsets[r + 1]][t[k]].max(0).values
                for r, t in enumerate(touches)
                for k in range(len(t))
            ]
        )  # [object, hidden]
        shape_logits, color_logits = self.object_shape(pooled), self.object_color(pooled)
        loss = (
            ce(self.token_shape(feats), token_shape)
            + ce(self.token_color(feats), token_color)
            + ce(shape_logits, shape_of)
            + ce(color_logits, color_of)
        )
        hits = (
            (shape_logits.argmax(-1) == shape_of).float().mean(),
            (color_logits.argmax(-1) == color_of).float().mean(),
        )
        return loss, hits


def vision_inputs(processor, scenes):
    """The processor's tensors for a bare image prompt (its expanded layout, no question)."""
    return processor(
        text=["<image>"] * len(scenes), images=[[s.image] for s in scenes], return_tensors="pt", padding=True
    )


def vision_stage(model, processor, args, rng, out: Path) -> None:
    """Train the vision tower + connector alone (no language model) with `VisionHeads` on scenes
    of 1-4 objects; log held-out per-object shape / colour accuracy on 2-4-object scenes."""
    vlm = model.model
    heads = VisionHeads(model.config.text_config.hidden_size)
    params = [*vlm.vision_model.parameters(), *vlm.connector.parameters(), *heads.parameters()]
    optim = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.01)
    held_rng = np.random.default_rng(20_000 + args.seed)
    held = [make_scene(held_rng, n_objects=BINDING_OBJECTS, longest=GEOMETRY["longest_edge"]) for _ in range(64)]

    def run(scenes):
        inputs = vision_inputs(processor, scenes)
        owners, touches = token_objects(inputs["input_ids"], processor, scenes)
        out_ = vlm.get_image_features(
            pixel_values=inputs["pixel_values"], pixel_attention_mask=inputs["pixel_attention_mask"]
        )
        feats = torch.cat(list(out_.pooler_output))  # [image token, hidden]
        return heads(feats, owners, touches, scenes)

    log = open(out / "vision_curve.csv", "w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "minutes", "cpu_minutes", "loss", "object_shape", "object_color"])
    started, cpu0, smooth = time.time(), time.process_time(), None
    for step in range(1, args.vision_steps + 1):
        for group in optim.param_groups:
            group["lr"] = lr_at(step, step / args.vision_steps, args.vision_lr, args.warmup)
        loss, _ = run([make_scene(rng, n_objects=(1, 4), longest=GEOMETRY["longest_edge"]) for _ in range(args.batch)])
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % args.eval_every == 0 or step == args.vision_steps:
            with torch.no_grad():
                _, (shape_hit, color_hit) = run(held)
            minutes, cpu = (time.time() - started) / 60, (time.process_time() - cpu0) / 60
            writer.writerow(
                [step, f"{minutes:.2f}", f"{cpu:.2f}", f"{smooth:.4f}", f"{shape_hit:.3f}", f"{color_hit:.3f}"]
            )
            log.flush()
            print(
                f"vision step {step:5d}  {minutes:5.1f} min ({cpu:.1f} CPU)  loss {smooth:.3f}  held-out objects: "
                f"shape {shape_hit:.2f} colour {color_hit:.2f}",
                flush=True,
            )
    log.close()
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith(TOWER_PREFIXES)}, out / "vision_stage.pt")


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


def held_out_pairs(seed: int, size: int) -> dict:
    """The held-out sets the run is judged on: every question type on scenes of 2-4 objects
    (suffix `_2to4`: colour and shape must be bound to the right one of several objects)."""
    return held_out_set(seed, size, BINDING_OBJECTS, "_2to4")


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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.vision_steps:
        GEOMETRY.update(json.loads(args.geometry))
        torch.set_num_threads(args.threads)
        model, processor = new_model(args)
        vision_stage(model, processor, args, np.random.default_rng([args.seed, 99]), out)
        args.tower = str(out / "vision_stage.pt")
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
    curriculum = parse_curriculum(args.curriculum) if args.curriculum else CURRICULUM
    model, processor = new_model(args)
    if args.tower:  # the vision stage's tower + connector
        model.load_state_dict(torch.load(args.tower), strict=False)
    if args.init:  # a saved model's every weight: a second run (its own schedule) on top of a first
        model.load_state_dict(type(model).from_pretrained(args.init).state_dict())
    model.train()
    lead = rank == 0
    if lead:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"parameters: {n_params:,}  geometry: {GEOMETRY}  processes: {world}",
            flush=True,
        )
    probe = PatchProbe(model)
    params = [*model.parameters(), *probe.parameters()]
    tower = [p for n, p in model.named_parameters() if n.startswith(TOWER_PREFIXES)]
    rest = [p for p in params if all(p is not t for t in tower)]
    groups = [{"params": rest, "scale": 1.0}, {"params": tower, "scale": args.tower_lr_scale}]
    optim = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    if lead:
        pairs = held_out_pairs(args.seed, args.eval_size)
        columns = list(pairs)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        log = open(out / "curve.csv", "w", newline="")
        writer = csv.writer(log)
        writer.writerow(["step", "minutes", "cpu_minutes", "stage", "loss", *columns])
    started, cpu0, step, best, smooth = time.time(), time.process_time(), 0, -1.0, None
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
            group["lr"] = group["scale"] * lr_at(step, progress, args.lr, args.warmup)
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
            cpu = (time.process_time() - cpu0) / 60 * world  # the ranks work in step: about equal shares
            writer.writerow(
                [step, f"{minutes:.2f}", f"{cpu:.2f}", stage, f"{smooth:.4f}", *(f"{scores[k]:.3f}" for k in columns)]
            )
            log.flush()
            shown = "  ".join(f"{k} {scores[k]:.2f}" for k in columns)
            print(
                f"step {step:5d}  {minutes:5.1f} min ({cpu:.1f} CPU)  stage {stage}  loss {smooth:.3f}  "
                f"held-out: {shown}",
                flush=True,
            )
            key = scores["color_2to4"] + scores["shape_2to4"]
            if key > best:
                best = key
                save(model, processor, out / "best", scores, step)
    if lead:
        log.close()
    if world > 1:
        # Tear down together: a rank that closes its connections while the other's transport thread
        # still uses them aborts the process ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


def new_model(args):
    """A freshly initialised demo model (seeded) and its processor; every answer word is one token."""
    corpus = vocabulary_text() + "\nUser: Assistant:\n" * 4
    dims = {**DIMS, **json.loads(args.dims)}
    return make_tiny_idefics3(dims, GEOMETRY, seed=args.seed, corpus=corpus)


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
    n_params = sum(p.numel() for p in model.parameters())
    (folder / "MODEL_CARD.md").write_text(model_card(n_params, {"step": step, **scores}))


QUESTION_NAMES = {
    "color_2to4": "colour of a named shape",
    "shape_2to4": "shape of a coloured object",
    "presence_2to4": "presence (yes / no)",
    "position_2to4": "position (left / right / top / bottom)",
}


def model_card(n_params: int, figures: dict) -> str:
    """What the model is, what it was trained on, and how well it does: held-out accuracy per
    question type, and with `--eval-only --update-card` the demo scenes' answers and grounding."""
    from attnstore.inputs.scenes import ASPECTS, BACKGROUNDS, COLORS, SHAPES, TEMPLATES

    table = "\n".join(f"| {name} | {figures[k]:.1%} |" for k, name in QUESTION_NAMES.items() if k in figures)
    templates = "\n".join(f"- {kind}: `{text}`" for kind, text in TEMPLATES.items())
    grounding = ""
    if "best_lift" in figures:
        layer, head = figures["best_head"]
        grounding = f"""
On {figures["scenes"]} held-out demo scenes of 2-4 objects (seed {figures["scene_seed"]}, one colour or
shape question each, as `attnstore demo` asks), {figures["scene_accuracy"]:.0%} of its answers are right,
and its best head (layer {layer}, head {head}) puts {figures["best_lift"]:.1f}x the chance share of its
image attention inside the asked object's box (chance: the box's share of the image), on the row
that generated the answer word (the prompt's last row, where a decoder chooses it; on the answer
word's own row, which chooses what follows it, the best head is at {figures.get("answer_row_best_lift", 0):.1f}x).
A twin with the same architecture and freshly initialised weights: best head
{figures["twin_best_lift"]:.2f}x, mean over heads {figures["twin_mean_lift"]:.2f}x.
"""
    return f"""# attnstore demo model (a toy)

A tiny Idefics3 (the SmolVLM architecture, processor, image splitting, chat template and special
tokens) with {n_params:,} parameters, trained from scratch on CPU by `scripts/train_demo_model.py`
(step {figures.get("step", "?")} of its language-model stage; recipe and curves in docs/demo-model.md).
It answers one-word questions about coloured shapes and knows nothing else: its purpose is to show
what attention looks like in a model that has learned to look, next to boxes of the objects it was
asked about.

- Scenes: 1-4 objects of distinct shapes ({", ".join(SHAPES)}) and distinct colours
  ({", ".join(COLORS)}), sides 18-32 % of the shorter image edge, on {", ".join(BACKGROUNDS)}
  greyish backgrounds; aspect ratios {", ".join(f"{a:.2f}" for a in ASPECTS)} (width / height).
- Image geometry: longest edge {GEOMETRY["longest_edge"]} px, {GEOMETRY["tile"]} px tiles plus the
  global view, patch {GEOMETRY["patch"]}, pixel-shuffle scale {GEOMETRY["scale_factor"]}.
- Questions (answers are one word: a colour, a shape, yes/no, left/right/top/bottom):
{templates}

## Held-out accuracy

Greedy first answer token over the whole vocabulary, single-question prompts, on scenes of 2-4
objects the training never saw (so a colour or shape must be bound to the right object; chance
about 1/3 for colour and shape, 1/2 for presence). Rerun: `python scripts/train_demo_model.py
--eval-only attnstore/data/demo_model --out eval`.

| question | accuracy |
|---|---|
{table}
{grounding}"""


def eval_only(args) -> dict:
    """Held-out figures of a saved model (e.g. the shipped one): accuracy per question type on
    scenes of 2-4 objects, and on the demo's held-out scenes its answers and best head's in-box
    lift beside a random-weight twin's. Prints a table, writes `eval.json` in --out."""
    import tempfile

    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    from attnstore.extraction.demo import random_twin, scene_check

    torch.set_num_threads(args.threads)
    folder = Path(args.eval_only)
    model = Idefics3ForConditionalGeneration.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    GEOMETRY.update(  # the saved model's geometry (held-out scenes, model card)
        longest_edge=processor.image_processor.size["longest_edge"],
        tile=processor.image_processor.max_image_size["longest_edge"],
        patch=model.config.vision_config.patch_size,
        scale_factor=model.config.scale_factor,
    )
    # Not the held-out set training chose its checkpoint on (that one is drawn with --seed).
    figures = {"model": str(folder), **evaluate(model, processor, held_out_pairs(args.eval_seed, args.eval_size))}
    with tempfile.TemporaryDirectory() as tmp:
        trained = scene_check(folder, tmp, args.scenes, args.scene_seed)
        twin = scene_check(random_twin(folder, Path(tmp) / "random-twin"), tmp, args.scenes, args.scene_seed)
    figures.update(
        scenes=args.scenes,
        scene_seed=args.scene_seed,
        scene_accuracy=trained["accuracy"],
        best_head=[trained["best_layer"], trained["best_head"]],
        best_lift=trained["best_lift"],
        answer_row_best_lift=trained["answer_row_best_lift"],
        twin_best_lift=twin["best_lift"],
        twin_mean_lift=twin["mean_lift"],
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(figures, indent=1))
    if args.update_card:  # the model folder's card and figures: what was measured here
        step = json.loads((folder / "held_out_accuracy.json").read_text()).get("step", "?")
        kept = {"step": step, **{k: v for k, v in figures.items() if k != "model"}}
        (folder / "held_out_accuracy.json").write_text(json.dumps(kept, indent=1))
        n_params = sum(p.numel() for p in model.parameters())
        (folder / "MODEL_CARD.md").write_text(model_card(n_params, kept))
    print(f"held-out questions on 2-4-object scenes ({args.eval_size} a type, seed {args.eval_seed}):")
    for kind in (k for k in figures if k.endswith("_2to4")):
        print(f"  {kind:16s} {figures[kind]:.3f}")
    print(
        f"demo scenes ({args.scenes}, seed {args.scene_seed}): answers right {trained['right']}/{trained['judged']}; "
        f"best head L{trained['best_layer']} H{trained['best_head']} in-box lift {trained['best_lift']:.2f}x "
        f"(the answer word's own row: {trained['answer_row_best_lift']:.2f}x); "
        f"random twin: best {twin['best_lift']:.2f}x, mean {twin['mean_lift']:.2f}x"
    )
    return figures


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-only", default="", metavar="MODEL_DIR", help="only evaluate this saved model (no training)")
    ap.add_argument("--update-card", action="store_true", help="--eval-only: write the figures into the model's card")
    ap.add_argument("--eval-seed", type=int, default=1000, help="--eval-only: seed of its held-out questions")
    ap.add_argument("--scenes", type=int, default=32, help="--eval-only: demo scenes for the answers and grounding")
    ap.add_argument("--scene-seed", type=int, default=77, help="--eval-only: their seed (held out from training)")
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
    ap.add_argument(
        "--vision-steps", type=int, default=0, help="steps of the vision-only stage before the language model"
    )
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument(
        "--init", default="", metavar="MODEL_DIR", help="start every weight from this saved model (a run's best/)"
    )
    ap.add_argument("--tower", default="", help="a vision stage's vision_stage.pt to start the tower + connector from")
    ap.add_argument(
        "--tower-lr-scale",
        type=float,
        default=1.0,
        help="the tower + connector's learning rate, times --lr (0: frozen)",
    )
    return ap.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.eval_only:
        eval_only(arguments)
        raise SystemExit(0)
    final = train(arguments)
    print("best held-out accuracy:", "  ".join(f"{k} {v:.3f}" for k, v in final.items() if k != "step"))
