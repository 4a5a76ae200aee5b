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

from attnstore.models.idefics3_layout import END_OF_UTTERANCE
from attnstore.models.tiny import make_tiny_idefics3
from attnstore.scenes import QUESTION_TYPES, make_scene, scene_questions, vocabulary_text

DIMS = dict(
    hidden=128, intermediate=384, layers=4, heads=4, kv_heads=2, vision_hidden=96, vision_layers=3, vision_heads=4
)
GEOMETRY = dict(longest_edge=128, tile=64, patch=8, scale_factor=2)
# (fraction of the run at which the stage starts, objects per scene, backgrounds)
CURRICULUM = [(0.0, (1, 1), "plain"), (0.15, (1, 2), None), (0.35, (1, 4), None)]
EVAL_OBJECTS = (1, 4)  # held-out scenes: the training distribution
BINDING_OBJECTS = (2, 4)  # and a held-out subset where a colour or shape must be bound to one of several objects
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
    scenes = [make_scene(rng, n_objects=objects, longest=GEOMETRY["longest_edge"], background=background)
              for _ in range(batch)]
    qsets = [scene_questions(s, rng, every_object=True)[:questions_per_image] for s in scenes]
    texts = [processor.apply_chat_template(conversation(qs)) for qs in qsets]
    inputs = processor(text=texts, images=[[s.image] for s in scenes], return_tensors="pt", padding=True)
    inputs["labels"] = answer_labels(inputs["input_ids"], processor, [[q.answer for q in qs] for qs in qsets])
    return inputs


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
            texts = [
                processor.apply_chat_template(conversation([q])[:1], add_generation_prompt=True) for _, q in chunk
            ]
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
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    corpus = vocabulary_text() + "\nUser: Assistant:\n" * 4
    dims = {**DIMS, **json.loads(args.dims)}
    curriculum = parse_curriculum(args.curriculum) if args.curriculum else CURRICULUM
    model, processor = make_tiny_idefics3(dims, GEOMETRY, seed=args.seed, corpus=corpus)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}  dims: {dims}  geometry: {GEOMETRY}", flush=True)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    pairs = held_out_set(args.seed, args.eval_size)
    binding = held_out_set(args.seed, args.eval_size, BINDING_OBJECTS, "_2to4")
    pairs.update({k: v for k, v in binding.items() if k.startswith(("color", "shape"))})
    columns = list(pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "curve.csv", "w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "minutes", "stage", "loss", *columns])
    deadline = time.time() + 60 * args.minutes
    started, step, best, smooth = time.time(), 0, -1.0, None
    total = args.steps or 10**9
    while step < total and time.time() < deadline:
        progress = step / total if args.steps else (time.time() - started) / (60 * args.minutes)
        stage, objects, background = stage_at(progress, curriculum)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, progress, args.lr, args.warmup)
        batch = training_batch(processor, rng, args.batch, objects, background, args.questions)
        loss = model(**batch).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        step += 1
        value = loss.item()
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        last = step == total or time.time() >= deadline
        if step % args.eval_every == 0 or last:
            scores = evaluate(model, processor, pairs)
            minutes = (time.time() - started) / 60
            writer.writerow([step, f"{minutes:.2f}", stage, f"{smooth:.4f}", *(f"{scores[k]:.3f}" for k in columns)])
            log.flush()
            shown = "  ".join(f"{k} {scores[k]:.2f}" for k in columns)
            print(f"step {step:5d}  {minutes:5.1f} min  stage {stage}  loss {smooth:.3f}  held-out: {shown}", flush=True)
            key = scores["color"] + scores["shape"]
            if key > best:
                best = key
                save(model, processor, out / "best", scores, step)
    log.close()
    return json.loads((out / "best" / "held_out_accuracy.json").read_text())


def save(model, processor, folder: Path, scores: dict, step: int) -> None:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "held_out_accuracy.json").write_text(json.dumps({"step": step, **scores}, indent=1))


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
    ap.add_argument("--curriculum", default="", help='stages "start:objects:background,...", e.g. "0:1-1:plain,0.3:1-4:any"')
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


if __name__ == "__main__":
    final = train(parse_args())
    print("best held-out accuracy:", "  ".join(f"{k} {v:.3f}" for k, v in final.items() if k != "step"))
