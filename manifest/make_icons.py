"""Draw the Teams app icons: `color.png` (192x192, full colour) and `outline.png` (32x32, white on transparent).

Run `python manifest/make_icons.py` after changing the drawing; the PNGs are committed and
`tests/test_manifest.py` checks that this script still reproduces them pixel for pixel.

The picture is a stack of coins (four in the colour icon, three in the small outline icon). Shapes are
rasterised here, over an N x N grid of sample points per pixel (the fraction of samples inside the shape is the
pixel's coverage), with + - * / and comparisons only, instead of with `ImageDraw`: the pixels are the same on
every machine and every Pillow version. Pillow only encodes the PNG files.

* `color.png`: RGB, fully opaque; white coins on the accent colour (`ACCENT`, also the manifest's
  `accentColor`).
* `outline.png`: RGBA; every pixel is white (255, 255, 255), only alpha varies (0 outside the shapes, 255
  inside, in between on anti-aliased edges).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from PIL import Image

#: The accent colour: the colour icon's background and the manifest's `accentColor`.
ACCENT = (0x0F, 0x6C, 0x5A)
COLOR_SIZE = 192
OUTLINE_SIZE = 32
HERE = Path(__file__).resolve().parent

#: A shape: whether the point (x, y), in units of the icon's side with (0, 0) the top-left corner, is inside.
Shape = Callable[[float, float], bool]


def _in_ellipse(x: float, y: float, cx: float, cy: float, rx: float, ry: float) -> bool:
    dx, dy = (x - cx) / rx, (y - cy) / ry
    return dx * dx + dy * dy < 1.0


def _coin(cx: float, top: float, half_width: float, half_height: float, thickness: float, grow: float = 0.0
          ) -> Shape:
    """A coin seen from slightly above: its top face (an ellipse centred at (`cx`, `top`)), its edge (down by
    `thickness`) and the bottom face's lower half; `grow` widens the whole outline by that much."""
    rx, ry = half_width + grow, half_height + grow

    def inside(x: float, y: float) -> bool:
        return (_in_ellipse(x, y, cx, top, rx, ry) or _in_ellipse(x, y, cx, top + thickness, rx, ry)
                or (abs(x - cx) < rx and top <= y <= top + thickness))
    return inside


def _stack(count: int, half_width: float, half_height: float, thickness: float, gap: float, shift: float,
           face_ring: tuple[float, float]) -> Shape:
    """`count` coins stacked up, centred in the icon, shifted left and right by `shift` in turn like a real stack.
    Each coin hides the ones below it, with a `gap` of background around it so the coins stay apart; the top
    coin's face has an ellipse line of background (`face_ring`: inner and outer scale of the face ellipse)."""
    first = 0.5 - count / 2 * thickness  # the top coin's face centre: the stack's outline is centred vertically
    centres = [0.5 + (shift if k % 2 else -shift) for k in range(count)]
    coins = [_coin(centres[k], first + k * thickness, half_width, half_height, thickness) for k in range(count)]
    halos = [_coin(centres[k], first + k * thickness, half_width, half_height, thickness, gap) for k in range(count)]
    inner, outer = face_ring
    top_x = centres[0]

    def inside(x: float, y: float) -> bool:
        for k, (coin, halo) in enumerate(zip(coins, halos)):
            if coin(x, y):
                if k == 0 and _in_ellipse(x, y, top_x, first, half_width * outer, half_height * outer):
                    return not _in_ellipse(x, y, top_x, first, half_width * inner, half_height * inner)
                return True
            if halo(x, y):
                return False
        return False
    return inside


def coverage(size: int, shape: Shape, samples: int) -> list[float]:
    """Row-major fraction (0 to 1) of each pixel of a `size` x `size` icon covered by `shape`, measured on a
    `samples` x `samples` grid of points per pixel."""
    offsets = [(k + 0.5) / samples for k in range(samples)]
    total = samples * samples
    out: list[float] = []
    for row in range(size):
        for col in range(size):
            hits = sum(shape((col + dx) / size, (row + dy) / size) for dy in offsets for dx in offsets)
            out.append(hits / total)
    return out


#: The white of the colour icon: the coins, with a margin of background around them.
_COLOR_MARK = _stack(4, half_width=0.28, half_height=0.10, thickness=0.075, gap=0.022, shift=0.02,
                     face_ring=(0.60, 0.72))
#: The outline icon's mark: a stack of three, filling the icon, with gaps of about 1.5 px.
_OUTLINE_MARK = _stack(3, half_width=0.44, half_height=0.16, thickness=0.15, gap=0.05, shift=0.03,
                       face_ring=(0.48, 0.70))


def render_color() -> Image.Image:
    """The 192x192 colour icon (mode RGB)."""
    data = bytearray()
    for a in coverage(COLOR_SIZE, _COLOR_MARK, samples=4):
        data += bytes(round(c + (255 - c) * a) for c in ACCENT)
    return Image.frombytes("RGB", (COLOR_SIZE, COLOR_SIZE), bytes(data))


def render_outline() -> Image.Image:
    """The 32x32 outline icon (mode RGBA, white with alpha only)."""
    data = bytearray()
    for a in coverage(OUTLINE_SIZE, _OUTLINE_MARK, samples=8):
        data += bytes((255, 255, 255, round(255 * a)))
    return Image.frombytes("RGBA", (OUTLINE_SIZE, OUTLINE_SIZE), bytes(data))


def write_icons(out_dir: Path = HERE) -> tuple[Path, Path]:
    """Write `color.png` and `outline.png` into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    color, outline = out_dir / "color.png", out_dir / "outline.png"
    render_color().save(color, format="PNG")
    render_outline().save(outline, format="PNG")
    return color, outline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the Teams app icons (color.png, outline.png).")
    parser.add_argument("--out", type=Path, default=HERE, help=f"directory to write to (default {HERE})")
    args = parser.parse_args(argv)
    for path in write_icons(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
