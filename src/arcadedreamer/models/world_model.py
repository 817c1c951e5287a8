"""The VAE and the GRU joined: what dream, evaluate and play use."""

from __future__ import annotations

import torch
from torch import nn

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

    @torch.no_grad()
    def step(self, latents: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor | None = None):
        """One imagined step: latents (B, D), actions (B,) → next latents (B, D), hidden."""
        return self.dynamics.step(latents, actions, hidden)

    @torch.no_grad()
    def warm_up(self, context_latents: torch.Tensor, context_actions: torch.Tensor):
        """Feed real latents (B, C, D) with the actions taken from them (B, C-1).

        Returns the last real latent (B, D) and the GRU state after seeing the context, ready to
        be stepped with the action taken from that last latent.
        """
        hidden = None
        for t in range(context_latents.shape[1] - 1):
            _, hidden = self.dynamics.step(context_latents[:, t], context_actions[:, t], hidden)
        return context_latents[:, -1], hidden

    @torch.no_grad()
    def imagine(
        self, context_latents: torch.Tensor, context_actions: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Open loop from real context: actions (B, T) → imagined latents (B, T, D)."""
        latents, hidden = self.warm_up(context_latents, context_actions)
        imagined = []
        for t in range(actions.shape[1]):
            latents, hidden = self.dynamics.step(latents, actions[:, t], hidden)
            imagined.append(latents)
        return torch.stack(imagined, dim=1)
