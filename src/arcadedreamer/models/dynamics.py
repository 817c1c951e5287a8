"""GRU dynamics in the VAE's latent space: (latent, action) → next latent."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arcadedreamer.data.dataset import gather_stacks
from arcadedreamer.data.preprocessing import REWARD_SIGNS
from arcadedreamer.models.vae import VAE, reconstruction_loss


@dataclass
class DecodedFrameLoss:
    """Scores predicted latents in pixels: decoded through the frozen VAE and compared with the
    recorded stacks by the VAE's own (surprise-weighted) loss. Why: an unweighted latent MSE lets
    the few pixels of a ball weigh as little as they did in the VAE before its surprise weights.

    Not an nn.Module on purpose: the VAE stays out of the dynamics' weights and optimizer.
    """

    vae: VAE  # frozen (requires_grad off, eval mode)
    frames: torch.Tensor  # (N, H, W) uint8: the recording whose frame indices the batches carry
    loss: str  # the VAE's reconstruction loss: bce | sse
    surprise: float  # the VAE's surprise weight
    samples: int  # predictions decoded per batch, drawn among every sequence's open-loop ones
    weight: float  # of this term beside the latent MSE

    def __call__(self, latents: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
        """latents (N, D) predicted, frame_index (N,) the last frame of each one's true stack →
        the mean per-pixel loss (a scalar)."""
        targets = gather_stacks(self.frames, frame_index, self.vae.stack_size)  # (N, 4, 64, 64)
        logits = self.vae.decoder.logits(latents)
        weights = self.vae.surprise_weights(targets, self.surprise)
        return reconstruction_loss(targets, logits, self.loss, weights).mean() / targets[0].numel()


class EventHeads(nn.Module):
    """GRU state (B, H) → reward-sign logits (B, 3) and game-over logit (B,).

    They read the state after the GRU saw (latent_t, action_t), the one that predicts
    latent_t+1: what that action earned and whether the game ended with it. They are trained
    with class weights that balance the rare events; a weighted cross-entropy's optimum is the
    true posterior scaled by each class's weight, so `probabilities` takes the logs of those
    weights (kept as buffers, saved with the model) back out: calibrated probabilities, which
    is what a dream's rewards must be (balanced logits alone fire on ~10x too many steps).
    """

    def __init__(self, hidden_size: int, head_size: int):
        super().__init__()
        self.reward = nn.Sequential(
            nn.Linear(hidden_size, head_size), nn.ELU(), nn.Linear(head_size, len(REWARD_SIGNS))
        )
        self.game_over = nn.Sequential(nn.Linear(hidden_size, head_size), nn.ELU(), nn.Linear(head_size, 1))
        self.register_buffer("reward_log_weights", torch.zeros(len(REWARD_SIGNS)))
        self.register_buffer("game_over_log_weight", torch.zeros(()))

    def set_class_weights(self, reward_weights: torch.Tensor, game_over_weight: torch.Tensor) -> None:
        self.reward_log_weights.copy_(reward_weights.log())
        self.game_over_log_weight.copy_(game_over_weight.log())

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reward(states), self.game_over(states).squeeze(-1)

    def probabilities(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (…, H) → calibrated reward-sign probabilities (…, 3), game-over probability (…)."""
        return self.calibrated(*self(states))

    def calibrated(
        self, reward_logits: torch.Tensor, game_over_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads' logits (…, 3), (…) with the class weights taken back out → probabilities."""
        return (
            torch.softmax(reward_logits.float() - self.reward_log_weights, dim=-1),
            torch.sigmoid(game_over_logits.float() - self.game_over_log_weight),
        )


class Dynamics(nn.Module):
    """Input latent (64) + K one-hot actions (K × 18) → GRU(256) → the latent of the stack those
    K actions lead to (64), and from the GRU state the reward sign and game over of that step
    (`EventHeads`). K = `frames_per_step`: 1 is the original (one step a frame); 4 steps as the
    Atari world models of the literature do, so a 50-frame dream is 13 steps, not 50.

    The head predicts the change of latent and adds it to the input latent: the output is
    still the next latent, but "nothing moves" is the zero function, which is the right prior
    for Atari, where most of the frame stays put.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        num_actions: int = 18,
        hidden_size: int = 256,
        head_size: int = 128,
        frames_per_step: int = 1,
    ):
        super().__init__()
        self.latent_dim, self.num_actions, self.hidden_size = latent_dim, num_actions, hidden_size
        self.frames_per_step = frames_per_step
        self.gru = nn.GRU(latent_dim + frames_per_step * num_actions, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, latent_dim)
        self.events = EventHeads(
            hidden_size, head_size
        )  # built last: the GRU's initial weights stay as before

    def world_parameters(self) -> list[nn.Parameter]:
        """The GRU and latent head: what predicts the next latent."""
        return [*self.gru.parameters(), *self.head.parameters()]

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Gradient groups clipped apart (`train_step`): the rare, balanced-up events would
        otherwise shrink the latent model's steps through one shared norm."""
        return [self.world_parameters(), list(self.events.parameters())]

    def inputs(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """latents (…, D), actions (…, K) full-action ids (or (…) when K is 1) → GRU inputs
        (…, D + K × A)."""
        if self.frames_per_step == 1 and actions.dim() == latents.dim() - 1:
            actions = actions.unsqueeze(-1)
        if actions.shape != (*latents.shape[:-1], self.frames_per_step):
            raise ValueError(
                f"actions of shape {tuple(actions.shape)} for latents {tuple(latents.shape)}: "
                f"a step takes {self.frames_per_step} actions"
            )
        actions_onehot = F.one_hot(actions.long(), self.num_actions).to(latents.dtype).flatten(-2)
        return torch.cat([latents, actions_onehot], dim=-1)

    def step(
        self, latents: torch.Tensor, actions: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """latents: (B, latent_dim), actions: (B, K) full-action ids ((B,) when K is 1), hidden:
        (1, B, H) or None → next latents (B, latent_dim), hidden (1, B, H)."""
        output, hidden = self.gru(self.inputs(latents, actions).unsqueeze(1), hidden)
        return latents + self.head(output[:, 0]), hidden

    def states(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: latents (B, T, D), actions (B, T, K) ((B, T) when K is 1) → GRU
        states after each step (B, T, H)."""
        output, _ = self.gru(self.inputs(latents, actions))
        return output

    def forward(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: latents (B, T, D), actions (B, T[, K]) → predicted next latents (B, T, D)."""
        return latents + self.head(self.states(latents, actions))

    def compute_loss(
        self,
        latents: torch.Tensor,
        actions: torch.Tensor,
        reward_classes: torch.Tensor,
        game_overs: torch.Tensor,
        starts: torch.Tensor | None = None,
        *,
        sampling_prob: float,
        burn_in: int,
        generator: torch.Generator | None = None,
        reward_weights: torch.Tensor | None = None,
        game_over_weight: torch.Tensor | None = None,
        decoded: DecodedFrameLoss | None = None,
    ) -> dict[str, torch.Tensor]:
        """Scheduled sampling over a sequence, and the event heads on the states it visits.

        latents: (B, T+1, D) true latents, K frames apart; actions: (B, T, K) the actions taken
        from latents[:, t] ((B, T) when K is 1); reward_classes: (B, T) int the sign class each
        step earned; game_overs: (B, T) float, 1 where the step ended the game; starts: (B,) the
        frame index of each sequence's first latent (needed by `decoded` only). Step t's input is the true latent for t < burn_in;
        afterwards, with probability `sampling_prob` per (sequence, step), the model's own previous
        prediction instead (1: open loop after the burn-in, as the dream runs). The latent loss is
        the MSE between every prediction and the true next latent; with `decoded`, a few of the
        batch's predictions from the burn-in's last step on are also decoded and scored in
        pixels (`DecodedFrameLoss`). `loss_after_burn_in` and `loss_copy` score the steps after
        the burn-in against copying the last real latent. The heads learn from the GRU states
        detached, so they do not steer what the GRU learns: their losses are weighted
        cross-entropies (`reward_weights` per class, `game_over_weight` on game overs) that
        balance the rare events.
        """
        batch, steps = actions.shape[:2]
        use_prediction = scheduled_sampling_mask(batch, steps, sampling_prob, burn_in, generator)
        use_prediction = use_prediction.to(latents.device)
        hidden = None
        predictions, states = [], []
        previous_prediction = latents[:, 0]
        for t in range(steps):
            inputs = torch.where(use_prediction[:, t, None], previous_prediction, latents[:, t])
            previous_prediction, hidden = self.step(inputs, actions[:, t], hidden)
            predictions.append(previous_prediction)
            states.append(hidden[-1])
        predicted = torch.stack(predictions, dim=1)  # (B, T, D)
        reward_logits, game_over_logits = self.events(
            torch.stack(states, dim=1).detach()
        )  # (B, T, 3), (B, T)
        reward_loss = F.cross_entropy(
            reward_logits.float().reshape(-1, len(REWARD_SIGNS)),
            reward_classes.reshape(-1),
            weight=reward_weights,
        )
        game_over_loss = F.binary_cross_entropy_with_logits(
            game_over_logits.float(), game_overs.float(), pos_weight=game_over_weight
        )
        targets = latents[:, 1:]
        latent_loss = F.mse_loss(predicted.float(), targets.float())
        frame_loss = torch.zeros((), device=latents.device)
        if decoded is not None and decoded.samples > 0 and decoded.weight > 0:
            if starts is None:
                raise ValueError("the decoded-frame loss needs each sequence's start frame")
            rows, chosen = decoded_steps(batch, steps, burn_in, decoded.samples, generator)  # (K,) each
            rows, chosen = rows.to(latents.device), chosen.to(latents.device)
            # the stack each one predicts: K frames after the one it stepped from
            frame_index = starts.to(latents.device)[rows] + (chosen + 1) * self.frames_per_step
            frame_loss = decoded(predicted[rows, chosen].float(), frame_index)
        # After the burn-in: the model's predictions against copying the last latent it saw for real.
        after = targets[:, burn_in - 1 :].float()
        last_seen = latents[:, burn_in - 1 : burn_in].float().expand_as(after)
        frame_weight = decoded.weight if decoded is not None else 0.0
        return {
            "loss": latent_loss + frame_weight * frame_loss + reward_loss + game_over_loss,
            "latent_loss": latent_loss.detach(),
            "frame_loss": frame_loss.detach(),
            "reward_loss": reward_loss.detach(),
            "game_over_loss": game_over_loss.detach(),
            "reward_logits": reward_logits.detach(),
            "game_over_logits": game_over_logits.detach(),
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


def decoded_steps(
    batch: int, steps: int, burn_in: int, count: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` distinct (sequence, step) pairs of a batch, drawn uniformly among the predictions
    made from the last real latent on (steps burn_in - 1 … steps - 1): (k,) sequences, (k,)
    steps, k = min(count, how many there are). Why a few per batch: decoding costs about as much
    as a VAE step, far more than a GRU step."""
    first = burn_in - 1
    per_sequence = steps - first
    picked = torch.randperm(batch * per_sequence, generator=generator)[:count]
    return picked // per_sequence, picked % per_sequence + first


def sampling_prob_at(epoch: int, epochs: int, start: float, final: float, ramp: float) -> float:
    """Self-feeding probability of an epoch (1-based): `start` at the first, rising linearly to
    `final` over the first `ramp` fraction of training, then held (ramp 0: `final` throughout)."""
    if ramp <= 0 or epochs <= 1:
        return final
    progress = (epoch - 1) / (epochs - 1)
    return start + (final - start) * min(1.0, progress / ramp)
