"""Look before a long write: the disk and memory a stage will need, from the params alone.

Why: a collection of millions of frames into a small disk, or a training set larger than the
memory, used to start and fail (or be killed) minutes or hours later. These checks refuse at
once, with the numbers, before any work.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from arcadedreamer.errors import UserError

RAM_BYTES = 128  # the console RAM stored beside each frame
HEADROOM = 0.9  # use at most this share of the free memory or disk
ADAM_COPIES = 3  # a checkpoint holds the weights and Adam's two moments


def frame_record_bytes(frame_size: int) -> int:
    """Bytes one stored frame takes with its row of the other arrays (storage.py's layout)."""
    return frame_size * frame_size + RAM_BYTES + 1 + 4 + 1  # frame, RAM, action, reward, episode end


def human(size: float) -> str:
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.1f} {unit}"


def available_memory() -> int | None:
    """Bytes the kernel says can be used without swapping (Linux MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_disk(path: str | Path) -> int:
    """Free bytes on the file system that `path` (or its nearest existing parent) lives on."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def folder_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_memory(need: int, what: str, fix: str) -> None:
    free = available_memory()
    if free is not None and need > HEADROOM * free:
        raise UserError(f"{what} needs about {human(need)} of memory and {human(free)} is available; {fix}")


def check_disk(need: int, where: str | Path, what: str, fix: str) -> None:
    free = free_disk(where)
    if need > HEADROOM * free:
        raise UserError(
            f"{what} needs about {human(need)} of disk in {where} and {human(free)} is free; {fix}"
        )


def check_collect(out_dir: str | Path, games: list[str], frames: int, frame_size: int) -> None:
    """A collection holds one game's arrays in memory at a time (and a copy while it saves), and
    writes each game beside its old copy before swapping it in."""
    per_game = frames * frame_record_bytes(frame_size)
    fix = "collect fewer frames (data.frames_per_game or --frames) or free some"
    check_memory(2 * per_game, f"collecting {frames} frames of a game", fix)
    peak = collect_disk_peak(per_game, [folder_bytes(Path(out_dir) / game) for game in games])
    check_disk(peak, out_dir, f"collecting {len(games)} game(s) × {frames} frames", fix)


def collect_disk_peak(per_game: int, old_sizes: list[int]) -> int:
    """The most disk a collection adds at once: games are written one by one, each beside its
    old copy, which goes once the new one is in place; so while game g is written, the new data
    of games ≤ g is on disk and the old copies of games < g are gone."""
    return max(per_game * (g + 1) - sum(old_sizes[:g]) for g in range(len(old_sizes)))


def check_training(
    frame_count: int,
    frame_size: int,
    latent_dim: int,
    parameters: int,
    checkpoints: int,
    checkpoint_dir: str | Path,
    stage: str,
) -> None:
    """Training holds every frame (uint8) and, for the dynamics, every frame's latent; it writes
    `checkpoints` files of the weights and the optimizer's state."""
    frames = frame_count * frame_size * frame_size
    latents = frame_count * latent_dim * 4 if stage == "dynamics" else 0
    check_memory(
        frames + latents,
        f"{stage} training on {frame_count} frames",
        "train on fewer frames (data.frames_per_game) or on a machine with more memory",
    )
    check_disk(
        checkpoints * parameters * 4 * ADAM_COPIES,
        checkpoint_dir,
        f"{stage} training's {checkpoints} checkpoint(s)",
        "raise training.checkpoint_every or free some space",
    )
