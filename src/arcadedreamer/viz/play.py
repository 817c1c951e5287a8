"""Play the real game beside the world model: Real | Predicted | Overlay, in pygame.

Predicted is the model's guess of the current frame from the previous real frames and the
action just taken. In dream mode (`--dream`, or D) the model runs on its own predictions from
the moment it is switched on, driven by the player's keys, while the real game goes on beside
it with the same actions. A world model of K frames a step (`dynamics.frames_per_step`) is
stepped every K-th frame with the action pressed then, held for the K frames in the real game
too (Atari's action repeat), and its K predicted frames are shown one a frame beside them.
`--headless` runs the same loop with the SDL dummy driver and a seeded random policy, for tests
and screenshots.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from arcadedreamer.data.actions import FULL_ACTIONS, action_from_keys
from arcadedreamer.data.dataset import gather_stacks
from arcadedreamer.data.emulator import Emulator
from arcadedreamer.data.policy import VIEWING_HOLD, HeldRandomPolicy
from arcadedreamer.data.preprocessing import to_uint8
from arcadedreamer.data.storage import library_versions, save_game_data
from arcadedreamer.models.controller import Agent
from arcadedreamer.models.world_model import WorldModel

GAP, HUD = 6, 54  # pixels between panels, and of text below them
PANELS = ("Real", "Predicted", "Overlay")


def overlay(real: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(H, W) uint8 pair → (H, W, 3): green = real, red = predicted, yellow = both."""
    out = np.zeros((*real.shape, 3), dtype=np.uint8)
    out[..., 0] = predicted
    out[..., 1] = real
    return out


@dataclass
class PlaySession:
    """The game and the model stepped together; no pygame in here, so it is testable."""

    game: str
    model: WorldModel
    stack_size: int = 4
    frame_size: int = 64
    dream: bool = False
    emulator: Emulator = field(init=False)
    frames: list[np.ndarray] = field(init=False)  # real frames of this episode
    predicted: np.ndarray = field(init=False)
    error: float = field(init=False, default=float("nan"))
    hidden: torch.Tensor | None = field(init=False, default=None)
    dream_latent: torch.Tensor | None = field(init=False, default=None)
    recorded: dict[str, list] = field(init=False)
    last_action: int = field(init=False, default=0)
    step_action: int = field(init=False, default=0)  # held for the model's current step
    upcoming: list[np.ndarray] = field(init=False, default_factory=list)  # this step's frames still to show

    def __post_init__(self) -> None:
        self.emulator = Emulator(self.game, self.frame_size)
        self.recorded = {"frames": [], "actions": [], "rewards": [], "episode_ends": [], "ram": []}
        self.reset(seed=0)

    def reset(self, seed: int | None = None) -> None:
        if self.recorded["frames"]:
            self.recorded["episode_ends"][-1] = True
        frame = self.emulator.reset(seed=seed)
        self.frames = [frame]
        self.predicted = frame
        self.error, self.hidden, self.dream_latent = float("nan"), None, None
        self.upcoming = []
        self._record(frame)

    def _record(self, frame: np.ndarray) -> None:
        self.recorded["frames"].append(frame)
        self.recorded["actions"].append(0)
        self.recorded["rewards"].append(0.0)
        self.recorded["episode_ends"].append(False)
        self.recorded["ram"].append(self.emulator.ram())

    def real_stack(self) -> torch.Tensor:
        """The newest real frames as one stack (1, S, 64, 64) in [0, 1]."""
        history = self.frames[-self.stack_size :]
        history = [history[0]] * (self.stack_size - len(history)) + history  # pad the first frames
        return gather_stacks(
            torch.from_numpy(np.stack(history)), torch.tensor([self.stack_size - 1]), self.stack_size
        )

    def _latest_latent(self) -> torch.Tensor:
        return self.model.encode(self.real_stack())  # (1, D)

    def toggle_dream(self) -> None:
        self.dream = not self.dream
        self.dream_latent = None
        self.upcoming = []

    @torch.no_grad()
    def step(self, action: int) -> bool:
        """Advance the game by one frame, and the model by one step when a step begins (then
        `action` is held for its K frames); returns True when the episode ended."""
        if not self.upcoming:
            if self.dream and self.dream_latent is not None:
                latent = self.dream_latent  # the model's own previous prediction
            else:
                latent = self._latest_latent()
            next_latent, self.hidden = self.model.step_held(latent, torch.tensor([action]), self.hidden)
            if self.dream:
                self.dream_latent = next_latent
            self.upcoming = list(to_uint8(self.model.frames_of(next_latent[:, None])[0]))
            self.step_action = int(action)
        action = self.step_action
        self.predicted = self.upcoming.pop(0)
        self.recorded["actions"][-1] = int(action)
        frame, reward, done = self.emulator.step(action)
        self.recorded["rewards"][-1] = reward
        self.frames.append(frame)
        self._record(frame)
        self.last_action = int(action)
        self.error = float(
            np.mean((frame.astype(np.float32) / 255 - self.predicted.astype(np.float32) / 255) ** 2)
        )
        return done

    def save_recording(self, root: str | Path) -> Path:
        """The session's frames and actions in the same format as `collect` (root/<game>/)."""
        arrays = {k: np.asarray(v) for k, v in self.recorded.items()}
        arrays["episode_ends"][-1] = True
        arrays["actions"][arrays["episode_ends"]] = 0
        arrays["rewards"][arrays["episode_ends"]] = 0.0
        manifest = {
            "game": self.game,
            "frames": len(arrays["frames"]),
            "episodes": int(arrays["episode_ends"].sum()),
            "seed": None,
            "policy": "human play (arcadedreamer play --record)",
            "frame_size": self.frame_size,
            "versions": library_versions(self.frame_size),
        }
        game_dir = Path(root) / self.game
        save_game_data(game_dir, arrays, manifest)
        return game_dir


def keys_to_action(pressed) -> int:
    """Arrow keys + Space, as held now (`pygame.key.get_pressed()`), → one of ALE's 18 actions."""
    import pygame

    return action_from_keys(
        up=bool(pressed[pygame.K_UP]),
        down=bool(pressed[pygame.K_DOWN]),
        left=bool(pressed[pygame.K_LEFT]),
        right=bool(pressed[pygame.K_RIGHT]),
        fire=bool(pressed[pygame.K_SPACE]),
    )


def render(screen, session: PlaySession, scale: int, fps: float, font) -> None:
    import pygame

    size = session.frame_size * scale
    real, pred = session.frames[-1], session.predicted
    images = [np.stack([real] * 3, -1), np.stack([pred] * 3, -1), overlay(real, pred)]
    screen.fill((24, 24, 24))
    for i, (image, label) in enumerate(zip(images, PANELS)):
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(image.transpose(1, 0, 2)))
        x = i * (size + GAP)
        screen.blit(pygame.transform.scale(surface, (size, size)), (x, 0))
        title = label + (" (dream)" if label == "Predicted" and session.dream else "")
        screen.blit(font.render(title, True, (255, 255, 0)), (x + 4, 4))
    psnr = 10 * np.log10(1 / session.error) if session.error > 0 else float("inf")
    lines = [
        f"{fps:5.1f} fps   action {FULL_ACTIONS[session.last_action]:<13} score {session.emulator.score:g}"
        f"   error MSE {session.error:.5f} ({psnr:.1f} dB)",
        f"arrows move  Space fire  D dream {'ON' if session.dream else 'off'}  R reset  Esc quit",
    ]
    for row, text in enumerate(lines):
        screen.blit(font.render(text, True, (230, 230, 230)), (6, size + 6 + row * 22))


def run_play(
    game: str,
    model: WorldModel,
    *,
    stack_size: int,
    fps: int,
    scale: int,
    dream: bool = False,
    headless: bool = False,
    steps: int | None = None,
    screenshot: str | Path | None = None,
    record: str | Path | None = None,
    seed: int = 0,
    num_threads: int = 1,
    agent: Agent | None = None,
) -> dict:
    """The play loop. Returns a summary: steps run, why it stopped, files written.

    With `agent` (a trained controller) the agent plays instead of the keys or the random
    policy; with `dream` the Predicted panel is the world model's dream of its actions."""
    torch.set_num_threads(num_threads)  # batch-1 steps: more threads only add contention (README)
    if headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    pygame.display.init()
    pygame.font.init()
    try:
        size = 64 * scale
        screen = pygame.display.set_mode((3 * size + 2 * GAP, size + HUD))
        pygame.display.set_caption(f"ArcadeDreamer — {game}" + (" — controller playing" if agent else ""))
        font = pygame.font.Font(None, 22)
        session = PlaySession(game, model.eval(), stack_size=stack_size, dream=dream)
        clock, policy = pygame.time.Clock(), HeldRandomPolicy(1, *VIEWING_HOLD, seed)
        done_steps, reason, shown_fps = 0, "steps", float(fps)
        last = time.perf_counter()
        while steps is None or done_steps < steps:
            quit_now = False
            for event in pygame.event.get():
                if event.type == pygame.QUIT or (
                    event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE
                ):
                    quit_now = True
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                    session.reset()
                    if agent is not None:
                        agent.reset()
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_d:
                    session.toggle_dream()
            if quit_now:
                reason = "quit"
                break
            if agent is not None:
                action = int(agent.act(session.real_stack())[0])
            elif headless:  # the seeded random policy, each action held a few frames
                action = int(policy()[0])
            else:
                action = keys_to_action(pygame.key.get_pressed())
            if session.step(action):
                session.reset()
                if agent is not None:
                    agent.reset()
            done_steps += 1
            now = time.perf_counter()
            shown_fps = 0.9 * shown_fps + 0.1 / max(now - last, 1e-6)
            last = now
            render(screen, session, scale, shown_fps, font)
            pygame.display.flip()
            if not headless:
                clock.tick(fps)
        summary = {"steps": done_steps, "reason": reason}
        if screenshot:
            render(screen, session, scale, shown_fps, font)
            summary["screenshot"] = str(save_surface(screen, Path(screenshot)))
        if record:
            summary["record"] = str(session.save_recording(record))
        session.emulator.close()
        return summary
    finally:
        pygame.quit()


def save_surface(screen, path: Path) -> Path:
    """pygame picks the format from the name, so write `.tmp.png` beside it, then rename."""
    import pygame

    from arcadedreamer.errors import UserError

    if not path.parent.exists():
        raise UserError(f"{path}: directory {path.parent} does not exist; create it or choose another path")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix or '.png'}")
    pygame.image.save(screen, str(tmp))
    os.replace(tmp, path)
    return path
