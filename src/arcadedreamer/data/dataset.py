"""Frame stacks and latent sequences built at load time from single stored frames.

Frames stay uint8 in one tensor; a batch gathers its stacks by index and only then becomes
float in [0, 1]. Stacks and sequences never cross an episode boundary. Train and validation
are split by whole episodes, per game, with a seeded permutation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arcadedreamer.data.preprocessing import (
    NO_REWARD,
    episode_ids,
    game_over_frames,
    reward_classes,
    stack_start_indices,
    to_unit_float,
)
from arcadedreamer.data.storage import GameData, load_game_data, read_frames_into
from arcadedreamer.errors import UserError


@dataclass
class Episodes:
    """Several games' data, concatenated (each game ends with an episode end)."""

    frames: torch.Tensor  # (N, H, W) uint8
    actions: torch.Tensor  # (N,) int64 full-action ids
    episode_ends: np.ndarray  # (N,) bool
    game_index: np.ndarray  # (N,) int: index into `games`
    games: list[str]
    content_hashes: dict[str, str]
    reward_classes: torch.Tensor  # (N,) int64: the sign class of the reward the action from frame t earned
    game_overs: torch.Tensor  # (N,) bool: frame t is the last of an episode the game ended (not a cut)

    @property
    def episode_id(self) -> np.ndarray:
        return episode_ids(self.episode_ends)

    def __len__(self) -> int:
        return len(self.frames)


def load_episodes(
    root: str | Path, games: list[str], verify: bool = True, extra_roots: Sequence[str | Path] = ()
) -> Episodes:
    """All games' data in one uint8 frame tensor, read in place (frames are held once).
    `extra_roots`: more recordings of some of the games (the agent's rounds of real play), each
    game's appended after its collected data."""
    parts: list[tuple[int, str, GameData]] = []  # (game index, content-hash key, data)
    for index, game in enumerate(games):
        game_dir = Path(root) / game
        if not game_dir.exists():
            raise UserError(f"{game_dir}: no collected data for {game}; run `arcadedreamer collect` first")
        parts.append((index, game, load_game_data(game_dir, verify=verify, mmap=True)))
        for number, extra in enumerate(extra_roots, 1):
            extra_dir = Path(extra) / game
            if not extra_dir.exists():  # the agent's games are of its one game
                continue
            # keyed by position, not by folder: the hash names the data wherever it lies
            parts.append((index, f"{game} +{number}", load_game_data(extra_dir, verify=verify, mmap=True)))
    frames = np.empty((sum(len(p) for _, _, p in parts), *parts[0][2].frames.shape[1:]), dtype=np.uint8)
    offset = 0
    for _, _, part in parts:
        read_frames_into(part, frames[offset : offset + len(part)])
        offset += len(part)
    return Episodes(
        frames=torch.from_numpy(frames),
        actions=torch.from_numpy(np.concatenate([p.actions for _, _, p in parts]).astype(np.int64)),
        episode_ends=np.concatenate([p.episode_ends for _, _, p in parts]),
        game_index=np.concatenate([np.full(len(p), i) for i, _, p in parts]),
        games=list(games),
        content_hashes={key: p.manifest["content_hash"] for _, key, p in parts},
        reward_classes=torch.from_numpy(np.concatenate([reward_classes(p.rewards) for _, _, p in parts])),
        game_overs=torch.from_numpy(np.concatenate([game_overs(p) for _, _, p in parts])),
    )


def game_overs(data: GameData) -> np.ndarray:
    """(N,) bool game-over frames of one game's data: its episode ends less the cuts its manifest
    records (each emulator's quota) and the truncations at its max_episode_frames."""
    if "cut_rows" in data.manifest:  # whole episodes played to their end (the agent's rounds)
        cut_rows = [int(row) for row in data.manifest["cut_rows"]]
    else:
        rows = data.manifest.get("streams", {"rows": []})["rows"]
        cut_rows = [start + frames - 1 for start, frames, _ in rows] or [len(data) - 1]
    max_frames = int(data.manifest.get("max_episode_frames", len(data) + 1))
    return game_over_frames(np.asarray(data.episode_ends), np.asarray(cut_rows), max_frames)


def data_hash(episodes: Episodes) -> str:
    """One hash naming exactly which collected data a model was trained on."""
    import hashlib

    text = "".join(f"{g}:{h}\n" for g, h in sorted(episodes.content_hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def split_episodes(episodes: Episodes, val_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for frames of validation episodes: whole episodes, chosen per game."""
    ids = episodes.episode_id
    is_val = np.zeros(len(ids), dtype=bool)
    if val_fraction <= 0:
        return is_val
    rng = np.random.default_rng(seed)
    for game in range(len(episodes.games)):
        game_episodes = np.unique(ids[episodes.game_index == game])
        if len(game_episodes) < 2:
            continue
        count = min(len(game_episodes) - 1, max(1, round(val_fraction * len(game_episodes))))
        chosen = rng.choice(game_episodes, size=count, replace=False)
        is_val |= np.isin(ids, chosen)
    return is_val


def gather_stacks(frames: torch.Tensor, last_indices: torch.Tensor, stack_size: int) -> torch.Tensor:
    """frames (N, H, W) uint8, last_indices (B,) → (B, stack_size, H, W) float in [0, 1]."""
    offsets = torch.arange(-stack_size + 1, 1, device=last_indices.device)
    return to_unit_float(frames[last_indices[:, None] + offsets])


class FrameStacks:
    """Every valid stack of a split, served in (shuffled) batches."""

    def __init__(self, episodes: Episodes, stack_size: int, mask: np.ndarray):
        valid = stack_start_indices(episodes.episode_ends, stack_size)
        self.indices = torch.from_numpy(valid[mask[valid]])
        self.game_index = torch.from_numpy(episodes.game_index[self.indices.numpy()])
        self.frames, self.stack_size = episodes.frames, stack_size

    def __len__(self) -> int:
        return len(self.indices)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[torch.Tensor]:
        order = (
            self.indices[torch.randperm(len(self.indices), generator=generator)]
            if generator is not None
            else self.indices
        )
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield gather_stacks(self.frames, order[start : start + batch_size], self.stack_size)


def mean_frames(episodes: Episodes, mask: np.ndarray, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Each game's mean frame over the masked (training) frames, (G, H, W) in [0, 1], and
    each game's frame count (G,)."""
    means, _, counts = frame_statistics(episodes, mask, chunk)
    return means, counts


def frame_statistics(
    episodes: Episodes, mask: np.ndarray, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each game's mean and second moment of its masked (training) frames, (G, H, W) each in
    [0, 1] units, and its frame count (G,). Summed in chunks: a float copy of all frames would
    take 4x (or 8x) their uint8 size."""
    sums = torch.zeros(2, len(episodes.games), *episodes.frames.shape[1:], dtype=torch.float64)
    rows = np.flatnonzero(mask)
    for start in range(0, len(rows), chunk):
        index = rows[start : start + chunk]
        frames = episodes.frames[torch.from_numpy(index).to(episodes.frames.device)].cpu().double() / 255.0
        games = torch.from_numpy(episodes.game_index[index])
        sums[0].index_add_(0, games, frames)
        sums[1].index_add_(0, games, frames * frames)
    counts = torch.from_numpy(np.bincount(episodes.game_index[rows], minlength=len(episodes.games)))
    moments = sums / counts.clamp(min=1)[None, :, None, None]
    return moments[0].float(), moments[1].float(), counts


def pooled_mean_and_std(
    means: torch.Tensor, squares: torch.Tensor, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-game moments (G, H, W) and counts (G,) → the mean and std frames of all games together."""
    weights = (counts / counts.sum()).to(means.dtype)[:, None, None]
    mean = (means * weights).sum(0)
    variance = ((squares * weights).sum(0) - mean * mean).clamp(min=0)
    return mean, variance.sqrt()


def sequence_starts(
    episodes: Episodes,
    stack_size: int,
    seq_len: int,
    mask: np.ndarray,
    stride: int = 1,
    frames_per_step: int = 1,
) -> np.ndarray:
    """Indices s where stacks s, s+K, … s+seq_len×K all exist inside one episode of the split
    (K = frames_per_step), one every `stride` frames (long sequences overlap by most of their
    length even so)."""
    n = len(episodes)
    span = seq_len * frames_per_step
    valid_stack = np.zeros(n, dtype=bool)
    valid_stack[stack_start_indices(episodes.episode_ends, stack_size)] = True
    ids = episodes.episode_id
    starts = np.arange(max(0, n - span))
    ok = valid_stack[starts] & (ids[starts + span] == ids[starts]) & mask[starts] & (starts % stride == 0)
    return starts[ok]


def step_reward_classes(frame_classes: torch.Tensor) -> torch.Tensor:
    """(…, K) reward classes of a step's K frames → (…) the class of the step: the sign of the
    frames' signs summed (one brick in four frames is +, as one brick in one)."""
    return torch.sign((frame_classes - NO_REWARD).sum(-1)) + NO_REWARD


class LatentSequences:
    """Windows of seq_len+1 latents K frames apart (K = frames_per_step), the K actions of each
    step between them, the reward class each step earned, whether it ended the game, and where
    each window starts in the recording."""

    def __init__(
        self,
        latents: torch.Tensor,
        episodes: Episodes,
        starts: np.ndarray,
        seq_len: int,
        frames_per_step: int = 1,
    ):
        device = latents.device
        self.latents, self.seq_len, self.frames_per_step = latents, seq_len, frames_per_step
        self.actions = episodes.actions.to(device)
        self.reward_classes = episodes.reward_classes.to(device)
        self.game_overs = episodes.game_overs.to(device)
        self.starts = torch.from_numpy(starts)

    def __len__(self) -> int:
        return len(self.starts)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """(latents (B, T+1, D), actions (B, T, K) ((B, T) when K is 1), reward classes (B, T),
        game overs (B, T) float, start frame indices (B,))."""
        order = (
            self.starts[torch.randperm(len(self.starts), generator=generator)]
            if generator is not None
            else self.starts
        )
        k = self.frames_per_step
        steps = torch.arange(self.seq_len + 1) * k
        within = torch.arange(k).to(self.latents.device)
        for start in range(0, len(order), batch_size):
            index = (order[start : start + batch_size, None] + steps).to(self.latents.device)  # (B, T+1)
            frames = index[:, :-1, None] + within  # (B, T, K): the frames each step's actions leave from
            actions = self.actions[frames]
            yield (
                self.latents[index],
                actions[..., 0] if k == 1 else actions,
                step_reward_classes(self.reward_classes[frames]),
                self.game_overs[frames + 1].any(-1).float(),
                index[:, 0],
            )
