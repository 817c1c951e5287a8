"""GRU dynamics in the VAE's latent space: (latent, action) → next latent."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Dynamics(nn.Module):
    """Input latent (64) + one-hot action (18) = 82 → GRU(256) → next latent (64).

    The head predicts the change of latent and adds it to the input latent: the output is
    still the next latent, but "nothing moves" is the zero function, which is the right prior
    for Atari at frameskip 1 where most of the frame stays put.
    """

    def __init__(self, latent_dim: int = 64, num_actions: int = 18, hidden_size: int = 256):
        super().__init__()
        self.latent_dim, self.num_actions, self.hidden_size = latent_dim, num_actions, hidden_size
        self.gru = nn.GRU(latent_dim + num_actions, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, latent_dim)

    def step(
        self, latents: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """latents: (B, latent_dim), actions: (B,) full-action ids, hidden: (1, B, H) or None
        → next latents (B, latent_dim), hidden (1, B, H)."""
        actions_onehot = F.one_hot(actions.long(), self.num_actions).to(latents.dtype)
        inputs = torch.cat([latents, actions_onehot], dim=-1).unsqueeze(1)  # (B, 1, 82)
        output, hidden = self.gru(inputs, hidden)
        return latents + self.head(output[:, 0]), hidden

    def forward(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: latents (B, T, D), actions (B, T) → predicted next latents (B, T, D)."""
        actions_onehot = F.one_hot(actions.long(), self.num_actions).to(latents.dtype)
        output, _ = self.gru(torch.cat([latents, actions_onehot], dim=-1))
        return latents + self.head(output)

    def compute_loss(
        self,
        latents: torch.Tensor,
        actions: torch.Tensor,
        sampling_prob: float,
        burn_in: int,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Scheduled sampling over a sequence.

        latents: (B, T+1, D) true latents; actions: (B, T) actions taken from latents[:, t].
        Step t's input is the true latent for t < burn_in; afterwards, with probability
        `sampling_prob` per (sequence, step), the model's own previous prediction instead.
        The loss is the MSE between every prediction and the true next latent; `loss_after_burn_in`
        and `loss_copy` score the steps after the burn-in against copying the last real latent.
        """
        batch, steps = actions.shape
        use_prediction = scheduled_sampling_mask(batch, steps, sampling_prob, burn_in, generator)
        use_prediction = use_prediction.to(latents.device)
        hidden = None
        predictions = []
        previous_prediction = latents[:, 0]
        for t in range(steps):
            inputs = torch.where(use_prediction[:, t, None], previous_prediction, latents[:, t])
            previous_prediction, hidden = self.step(inputs, actions[:, t], hidden)
            predictions.append(previous_prediction)
        predicted = torch.stack(predictions, dim=1)  # (B, T, D)
        targets = latents[:, 1:]
        # After the burn-in: the model's predictions against copying the last latent it saw for real.
        after = targets[:, burn_in - 1 :].float()
        last_seen = latents[:, burn_in - 1 : burn_in].float().expand_as(after)
        return {
            "loss": F.mse_loss(predicted.float(), targets.float()),
            "loss_after_burn_in": F.mse_loss(predicted[:, burn_in - 1 :].float(), after).detach(),
            "loss_copy": F.mse_loss(last_seen, after).detach(),
            "sampled_fraction": use_prediction[:, burn_in:].float().mean()
            if steps > burn_in
            else torch.zeros(()),
        }


def scheduled_sampling_mask(
    batch: int, steps: int, prob: float, burn_in: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch, steps) bool: True where the step is fed the model's own prediction."""
    draws = torch.rand((batch, steps), generator=generator)
    mask = draws < prob
    mask[:, :burn_in] = False
    return mask
