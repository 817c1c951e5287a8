"""Dreams: real context from a held-out episode, then the world model alone on given actions.

The GIF shows, side by side and upscaled, the real game (the held-out episode replayed in the
emulator up to the context, then driven by the same actions as the dream) and the dream, with
the step and the action written on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageDraw

from arcadedreamer.data.actions import FULL_ACTIONS
from arcadedreamer.data.dataset import gather_stacks
from arcadedreamer.data.emulator import replay
from arcadedreamer.data.policy import VIEWING_HOLD, HeldRandomPolicy
from arcadedreamer.data.preprocessing import episode_ids, to_uint8
from arcadedreamer.data.preprocessing import psnr as psnr_of_mse
from arcadedreamer.data.storage import GameData
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_write_bytes, check_output_path, describe_os_error
from arcadedreamer.models.world_model import WorldModel

HEADER = 14  # pixels of text above each panel


@dataclass
class Dream:
    context_frames: np.ndarray  # (C', 64, 64) uint8: the real frames shown before the dream
    dream_frames: np.ndarray  # (T, 64, 64) uint8
    real_frames: np.ndarray | None  # (T, 64, 64) uint8 real continuation, or None
    actions: list[int]  # (T,) full-action ids


def random_actions(steps: int, seed: int) -> list[int]:
    """Seeded random full-set actions, each held a few frames so the motion is visible."""
    return HeldRandomPolicy(1, *VIEWING_HOLD, seed).sequence(steps)


def episode_bounds(data: GameData, episode: int) -> tuple[int, int]:
    ids = episode_ids(data.episode_ends)
    rows = np.flatnonzero(ids == episode)
    if len(rows) == 0:
        raise UserError(f"--episode {episode}: held-out {data.game} has episodes 0…{ids[-1]}")
    return int(rows[0]), int(rows[-1]) + 1


def real_continuation(
    data: GameData, first_row: int, context_end: int, actions: list[int]
) -> np.ndarray | None:
    """Replay the recorded stream in the emulator to the last context frame, then apply `actions`."""
    for start_row, _length, reset_seed in data.manifest.get("streams", {}).get("rows", []):
        if start_row == first_row:  # only an episode that starts a stream can be replayed
            recorded = np.asarray(data.actions[start_row:context_end])
            emulator, frames = replay(data.game, reset_seed, recorded, data.frames.shape[-1])
            try:
                if len(frames) != context_end - start_row + 1 or not np.array_equal(
                    frames[-1], data.frames[context_end]
                ):
                    return None  # replay diverged (e.g. another library version): show no real panel
                real = []
                for action in actions:
                    frame, _, done = emulator.step(action)
                    real.append(frame)
                    if done:
                        break
                while len(real) < len(actions):
                    real.append(real[-1])
                return np.stack(real)
            finally:
                emulator.close()
    return None


@torch.no_grad()
def dream(
    model: WorldModel,
    data: GameData,
    actions: list[int],
    episode: int,
    start: int,
    stack_size: int,
    context: int,
) -> Dream:
    """Warm the GRU on `context` real stacks from `start` in `episode`, then imagine."""
    first, stop = episode_bounds(data, episode)
    last_context = first + start + stack_size - 1 + context - 1  # row of the newest real frame
    if last_context >= stop:
        raise UserError(
            f"--start {start}: episode {episode} of held-out {data.game} has {stop - first} frames; "
            f"context needs {stack_size + context - 1} from the start"
        )
    frames = torch.from_numpy(np.asarray(data.frames))
    rows = torch.arange(last_context - context + 1, last_context + 1)
    stacks = gather_stacks(frames, rows, stack_size)  # (C, S, 64, 64)
    latents = model.encode(stacks)[None]  # (1, C, D)
    recorded = torch.from_numpy(np.asarray(data.actions[rows[:-1].numpy()]).astype(np.int64))[None]
    dreamed = model.imagine_frames(latents, recorded, torch.tensor([actions]))[0][0]  # (T, 64, 64)
    real = real_continuation(data, first, last_context, actions)
    return Dream(
        context_frames=np.asarray(data.frames[first + start : last_context + 1]),
        dream_frames=to_uint8(dreamed),
        real_frames=real,
        actions=list(actions),
    )


def _panel(frame: np.ndarray, scale: int, label: str) -> Image.Image:
    image = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    canvas = Image.new("L", (image.width, image.height + HEADER), 0)
    canvas.paste(image, (0, HEADER))
    ImageDraw.Draw(canvas).text((2, 1), label, fill=255)
    return canvas


def render_frames(result: Dream, scale: int) -> list[np.ndarray]:
    """One RGB image per GIF frame: [real | dream] panels, step and action written above."""
    has_real = result.real_frames is not None
    frames = []
    for i, frame in enumerate(result.context_frames):
        panels = [_panel(frame, scale, f"real  context {i + 1}")]
        if has_real:
            panels.append(_panel(frame, scale, "dream: waiting"))
        frames.append(panels)
    for t, action in enumerate(result.actions):
        label = f"step {t + 1} {FULL_ACTIONS[action]}"
        panels = []
        if has_real:
            panels.append(_panel(result.real_frames[t], scale, f"real  {label}"))
        panels.append(_panel(result.dream_frames[t], scale, f"dream {label}"))
        frames.append(panels)
    images = []
    for panels in frames:
        width = sum(p.width for p in panels) + 4 * (len(panels) - 1)
        canvas = Image.new("RGB", (width, panels[0].height), (40, 40, 40))
        x = 0
        for p in panels:
            canvas.paste(p.convert("RGB"), (x, 0))
            x += p.width + 4
        images.append(np.asarray(canvas))
    return images


def write_gif(images: list[np.ndarray], path: str | Path, fps: int) -> None:
    """Encoded in memory, then written atomically: a failed write (a full disk) is one clear
    line, and the encoder never meets a broken file (it would complain again as it closes)."""
    path = Path(path)
    # GIF stores delays in hundredths of a second
    data = iio.imwrite("<bytes>", np.stack(images), extension=".gif", duration=10 * round(100 / fps), loop=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(describe_os_error(path, exc)) from None
    atomic_write_bytes(path, data)


def frame_psnr(predicted: np.ndarray, real: np.ndarray) -> float:
    """PSNR (dB) of two uint8 frames."""
    return psnr_of_mse(float(np.mean((predicted / 255.0 - real / 255.0) ** 2)))


def run_dream(
    params,
    game: str,
    checkpoint_path: Path,
    actions: list[int] | None,
    *,
    steps: int,
    episode: int,
    start: int,
    out: Path,
) -> Path:
    """The dream command: load, imagine, render, write the GIF atomically, log it to MLflow."""
    from arcadedreamer import tracking
    from arcadedreamer.data.storage import REGENERATE_HELDOUT, load_game_data
    from arcadedreamer.models.checkpoints import check_trained_on, load_world_model

    out = check_output_path(out, "--out", suffix=".gif")
    torch.set_num_threads(params.play.num_threads)  # small batches: more threads only add contention
    model, checkpoint = load_world_model(checkpoint_path, params)
    check_trained_on(checkpoint, game, checkpoint_path)
    game_dir = Path(params.heldout.out_dir) / game
    if not game_dir.exists():
        raise UserError(
            f"{game_dir}: no held-out episodes for {game}; run `make data` (or `arcadedreamer heldout`)"
        )
    data = load_game_data(game_dir, rebuild=REGENERATE_HELDOUT)
    if actions is None:
        actions = random_actions(steps, params.dream.seed)
    result = dream(model, data, actions, episode, start, params.data.stack_size, params.evaluation.context)
    write_gif(render_frames(result, params.dream.upscale), out, params.dream.fps)
    description = f"A dream of {len(actions)} {game} frames from held-out episode {episode}, frame {start}"
    with tracking.stage_run("dream", params, description=description):
        world_uri = tracking.model_uri_for_run(tracking.DYNAMICS_MODEL, checkpoint.get("mlflow_run_id"))
        tracking.set_tags(
            {"game": game, "model_checkpoint": str(checkpoint_path)}
            | ({"world_model.model_uri": world_uri} if world_uri else {})
        )
        tracking.log_metrics({"steps": len(actions)})
        if result.real_frames is not None:  # the real game replayed with the same actions
            psnr = [frame_psnr(d, r) for d, r in zip(result.dream_frames, result.real_frames)]  # dB
            tracking.log_metrics({"psnr_dream_vs_real_mean": float(np.mean(psnr))})
            tracking.log_series({"psnr_dream_vs_real": psnr})  # step = the imagined step
        tracking.log_artifact(out, "dreams")
    return out
