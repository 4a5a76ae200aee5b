"""Synthetic scenes with known object boxes, and one-word questions about them.

A scene holds 1-4 objects (distinct shapes and distinct colours, so every object is
named unambiguously by its shape or its colour) over a plain, gradient or noisy
background. Boxes are normalised (x0, y0, x1, y1) on the image. numpy + pillow only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (40, 70, 230),
    "yellow": (240, 210, 20),
    "purple": (150, 40, 190),
}
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = ("left", "right", "top", "bottom")
QUESTION_TYPES = ("color", "shape", "presence", "position")
BACKGROUNDS = ("plain", "gradient", "noise")
# Aspect ratios (width / height): with square tiles they give 1 x 2 up to 3 x 4 tile grids.
ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 2.0, 1 / 2)

TEMPLATES = {
    "color": "What color is the {shape}?",
    "shape": "What shape is the {color} object?",
    "presence": "Is there a {color} {shape}?",
    "position": "Where is the {color} {shape}?",
}


@dataclass
class SceneObject:
    shape: str
    color: str
    box: tuple[float, float, float, float]  # normalised x0, y0, x1, y1

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass
class Question:
    kind: str  # one of QUESTION_TYPES
    text: str
    answer: str
    target: int | None  # index of the object the question is about (None: absent object)


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject] = field(default_factory=list)

    def boxes(self) -> np.ndarray:
        """# [object, 4] float32 normalised x0, y0, x1, y1"""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    def labels(self) -> list[str]:
        return [o.label for o in self.objects]


def make_scene(
    rng: np.random.Generator,
    n_objects: int | tuple[int, int] = (1, 4),
    longest: int = 256,
    background: str | None = None,
    size_range: tuple[float, float] = (0.18, 0.32),
    aspect: float | None = None,
) -> Scene:
    """A random scene.

    Parameters
    ----------
    rng : random generator (the scene is a pure function of its state).
    n_objects : a count, or an inclusive (low, high) range.
    longest : longest image edge in pixels.
    background : one of BACKGROUNDS, or None for a random one.
    size_range : object side as a fraction of the image's shorter edge.
    aspect : width / height, or None for a random one of ASPECTS.
    """
    count = n_objects if isinstance(n_objects, int) else int(rng.integers(n_objects[0], n_objects[1] + 1))
    aspect = float(rng.choice(ASPECTS)) if aspect is None else aspect
    width, height = (longest, round(longest / aspect)) if aspect >= 1 else (round(longest * aspect), longest)
    image = _background(rng, width, height, background or str(rng.choice(BACKGROUNDS)))
    draw = ImageDraw.Draw(image)
    shapes = rng.choice(len(SHAPES), size=count, replace=False)
    colors = rng.choice(len(COLORS), size=count, replace=False)
    objects: list[SceneObject] = []
    placed: list[tuple[int, int, int, int]] = []
    for shape_i, color_i in zip(shapes, colors):
        rect = _place(rng, width, height, size_range, placed)
        if rect is None:  # no room left: fewer objects
            break
        placed.append(rect)
        name, color = SHAPES[shape_i], list(COLORS)[color_i]
        _draw(draw, name, rect, COLORS[color])
        x0, y0, x1, y1 = rect
        objects.append(SceneObject(name, color, (x0 / width, y0 / height, x1 / width, y1 / height)))
    return Scene(image, objects)


def _background(rng: np.random.Generator, width: int, height: int, kind: str) -> Image.Image:
    """Greyish backgrounds (low saturation, so object colours stay unambiguous)."""
    base = rng.uniform(90, 200) + rng.uniform(-15, 15, size=3)  # [3]
    if kind == "plain":
        pixels = np.broadcast_to(base, (height, width, 3))
    elif kind == "gradient":
        ramp = np.linspace(-35, 35, width if rng.random() < 0.5 else height)
        ramp = ramp[None, :, None] if ramp.size == width else ramp[:, None, None]
        pixels = base + np.broadcast_to(ramp, (height, width, 1))
    elif kind == "noise":
        pixels = base + rng.normal(0, 12, size=(height, width, 1))
    else:
        raise ValueError(f"unknown background {kind!r}; expected one of {BACKGROUNDS}")
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _place(rng, width: int, height: int, size_range, placed, tries: int = 50):
    """A square (x0, y0, x1, y1) in pixels not overlapping the ones already placed."""
    side = int(min(width, height) * rng.uniform(*size_range))
    side = max(side, 6)
    for _ in range(tries):
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - side + 1))
        rect = (x0, y0, x0 + side, y0 + side)
        if all(_apart(rect, other) for other in placed):
            return rect
    return None


def _apart(a, b, gap: int = 2) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _draw(draw: ImageDraw.ImageDraw, shape: str, rect, color) -> None:
    x0, y0, x1, y1 = rect
    box = (x0, y0, x1 - 1, y1 - 1)  # pillow's boxes are inclusive
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(x0, y1 - 1), ((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1)], fill=color)
    elif shape == "cross":
        third = (x1 - x0) / 3
        draw.rectangle((x0 + third, y0, x1 - 1 - third, y1 - 1), fill=color)
        draw.rectangle((x0, y0 + third, x1 - 1, y1 - 1 - third), fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def position_word(box, margin: float = 0.08) -> str | None:
    """left/right/top/bottom of a box's centre from the image centre, or None if ambiguous."""
    cx, cy = (box[0] + box[2]) / 2 - 0.5, (box[1] + box[3]) / 2 - 0.5
    if max(abs(cx), abs(cy)) < 0.15 or abs(abs(cx) - abs(cy)) < margin:
        return None
    if abs(cx) > abs(cy):
        return "left" if cx < 0 else "right"
    return "top" if cy < 0 else "bottom"


def scene_questions(
    scene: Scene, rng: np.random.Generator, kinds=QUESTION_TYPES, every_object: bool = False
) -> list[Question]:
    """Questions the scene can answer, in random order: one of each kind in `kinds` about a random
    object, or with `every_object` one of each kind about every object (presence: one a scene)."""
    if every_object:
        targets = {k: range(len(scene.objects)) if k != "presence" else [None] for k in kinds}
    else:
        targets = {k: [None] for k in kinds}
    questions = [q for k in kinds for t in targets[k] if (q := _question(scene, rng, k, t)) is not None]
    order = rng.permutation(len(questions))
    return [questions[i] for i in order]


def _question(scene: Scene, rng: np.random.Generator, kind: str, target: int | None = None) -> Question | None:
    if not scene.objects:
        return None
    target = int(rng.integers(len(scene.objects))) if target is None else target
    obj = scene.objects[target]
    if kind == "color":
        return Question(kind, TEMPLATES[kind].format(shape=obj.shape), obj.color, target)
    if kind == "shape":
        return Question(kind, TEMPLATES[kind].format(color=obj.color), obj.shape, target)
    if kind == "presence":
        return _presence(scene, rng, target)
    if kind == "position":
        where = position_word(obj.box)
        return (
            None
            if where is None
            else Question(kind, TEMPLATES[kind].format(color=obj.color, shape=obj.shape), where, target)
        )
    raise ValueError(f"unknown question type {kind!r}; expected one of {QUESTION_TYPES}")


def _presence(scene: Scene, rng: np.random.Generator, target: int) -> Question:
    """Half yes (an object present), half no (a shape present with another object's colour, or absent)."""
    obj = scene.objects[target]
    if rng.random() < 0.5:
        return Question("presence", TEMPLATES["presence"].format(color=obj.color, shape=obj.shape), "yes", target)
    present = {(o.color, o.shape) for o in scene.objects}
    options = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    # Prefer swapped attributes (both words occur in the scene): the hard negatives.
    colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
    hard = [(c, s) for c, s in options if c in colors and s in shapes]
    pool = hard if hard and rng.random() < 0.7 else options
    color, shape = pool[int(rng.integers(len(pool)))]
    return Question("presence", TEMPLATES["presence"].format(color=color, shape=shape), "no", None)


def vocabulary_text() -> str:
    """Every word a question or answer can contain (to train a tokenizer that covers them)."""
    lines = [t.format(color=c, shape=s) for t in TEMPLATES.values() for c in COLORS for s in SHAPES]
    answers = [*COLORS, *SHAPES, *POSITIONS, "yes", "no"]
    return "\n".join(lines + [" ".join(answers), " " + " ".join(answers)])
