"""Stitch Mandelbrot tiles into one PNG: the reduce step of the render farm demo.

Usage: mandelbrot_stitch.py [OUTPUT_NAME]

Reads every tile written by ``mandelbrot_tile.py`` from the parents' outputs,
``$TITAN_INPUT_DIR/<parent id>/tile-*.bin``, places each at its (x, y) and
writes ``$TITAN_OUTPUT_DIR/OUTPUT_NAME`` (default ``mandelbrot.png``): a real
PNG (8-bit RGB, one IDAT) made with zlib and struct only. Fails if the tiles
do not cover the image exactly once.
"""

from __future__ import annotations

import glob
import os
import struct
import sys
import zlib

HEADER = struct.Struct(">4sIIII")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGB PNG; each row gets filter type 0 (none)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def read_tiles(input_dir: str) -> list[tuple[int, int, int, int, bytes]]:
    tiles = []
    for path in sorted(glob.glob(os.path.join(input_dir, "*", "tile-*.bin"))):
        with open(path, "rb") as f:
            data = f.read()
        magic, x, y, w, h = HEADER.unpack_from(data)
        pixels = zlib.decompress(data[HEADER.size :])
        if magic != b"MTIL" or len(pixels) != w * h * 3:
            raise ValueError(f"{path} is not a tile")
        tiles.append((x, y, w, h, pixels))
    return tiles


def stitch(tiles: list[tuple[int, int, int, int, bytes]]) -> tuple[int, int, list[bytes]]:
    width = max(x + w for x, _, w, _, _ in tiles)
    height = max(y + h for _, y, _, h, _ in tiles)
    if sum(w * h for _, _, w, h, _ in tiles) != width * height:
        raise ValueError(f"{len(tiles)} tiles do not cover the {width}x{height} image exactly")
    rows = [bytearray(width * 3) for _ in range(height)]
    for x, y, w, h, pixels in tiles:
        for r in range(h):
            rows[y + r][x * 3 : (x + w) * 3] = pixels[r * w * 3 : (r + 1) * w * 3]
    return width, height, [bytes(row) for row in rows]


def main(argv: list[str]) -> int:
    name = argv[1] if len(argv) > 1 else "mandelbrot.png"
    input_dir = os.environ.get("TITAN_INPUT_DIR", "in")
    try:
        tiles = read_tiles(input_dir)
        if not tiles:
            raise ValueError(f"no tiles under {input_dir}/*/")
        width, height, rows = stitch(tiles)
    except (OSError, ValueError, struct.error, zlib.error) as exc:
        print(f"mandelbrot_stitch.py: {exc}", file=sys.stderr)
        return 1
    out_dir = os.environ.get("TITAN_OUTPUT_DIR", "out")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(png(width, height, rows))
    print(f"stitched {len(tiles)} tiles into a {width}x{height} PNG: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
