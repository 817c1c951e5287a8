"""The VAE and the GRU joined: what dream, evaluate and play use."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from arcadedreamer.data.preprocessing import episode_ids
from arcadedreamer.models.dynamics import Dynamics
from arcadedreamer.models.vae import VAE


class WorldModel(nn.Module):
    def __init__(self, vae: VAE, dynamics: Dynamics):
        super().__init__()
        if vae.latent_dim != dynamics.latent_dim:
            raise ValueError(f"VAE latent_dim {vae.latent_dim} != dynamics latent_dim {dynamics.latent_dim}")
        self.vae, self.dynamics = vae, dynamics

    @torch.no_grad()
    def encode(self, stacks: torch.Tensor) -> torch.Tensor:
        """stacks: (B, 4, 64, 64) in [0, 1] → latents (B, D)."""
        return self.vae.encode(stacks)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, D) → stacks (B, 4, 64, 64) in [0, 1]."""
        return self.vae.decode(latents)

    @property
    def frames_per_step(self) -> int:
        return self.dynamics.frames_per_step

    @torch.no_grad()
    def step(self, latents: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor | None = None):
        """One imagined step: latents (B, D), actions (B, K) ((B,) when K is 1) → next latents (B, D), hidden."""
        return self.dynamics.step(latents, actions, hidden)

    @torch.no_grad()
    def step_held(self, latents: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor | None = None):
        """One imagined step with each action held for its K frames (Atari's action repeat):
        latents (B, D), actions (B,) → next latents (B, D), hidden."""
        return self.dynamics.step(latents, actions[:, None].expand(-1, self.frames_per_step), hidden)

    @torch.no_grad()
    def warm_up(self, context_latents: torch.Tensor, context_actions: torch.Tensor):
        """Feed real latents (B, C, D) of C consecutive stacks with the actions taken from them
        (B, C-1); the GRU steps through every K-th (`context_steps`).

        Returns the last real latent (B, D) and the GRU state after seeing the context, ready to
        be stepped with the actions taken from that last latent.
        """
        k, hidden = self.frames_per_step, None
        for t in context_steps(context_latents.shape[1], k)[:-1].tolist():
            _, hidden = self.dynamics.step(context_latents[:, t], context_actions[:, t : t + k], hidden)
        return context_latents[:, -1], hidden

    @torch.no_grad()
    def imagine(
        self, context_latents: torch.Tensor, context_actions: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Open loop from real context: actions (B, T), one a frame → imagined latents
        (B, ⌈T/K⌉, D), one a step (`actions_by_step` pads the last step)."""
        latents, hidden = self.warm_up(context_latents, context_actions)
        imagined = []
        for step_actions in actions_by_step(actions, self.frames_per_step).unbind(1):
            latents, hidden = self.dynamics.step(latents, step_actions, hidden)
            imagined.append(latents)
        return torch.stack(imagined, dim=1)

    @torch.no_grad()
    def imagine_frames(
        self, context_latents: torch.Tensor, context_actions: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `imagine`, frame by frame: actions (B, T) → imagined frames (B, T, 64, 64) in
        [0, 1], and the latent of the step that drew each (B, T, D)."""
        frames = actions.shape[1]
        steps = self.imagine(context_latents, context_actions, actions)  # (B, S, D)
        step_of_each_frame = steps.repeat_interleave(self.frames_per_step, dim=1)  # (B, S × K, D)
        return self.frames_of(steps)[:, :frames], step_of_each_frame[:, :frames]

    @torch.no_grad()
    def recorded_states(
        self, latents: torch.Tensor, actions: torch.Tensor, episode_ends: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, torch.Tensor]:
        """The GRU fed a recording, each episode from its first full stack: latents (N, D) and
        actions (N,) of every frame, episode ends (N,) bool, the frames that hold a full stack
        (`stack_start_indices`) → the frames each step took its actions from (S, K) and the GRU
        state after each step (S, H), episode after episode."""
        ends = np.asarray(episode_ends, dtype=bool)
        ids = episode_ids(ends)
        k, all_steps, all_states = self.frames_per_step, [], []
        for episode in np.unique(ids[valid]):
            rows = valid[(ids[valid] == episode) & ~ends[valid]]  # frames an action leaves from
            steps = recorded_steps(rows, k)
            if len(steps) == 0:
                continue
            index = torch.from_numpy(steps)
            step_actions = actions[index] if k > 1 else actions[index[:, 0]]
            all_states.append(self.dynamics.states(latents[index[:, 0]][None], step_actions[None])[0])
            all_steps.append(steps)
        if not all_steps:
            return np.zeros((0, k), dtype=np.int64), torch.zeros(0, self.dynamics.hidden_size)
        return np.concatenate(all_steps), torch.cat(all_states)

    @torch.no_grad()
    def frames_of(self, step_latents: torch.Tensor) -> torch.Tensor:
        """Imagined latents (B, S, D), one a step → the K new frames of each (B, S × K, 64, 64):
        the newest K of each decoded stack."""
        batch, steps = step_latents.shape[:2]
        stacks = torch.cat([self.decode(z) for z in step_latents.reshape(batch * steps, -1).split(512)])
        newest = stacks[:, stacks.shape[1] - self.frames_per_step :]  # (B × S, K, 64, 64)
        return newest.reshape(batch, steps * self.frames_per_step, *stacks.shape[-2:])


def context_steps(context: int, frames_per_step: int) -> torch.Tensor:
    """Of `context` consecutive real stacks, the ones the GRU steps through: every K-th, ending
    with the last (8 stacks, K = 4: the 4th and the 8th)."""
    return torch.arange(context - 1, -1, -frames_per_step).flip(0)


def actions_by_step(actions: torch.Tensor, frames_per_step: int) -> torch.Tensor:
    """(B, T) actions, one a frame → (B, ⌈T/K⌉, K), one row a step; a last, partial step
    repeats its last action (its extra frames are imagined, never shown)."""
    batch, frames = actions.shape
    missing = -frames % frames_per_step
    if missing:
        actions = torch.cat([actions, actions[:, -1:].expand(batch, missing)], dim=1)
    return actions.reshape(batch, -1, frames_per_step)


def recorded_steps(rows: np.ndarray, frames_per_step: int) -> np.ndarray:
    """The consecutive frames `rows` (n,) of one recorded episode that actions leave from → the
    frames the GRU steps from when it is fed that recording (S, K): row s holds the K frames
    whose actions one step takes; a last, partial step is left out."""
    steps = len(rows) // frames_per_step
    return np.asarray(rows[: steps * frames_per_step]).reshape(steps, frames_per_step)
