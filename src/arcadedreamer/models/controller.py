"""The World Models controller: one linear map from what the world model knows to an action.

Ha & Schmidhuber's controller reads the VAE latent z_t and the RNN state h_t and is trained by
CMA-ES, which only ever sees returns, so it needs no gradients and few parameters: here
(latent_dim + hidden_size + 1) × actions, the game's own (minimal) actions. Ha & Schmidhuber's
actions were continuous (tanh); for Atari's discrete ones the controller's logits are sampled
(`controller.action_choice: sample`), so the search starts from the random policy and leaves it
only where the dream pays for it, or their argmax is taken.
"""

from __future__ import annotations

import torch
from torch import nn

from arcadedreamer.models.world_model import WorldModel


class LinearController(nn.Module):
    """[latent (D), GRU state (H)] → logits over the game's minimal actions (A); with
    state_size 0 it reads the latent alone (World Models' "V only" controller)."""

    def __init__(self, latent_dim: int, state_size: int, num_actions: int):
        super().__init__()
        self.latent_dim, self.state_size = latent_dim, state_size
        self.linear = nn.Linear(latent_dim + state_size, num_actions)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, latents: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """latents (B, D), states (B, H) → action logits (B, A)."""
        return self.linear(torch.cat([latents, states], dim=-1) if self.state_size else latents)

    def load_flat(self, flat: torch.Tensor) -> LinearController:
        """Set every weight from one vector (CMA-ES's solution): weight rows, then the bias."""
        torch.nn.utils.vector_to_parameters(flat.to(self.linear.weight.dtype), self.parameters())
        return self


def sample_actions(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw from softmax(logits (…, A)) by inverting its CDF at `uniforms` (…) in [0, 1).

    Why not torch.multinomial: here the caller chooses the random numbers, so CMA-ES candidates
    can share them (common random numbers: candidates differ by their weights, not their luck).
    """
    cumulative = torch.softmax(logits.float(), dim=-1).cumsum(-1)
    return (
        torch.searchsorted(cumulative, uniforms[..., None].float().contiguous())
        .squeeze(-1)
        .clamp(max=logits.shape[-1] - 1)
    )


def explore(
    chosen: torch.Tensor, epsilon: float, draws: torch.Tensor, random_actions: torch.Tensor
) -> torch.Tensor:
    """ε-exploration: where a draw (…) in [0, 1) falls below `epsilon`, a uniformly random action
    (`random_actions`, …) replaces the chosen one (…). The caller draws both, so CMA-ES
    candidates can share them as they share `sample_actions`' uniforms.

    Why: a controller that never needed an action in the dream never takes it in the game;
    Breakout's serve (FIRE) is one, as dreams start with the ball in play. DQN's evaluation
    plays with ε = 0.05 for the same reason.
    """
    return torch.where(draws < epsilon, random_actions, chosen)


def exploration_draws(
    count: int, num_actions: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random numbers `explore` needs for `count` choices: draws (count,) in [0, 1) and
    uniformly random action indices (count,)."""
    draws = torch.rand(count, generator=generator)
    return draws, torch.randint(num_actions, (count,), generator=generator)


def population_logits(flat_weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Many controllers at once: flat_weights (P, A·F + A) in `load_flat`'s layout, features
    (P, R, F) for R rollouts each → logits (P, R, A)."""
    population, _, width = features.shape
    actions = flat_weights.shape[1] // (width + 1)
    weight = flat_weights[:, : actions * width].reshape(population, actions, width)
    bias = flat_weights[:, actions * width :]
    return torch.einsum("prf,paf->pra", features, weight) + bias[:, None, :]


class Agent:
    """A controller acting in the real game: it feeds the world model's GRU the latent of each
    real frame stack and the actions it took, as in its dream (its own state, apart from any
    other use of the model). It chooses as it was trained to: the argmax, or a draw from the
    softmax of its logits, and with probability `epsilon` a uniformly random action (seeded).
    With a world model of K frames a step it chooses every K-th frame and holds the action for
    the K, as its dream did."""

    def __init__(
        self,
        controller: LinearController,
        model: WorldModel,
        action_ids: tuple[int, ...],
        choice: str = "sample",
        seed: int = 0,
        epsilon: float = 0.0,
    ):
        self.controller, self.model = controller.eval(), model.eval()
        self.action_ids = torch.tensor(action_ids)  # minimal action index → ALE full-action id
        self.choice, self.epsilon = choice, epsilon
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    @classmethod
    def from_checkpoint(
        cls, controller: LinearController, model: WorldModel, checkpoint: dict, seed: int = 0
    ):
        """As the controller stage trained and scored it (checkpoints before ε: none)."""
        return cls(
            controller,
            model,
            tuple(checkpoint["action_ids"]),
            checkpoint["action_choice"],
            seed,
            checkpoint.get("epsilon", 0.0),
        )

    def reset(self) -> None:
        self.hidden: torch.Tensor | None = None
        self.frame = 0  # frames played since the reset
        self.held = torch.zeros(0, dtype=torch.long)  # (B,) the current step's actions
        self.step_latents: torch.Tensor | None = None  # (B, D) the stack the current step left from

    @torch.no_grad()
    def act(self, stacks: torch.Tensor) -> torch.Tensor:
        """stacks (B, 4, 64, 64) in [0, 1], the newest real frames → ALE full-action ids (B,)."""
        if self.frame % self.model.frames_per_step == 0:
            latents = self.model.encode(stacks)
            if self.step_latents is not None:  # the step just played: the GRU sees what it did
                _, self.hidden = self.model.step_held(self.step_latents, self.held, self.hidden)
            self.held, self.step_latents = self.choose(latents), latents
        self.frame += 1
        return self.held

    def choose(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, D) of the real stacks a step leaves from → ALE full-action ids (B,)."""
        states = (
            self.hidden[-1]
            if self.hidden is not None
            else torch.zeros(len(latents), self.model.dynamics.hidden_size)
        )
        logits = self.controller(latents, states)
        if self.choice == "sample":
            chosen = sample_actions(logits, torch.rand(len(logits), generator=self.generator))
        else:
            chosen = logits.argmax(-1)
        if self.epsilon > 0:
            draws, random_actions = exploration_draws(len(logits), len(self.action_ids), self.generator)
            chosen = explore(chosen, self.epsilon, draws, random_actions)
        return self.action_ids[chosen]
