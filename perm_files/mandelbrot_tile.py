"""Render one tile of a Mandelbrot image: the map step of the render farm demo.

Usage: mandelbrot_tile.py SIZE TILES INDEX [MAX_ITER]

The SIZE x SIZE image is cut into TILES tiles (a grid of rows x columns with
rows * columns == TILES, as square as TILES allows); this renders tile number
INDEX (0-based, row by row) and writes it to ``$TITAN_OUTPUT_DIR/tile-INDEX.bin``
(default ``./out``): a 20-byte header -- ``b"MTIL"``, then x, y, width, height
as big-endian u32 -- followed by the tile's RGB bytes, zlib-compressed.

Pure Python, made reasonably fast by skipping the points known to be inside
(the main cardioid and the period-2 bulb, which would otherwise run to
MAX_ITER) and by smooth colouring from the escape value, so few iterations
still give a clean gradient.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import zlib

# the view: the whole set, centred, in a square
CENTER_X, CENTER_Y, SPAN = -0.65, 0.0, 2.6
DEFAULT_MAX_ITER = 200
HEADER = struct.Struct(">4sIIII")
# a gradient from deep blue through white to orange, sampled by the smooth escape value
STOPS = ((0.0, (0, 7, 100)), (0.16, (32, 107, 203)), (0.42, (237, 255, 255)), (0.64, (255, 170, 0)), (0.86, (0, 2, 0)))


def grid(tiles: int) -> tuple[int, int]:
    """(rows, columns) with rows * columns == tiles, as square as possible."""
    rows = int(math.isqrt(tiles))
    while tiles % rows:
        rows -= 1
    return rows, tiles // rows


def tile_box(size: int, tiles: int, index: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of tile ``index`` in pixels."""
    rows, cols = grid(tiles)
    row, col = divmod(index, cols)
    x0, x1 = size * col // cols, size * (col + 1) // cols
    y0, y1 = size * row // rows, size * (row + 1) // rows
    return x0, y0, x1 - x0, y1 - y0


def palette(n: int = 1024) -> list[bytes]:
    colours: list[bytes] = []
    stops = (*STOPS, (1.0, STOPS[0][1]))
    for i in range(n):
        t = i / n
        for (t0, c0), (t1, c1) in zip(stops, stops[1:], strict=False):
            if t0 <= t <= t1:
                f = (t - t0) / (t1 - t0)
                colours.append(bytes(round(a + (b - a) * f) for a, b in zip(c0, c1, strict=True)))
                break
    return colours


def render(size: int, box: tuple[int, int, int, int], max_iter: int) -> bytes:
    x0, y0, width, height = box
    scale = SPAN / size
    left = CENTER_X - SPAN / 2
    top = CENTER_Y - SPAN / 2
    colours = palette()
    n_colours = len(colours)
    black = b"\x00\x00\x00"
    log2 = math.log(2.0)
    out = bytearray()
    for py in range(y0, y0 + height):
        ci = top + py * scale
        ci2 = ci * ci
        row: list[bytes] = []
        for px in range(x0, x0 + width):
            cr = left + px * scale
            # inside the main cardioid or the period-2 bulb: in the set, no need to iterate
            q = (cr - 0.25) ** 2 + ci2
            if q * (q + (cr - 0.25)) <= 0.25 * ci2 or (cr + 1.0) ** 2 + ci2 <= 0.0625:
                row.append(black)
                continue
            zr = zi = 0.0
            zr2 = zi2 = 0.0
            i = 0
            while zr2 + zi2 <= 256.0 and i < max_iter:
                zi = 2.0 * zr * zi + ci
                zr = zr2 - zi2 + cr
                zr2 = zr * zr
                zi2 = zi * zi
                i += 1
            if i >= max_iter:
                row.append(black)
                continue
            smooth = i + 1 - math.log(math.log(zr2 + zi2) / 2 / log2) / log2
            row.append(colours[int(math.sqrt(max(smooth, 0.0)) * 64) % n_colours])
        out += b"".join(row)
    return bytes(out)


def main(argv: list[str]) -> int:
    try:
        size, tiles, index = int(argv[1]), int(argv[2]), int(argv[3])
        max_iter = int(argv[4]) if len(argv) > 4 else DEFAULT_MAX_ITER
    except (IndexError, ValueError):
        print("usage: mandelbrot_tile.py SIZE TILES INDEX [MAX_ITER]", file=sys.stderr)
        return 2
    if not (size >= 1 and 1 <= tiles <= size * size and 0 <= index < tiles and max_iter >= 1):
        print(f"mandelbrot_tile.py: bad arguments {argv[1:]}", file=sys.stderr)
        return 2
    box = tile_box(size, tiles, index)
    pixels = render(size, box, max_iter)
    out_dir = os.environ.get("TITAN_OUTPUT_DIR", "out")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"tile-{index:04d}.bin"), "wb") as f:
        f.write(HEADER.pack(b"MTIL", *box))
        f.write(zlib.compress(pixels, 1))
    print(f"tile {index}/{tiles}: {box[2]}x{box[3]} at ({box[0]},{box[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
