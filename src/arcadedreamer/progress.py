"""Progress bars on a terminal only: in a log file or CI a bar redraw is a 1 000-character
line, so there the trainers' one line per epoch (and collect's line per game) is the progress."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not (enabled and sys.stderr.isatty()), mininterval=1.0
    )
