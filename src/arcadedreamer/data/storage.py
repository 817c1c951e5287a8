"""One game's collected frames on disk: four .npy arrays and a JSON manifest.

Layout of `<root>/<game>/`: `frames.npy` (N, 64, 64) uint8, `actions.npy` (N,) uint8 full-action
ids, `rewards.npy` (N,) float32, `episode_ends.npy` (N,) bool, `ram.npy` (N, 128) uint8 (the
console's RAM as frame t was shown: where the objects are), `manifest.json`. Row t holds frame
t, the action taken from it and the reward that action earned; where `episode_ends[t]` is set,
frame t is the last of its episode and its action and reward are 0 (no transition leaves it).
The manifest's content hash covers every array, so a truncated or edited file is detected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_write_json, describe_os_error, sha256_file

ARRAYS = ("frames", "actions", "rewards", "episode_ends", "ram")
DTYPES = {
    "frames": np.uint8,
    "actions": np.uint8,
    "rewards": np.float32,
    "episode_ends": np.bool_,
    "ram": np.uint8,
}


# What rebuilds a damaged data folder: the advice its errors give
RECOLLECT = "re-collect it with `arcadedreamer collect` (or `dvc repro collect`)"
REGENERATE_HELDOUT = "regenerate it with `make data` (or `arcadedreamer heldout`)"
NUM_FULL_ACTIONS = 18  # ALE's full action set: ids 0…17
RAM_BYTES = 128


@dataclass
class GameData:
    game: str
    frames: np.ndarray  # (N, H, W) uint8
    actions: np.ndarray  # (N,) uint8, ALE full-action ids
    rewards: np.ndarray  # (N,) float32
    episode_ends: np.ndarray  # (N,) bool
    ram: np.ndarray  # (N, 128) uint8: the console's RAM as frame t was shown (object positions)
    manifest: dict
    directory: Path

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())


def content_hash(file_hashes: dict[str, str]) -> str:
    lines = "".join(f"{name}:{file_hashes[name]}\n" for name in sorted(file_hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def library_versions(frame_size: int) -> dict[str, str]:
    """What makes a recording's bytes, recorded beside them: the emulator (ALE, its ROMs), this
    package, and the resize (the exact area kernel, or opencv where the kernel cannot serve the
    size). Libraries that do not make the bytes stay out: a new release of one (opencv 5.0 → 5.1
    did) would otherwise change the manifest, and with it the held-out set that data.dvc pins.
    Bytes that do change are caught by the content hash and the pin, which is what they are for."""
    import ale_py

    import arcadedreamer
    from arcadedreamer.data.resize import exact_area_resize_supported

    if exact_area_resize_supported(210, 160, frame_size):  # ALE's screen (height, width)
        resize = "exact area kernel (arcadedreamer)"
    else:
        import cv2

        resize = f"opencv {cv2.__version__} INTER_AREA"
    return {"ale_py": ale_py.__version__, "arcadedreamer": arcadedreamer.__version__, "resize": resize}


def recording_manifest(
    game: str,
    arrays: dict[str, np.ndarray],
    *,
    seed: int,
    frame_size: int,
    policy: str,
    max_episode_frames: int,
    stream_rows: list[list[int]],
    **extra,
) -> dict:
    """What a recording's manifest says of it before its files' hashes are added: the same keys
    whoever played it (collect's random play, an agent's round), and `extra` ones of its own.
    stream_rows: [start_row, frames, reset_seed] of each episode played."""
    return {
        "game": game,
        "frames": int(len(arrays["frames"])),
        "episodes": int(arrays["episode_ends"].sum()),
        "seed": seed,
        "frame_size": frame_size,
        "policy": policy,
        "max_episode_frames": max_episode_frames,
        "streams": {"columns": ["start_row", "frames", "reset_seed"], "rows": stream_rows},
        "versions": library_versions(frame_size),
        **extra,
    }


def save_game_data(game_dir: str | Path, arrays: dict[str, np.ndarray], manifest: dict) -> dict:
    """Write into a temporary sibling directory, then swap it in: all files or none."""
    game_dir = Path(game_dir)
    game_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{game_dir.name}.", dir=game_dir.parent))
    except OSError as exc:
        raise UserError(describe_os_error(game_dir, exc)) from None
    try:
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes 0700
        file_hashes = {}
        for name in ARRAYS:
            array = np.ascontiguousarray(arrays[name], dtype=DTYPES[name])
            path = tmp_dir / f"{name}.npy"
            with open(path, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            file_hashes[f"{name}.npy"] = sha256_file(path)
        manifest = {**manifest, "files": file_hashes, "content_hash": content_hash(file_hashes)}
        atomic_write_json(tmp_dir / "manifest.json", manifest)
        old_dir = game_dir.with_name(f".{game_dir.name}.old")
        if old_dir.exists():
            shutil.rmtree(old_dir)
        if game_dir.exists():
            os.replace(game_dir, old_dir)
        os.replace(tmp_dir, game_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise UserError(describe_os_error(game_dir, exc)) from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return manifest


def read_manifest(game_dir: str | Path, rebuild: str = RECOLLECT) -> dict:
    path = Path(game_dir) / "manifest.json"
    recollect = rebuild
    if not path.exists():
        raise UserError(f"{game_dir}: no collected data (manifest.json missing); {recollect}")
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["content_hash"]  # noqa: B018 - must be present
        rows = manifest.get("streams", {"rows": []})["rows"]
        if not all(isinstance(r, list) and len(r) == 3 and all(type(v) is int for v in r) for r in rows):
            raise ValueError("streams.rows")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: corrupt manifest; {recollect}") from None
    return manifest


def load_game_data(
    game_dir: str | Path, verify: bool = True, mmap: bool = False, rebuild: str = RECOLLECT
) -> GameData:
    """Load a game's arrays; with `verify`, refuse files whose hash differs from the manifest.
    Shapes, types and action ids are checked too (a file can be replaced along with its
    manifest). `rebuild`: what the errors advise (RECOLLECT, or REGENERATE_HELDOUT)."""
    game_dir = Path(game_dir)
    manifest = read_manifest(game_dir, rebuild)
    recollect = rebuild
    arrays = {}
    for name in ARRAYS:
        path = game_dir / f"{name}.npy"
        if not path.exists():
            raise UserError(f"{path}: missing; {recollect}")
        if verify and sha256_file(path) != manifest["files"].get(f"{name}.npy"):
            raise UserError(
                f"{path}: content does not match its manifest hash (truncated or modified); {recollect}"
            )
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise UserError(f"{path}: not a readable array file; {recollect}") from None
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise UserError(f"{game_dir}: arrays have different lengths {sorted(lengths)}; {recollect}")
    problem = layout_problem(arrays)
    if problem:
        raise UserError(f"{game_dir}: {problem}; {recollect}")
    return GameData(game=manifest.get("game", game_dir.name), manifest=manifest, directory=game_dir, **arrays)


def load_recordings(roots: list[str | Path], game: str, rebuild: str = RECOLLECT) -> GameData:
    """One game's recordings under several roots (the collected data, then the agent's rounds of
    real play) as one GameData, in that order; every part ends with an episode end. The manifest
    is the first part's."""
    parts = []
    for root in roots:
        game_dir = Path(root) / game
        if not game_dir.exists():
            raise UserError(f"{game_dir}: no recorded episodes of {game}; {rebuild}")
        parts.append(load_game_data(game_dir, rebuild=rebuild))
    if len(parts) == 1:
        return parts[0]
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ARRAYS}
    return GameData(game=game, manifest=parts[0].manifest, directory=parts[0].directory, **arrays)


def layout_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with a game's arrays against the layout above, or None."""
    for name in ARRAYS:
        if arrays[name].dtype != DTYPES[name]:
            return f"{name}.npy holds {arrays[name].dtype}, expected {np.dtype(DTYPES[name])}"
    frames = arrays["frames"]
    if frames.ndim != 3 or frames.shape[1] != frames.shape[2]:
        return f"frames.npy has shape {frames.shape}, expected (N, size, size) square frames"
    if arrays["ram"].shape[1:] != (RAM_BYTES,):
        return f"ram.npy has shape {arrays['ram'].shape}, expected (N, {RAM_BYTES})"
    for name in ("actions", "rewards", "episode_ends"):
        if arrays[name].ndim != 1:
            return f"{name}.npy has shape {arrays[name].shape}, expected (N,)"
    if len(arrays["actions"]) and int(arrays["actions"].max()) >= NUM_FULL_ACTIONS:
        return f"actions.npy holds action id {int(arrays['actions'].max())}; ALE's ids are 0…{NUM_FULL_ACTIONS - 1}"
    if not np.isfinite(arrays["rewards"]).all():
        return "rewards.npy holds a NaN or infinite reward"
    return None


def read_frames_into(data: GameData, out: np.ndarray) -> None:
    """Read a game's frames file straight into `out` (a slice of the training set's one array).

    Why: `np.load` then `np.concatenate` holds every frame twice while loading; reading the
    payload into place keeps peak memory at one copy of the frames.
    """
    path = data.directory / "frames.npy"
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(handle)
        if shape != out.shape or dtype != out.dtype or fortran_order or not out.flags.c_contiguous:
            raise UserError(f"{path}: holds {dtype} {shape}, expected {out.dtype} {out.shape}; re-collect it")
        if handle.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise UserError(f"{path}: shorter than its header says; re-collect it")


def game_dir_for(root: str | Path, game: str) -> Path:
    return Path(root) / game
