"""Perceptual hash for near-duplicate images: a 256-bit difference hash and vectorised Hamming search.

Public chest X-ray sets copy each other's images after resizing, re-encoding and contrast tweaks, so the
content hash (sha256) misses them. The difference hash (dHash) averages the image down to a 17 x 16 grid
and keeps one bit per horizontally adjacent pair ("is the right cell brighter?"): 16 x 16 = 256 bits that
survive rescaling (aspect ratio included), JPEG re-encoding and global brightness or contrast changes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DataError

GRID = 16
BITS = GRID * GRID
WORDS = BITS // 64
HEX_LEN = BITS // 4


def dhash(gray: np.ndarray) -> str:
    """256-bit difference hash of a 2-D uint8 image as 64 hex characters."""
    if gray.ndim != 2:
        raise ValueError(f"dhash expects a 2-D gray image, got shape {gray.shape}")
    # BOX = area average: every source pixel counts, so the grid does not depend on the input size.
    small = np.asarray(Image.fromarray(gray).resize((GRID + 1, GRID), Image.BOX), dtype=np.int16)
    bits = small[:, 1:] > small[:, :-1]
    return np.packbits(bits.ravel()).tobytes().hex()


def hashes_to_words(hexes) -> np.ndarray:
    """Hex hashes -> (N, 4) uint64 array for fast Hamming distances."""
    hexes = list(hexes)
    out = np.empty((len(hexes), WORDS), dtype=np.uint64)
    for i, h in enumerate(hexes):
        if not isinstance(h, str) or len(h) != HEX_LEN:
            raise DataError(f"perceptual hash #{i} {h!r}: expected {HEX_LEN} hex characters")
        try:
            out[i] = np.frombuffer(bytes.fromhex(h), dtype=">u8")
        except ValueError as exc:
            raise DataError(f"perceptual hash #{i} {h!r}: not hexadecimal") from exc
    return out


def hamming(a: str, b: str) -> int:
    """Hamming distance between two hex hashes."""
    wa, wb = hashes_to_words([a, b])
    return int(np.bitwise_count(wa ^ wb).sum())


def near_duplicate_pairs(hexes, max_bits: int, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i < j) whose hashes differ in at most ``max_bits`` bits.

    Compares every pair with numpy popcounts over uint64 words, ``chunk`` rows at a time (memory stays at
    about chunk x N bytes); 6,000 hashes take about a second.
    """
    words = hashes_to_words(hexes)
    n = len(words)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = words[start:stop]
        rest = words[start:]  # only the upper triangle: columns from ``start`` on
        dist = np.zeros((stop - start, n - start), dtype=np.uint16)
        for w in range(WORDS):
            dist += np.bitwise_count(block[:, w, None] ^ rest[None, :, w])
        i, j = np.nonzero(dist <= max_bits)
        keep = j > i  # drop self-pairs and the lower triangle inside the block
        rows.append(i[keep] + start)
        cols.append(j[keep] + start)
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
