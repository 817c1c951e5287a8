"""The README's figures from a quickstart's outputs: `python docs/figures.py` after `make quickstart`.

docs/dream_frames_quickstart.png: the dream GIF's real (top) and dream (bottom) panels at a few
steps; docs/eval_curves_quickstart.png: a copy of plots/eval_curves.png. After `make
quickstart-long`, `python docs/figures.py long` writes docs/dream_frames_quickstart_long.png
instead (steps to 45).
"""

import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def dream_strip(gif: Path, context: int, steps: list[int], out: Path) -> None:
    """`context` real frames open the GIF; step s is frame context - 1 + s (step 0: the last real one)."""
    frames = iio.imread(gif, index=None)  # (N, H, 2W + gap, 3): real | dream
    half = frames.shape[2] // 2
    picks = [frames[min(context - 1 + s, len(frames) - 1)] for s in steps]
    real = np.concatenate([f[:, :half] for f in picks], axis=1)
    dream = np.concatenate([f[:, half:] for f in picks], axis=1)
    Image.fromarray(np.concatenate([real, dream], axis=0)).save(out)


if __name__ == "__main__":
    from arcadedreamer.config import load_params

    params = load_params(ROOT / "params.yaml")
    long = sys.argv[1:2] == ["long"]
    game = sys.argv[2 if long else 1] if len(sys.argv) > (2 if long else 1) else params.dream.game
    context = params.data.stack_size + params.evaluation.context - 1
    gif = ROOT / params.dream.out_dir / f"dream_{game}.gif"
    if long:
        dream_strip(
            gif, context, [0, 2, 5, 9, 13, 21, 30, 45], ROOT / "docs" / "dream_frames_quickstart_long.png"
        )
    else:
        dream_strip(gif, context, [0, 2, 5, 9, 13, 21], ROOT / "docs" / "dream_frames_quickstart.png")
        shutil.copy(ROOT / "plots" / "eval_curves.png", ROOT / "docs" / "eval_curves_quickstart.png")
