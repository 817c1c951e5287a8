"""cv2's INTER_AREA downscaling, byte for byte and much cheaper: integer area weights, compiled.
Why it is exact, and what it saves: docs/design.md.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_MAX_DENOMINATOR = 4096  # keeps S < 2**24 and the rounding margin far above float32 error


def _axis_lowest_terms(source: int, target: int) -> tuple[int, int]:
    common = math.gcd(source, target)
    return source // common, target // common


def exact_area_resize_supported(height: int, width: int, size: int) -> bool:
    """Whether (height, width) → (size, size) has no rounding ties (see the module docstring)."""
    if size > height or size > width:
        return False
    denominator = _axis_lowest_terms(height, size)[0] * _axis_lowest_terms(width, size)[0]
    return denominator % 2 == 1 and denominator <= _MAX_DENOMINATOR


def area_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer INTER_AREA taps along one axis.

    Returns (index, weight), each (target, taps), and `units`, the sum of every row's weights.
    Unused taps have weight 0 (and repeat a valid index).
    """
    units, per_pixel = _axis_lowest_terms(source, target)  # each output spans `units` / `per_pixel` px
    rows = []
    for d in range(target):
        low, high = d * units, (d + 1) * units  # in units of 1/per_pixel source pixel
        first, last = low // per_pixel, -(-high // per_pixel)
        rows.append(
            [(s, min(high, (s + 1) * per_pixel) - max(low, s * per_pixel)) for s in range(first, last)]
        )
    taps = max(len(row) for row in rows)
    index = np.zeros((target, taps), dtype=np.int32)
    weight = np.zeros((target, taps), dtype=np.float32)
    for d, row in enumerate(rows):
        for k, (s, share) in enumerate(row):
            index[d, k], weight[d, k] = s, share
        index[d, len(row) :] = row[-1][0]
    return index, weight, units


UNKNOWN_LEVEL = np.float32(1e9)  # a `levels` entry not learned yet: any frame using it overflows


@numba.njit(cache=True, nogil=True, fastmath=True)
def _area_resize_kernel(
    screen,
    levels,
    out,
    previous_screen,
    previous_out,
    incremental,
    row_index,
    row_weight,
    col_index,
    col_weight,
    half,
    inverse,
):
    # screen (H, W) uint8 codes, gray level levels[code] → out (h, w) uint8. Sums are integers
    # below 2**24, so float32 adds are exact in any order (fastmath may reorder them).
    # incremental: output rows whose source rows equal previous_screen's are copied from
    # previous_out. Returns False (out partly written) if a code's level is UNKNOWN_LEVEL.
    height, width = screen.shape
    out_height, out_width = out.shape
    changed = np.ones(height, np.bool_)
    if incremental:  # compare 8 bytes at a time (the caller checks width % 8 == 0)
        screen_words, previous_words = screen.view(np.uint64), previous_screen.view(np.uint64)
        for y in range(height):
            difference = np.uint64(0)
            for w in range(screen_words.shape[1]):
                difference |= screen_words[y, w] ^ previous_words[y, w]
            changed[y] = difference != 0
    limit = np.float32(255.5) / inverse
    columns = np.empty(width, np.float32)
    row = np.empty(out_width, np.float32)
    for i in range(out_height):
        dirty = False
        for k in range(row_index.shape[1]):
            dirty |= row_weight[i, k] != 0.0 and changed[row_index[i, k]]
        if not dirty:
            for j in range(out_width):
                out[i, j] = previous_out[i, j]
            continue
        columns[:] = 0.0  # vertical pass: weighted sum of this output row's source rows
        for k in range(row_index.shape[1]):
            source_row, share = row_index[i, k], row_weight[i, k]
            if share != 0.0:
                for x in range(width):
                    columns[x] += levels[screen[source_row, x]] * share
        row[:] = 0.0  # horizontal pass, taps outermost so the inner loop vectorises
        for k in range(col_index.shape[0]):
            for j in range(out_width):
                row[j] += columns[col_index[k, j]] * col_weight[k, j]
        if row.max() > limit:
            return False
        for j in range(out_width):
            out[i, j] = np.uint8((row[j] + half) * inverse)
    return True


GRAY_LEVELS = np.arange(256, dtype=np.float32)  # screens that already hold gray levels


class AreaResizer:
    """(height, width) screens → (size, size) uint8 frames, equal to cv2 INTER_AREA of the gray screen.

    A screen holds either gray levels or codes (ALE's palette indices) with a `levels` table that
    gives each code's gray level: reading palette indices costs ~1 us a frame, ALE's own grayscale
    conversion ~17 us. Given the previous screen and frame of the same emulator, only output rows
    whose source rows changed are recomputed (exact: the rest equal the previous frame's rows);
    in Atari games most rows do not change from one frame to the next.
    """

    def __init__(self, height: int, width: int, size: int):
        if not exact_area_resize_supported(height, width, size):
            raise ValueError(f"{height}x{width} → {size}x{size} has rounding ties; use cv2.resize")
        self.row_index, self.row_weight, row_units = area_weights(height, size)
        col_index, col_weight, col_units = area_weights(width, size)
        self.col_index, self.col_weight = (
            np.ascontiguousarray(col_index.T),
            np.ascontiguousarray(col_weight.T),
        )
        denominator = row_units * col_units
        self.half = np.float32(denominator / 2)
        self.inverse = np.float32(1.0 / denominator)
        self.size = size

    def __call__(self, screens: np.ndarray) -> np.ndarray:
        """(n, height, width) gray screens → (n, size, size) frames."""
        frames = np.empty((len(screens), self.size, self.size), dtype=np.uint8)
        for screen, frame in zip(screens, frames):
            self.resize_into(screen, frame)
        return frames

    def resize_into(
        self,
        screen: np.ndarray,
        out: np.ndarray,
        levels: np.ndarray = GRAY_LEVELS,
        previous_screen: np.ndarray | None = None,
        previous_out: np.ndarray | None = None,
    ) -> bool:
        """Writes the frame of `screen` to `out`; `previous_*`: the screen and frame of the step before.

        False when the screen holds a code whose level is still UNKNOWN_LEVEL (`out` is then
        partly written): learn the levels and call again.
        """
        incremental = previous_screen is not None and screen.shape[1] % 8 == 0
        if not incremental:
            previous_screen, previous_out = screen, out
        return _area_resize_kernel(
            screen,
            levels,
            out,
            previous_screen,
            previous_out,
            incremental,
            self.row_index,
            self.row_weight,
            self.col_index,
            self.col_weight,
            self.half,
            self.inverse,
        )
