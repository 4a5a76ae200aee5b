"""Draw the demo images shipped in attnstore/data (deterministic, pillow only).

Three scenes of different shapes (wide, tall, square) so the demo shows
different tile grids. Run once; the PNGs are committed.
"""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "attnstore" / "data"


def beach(w=640, h=400) -> Image.Image:
    img = Image.new("RGB", (w, h), (135, 190, 235))
    d = ImageDraw.Draw(img)
    d.rectangle([0, h * 0.55, w, h], fill=(230, 205, 150))
    d.ellipse([w * 0.78, h * 0.08, w * 0.9, h * 0.27], fill=(255, 220, 60))
    d.rectangle([w * 0.2, h * 0.35, w * 0.28, h * 0.75], fill=(200, 30, 40))  # red jacket
    d.ellipse([w * 0.215, h * 0.25, w * 0.265, h * 0.35], fill=(240, 200, 170))
    d.ellipse([w * 0.4, h * 0.62, w * 0.55, h * 0.75], fill=(120, 80, 40))  # dog
    return img


def street(w=360, h=540) -> Image.Image:
    img = Image.new("RGB", (w, h), (90, 90, 95))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w, h * 0.35], fill=(170, 200, 230))
    d.rectangle([w * 0.1, h * 0.45, w * 0.9, h * 0.7], fill=(220, 40, 30))  # red bus
    for x in (0.2, 0.45, 0.7):
        d.rectangle([w * x, h * 0.5, w * (x + 0.15), h * 0.58], fill=(200, 230, 250))
    d.ellipse([w * 0.15, h * 0.66, w * 0.3, h * 0.76], fill=(20, 20, 20))
    d.ellipse([w * 0.7, h * 0.66, w * 0.85, h * 0.76], fill=(20, 20, 20))
    return img


def table(w=480, h=480) -> Image.Image:
    img = Image.new("RGB", (w, h), (150, 100, 60))
    d = ImageDraw.Draw(img)
    d.ellipse([w * 0.1, h * 0.1, w * 0.45, h * 0.4], fill=(250, 250, 250))  # cup
    d.rectangle([w * 0.55, h * 0.5, w * 0.92, h * 0.8], fill=(60, 60, 70))  # laptop
    d.ellipse([w * 0.15, h * 0.55, w * 0.4, h * 0.75], fill=(240, 150, 30))  # cat
    return img


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, draw in (("sample_beach", beach), ("sample_street", street), ("sample_table", table)):
        draw().save(OUT / f"{name}.png", optimize=True)
        print(OUT / f"{name}.png")
