"""An actor-critic that learns in imagination (Dreamer's recipe, for a frozen world model).

The actor and the critic read what the World Models controller reads, [latent, GRU state]. The
actor is trained by REINFORCE on λ-returns of imagined rollouts (Atari's actions are discrete,
and the returns need no gradient through the world model), normalised by the spread of the
returns as in DreamerV3; the critic regresses the same λ-returns, whose bootstrap values come
from a slow (exponential moving average) copy of it, as DreamerV2's target critic.

Everything here is a pure function of tensors or a small module, tested on hand-made numbers.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(inputs: int, outputs: int, units: int, layers: int) -> nn.Sequential:
    """`layers` hidden layers of `units`, each Linear → LayerNorm → SiLU (DreamerV3's blocks)."""
    blocks: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        blocks += [nn.Linear(width, units), nn.LayerNorm(units), nn.SiLU()]
        width = units
    blocks.append(nn.Linear(width, outputs))
    return nn.Sequential(*blocks)


class Actor(nn.Module):
    """[latent (D), GRU state (H)] → logits over the game's minimal actions (A); the same call
    as `LinearController`, so the real-game `Agent` plays either."""

    def __init__(self, latent_dim: int, state_size: int, num_actions: int, units: int, layers: int):
        super().__init__()
        self.latent_dim, self.state_size = latent_dim, state_size
        self.net = mlp(latent_dim + state_size, num_actions, units, layers)
        # a uniform first policy: the last layer starts at zero (DreamerV3 zero-initialises outputs)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, latents: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """latents (…, D), states (…, H) → logits (…, A)."""
        return self.net(torch.cat([latents, states], dim=-1))


class Critic(nn.Module):
    """[latent, GRU state] (…, F) → the expected discounted return from there (…)."""

    def __init__(self, features: int, units: int, layers: int):
        super().__init__()
        self.net = mlp(features, 1, units, layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


class LifeLossHead(nn.Module):
    """GRU state after a step (…, H) → the probability that the step lost a life (…): logistic
    regression fitted on the recorded RAM's lives counter, so a dream ends where a ball is
    missed (the world model's own game-over head sees too few game overs to say so)."""

    def __init__(self, state_size: int):
        super().__init__()
        self.linear = nn.Linear(state_size, 1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(states)).squeeze(-1)


def lambda_returns(
    rewards: torch.Tensor, continues: torch.Tensor, values: torch.Tensor, discount: float, lam: float
) -> torch.Tensor:
    """TD(λ) targets of an imagined rollout of T steps over B dreams.

    rewards (T, B): the reward of step t; continues (T, B): the probability the game goes on
    after step t; values (T + 1, B): the critic's value of every state, the last one the
    bootstrap. R_T = v_T and R_t = r_t + γ c_t ((1 − λ) v_{t+1} + λ R_{t+1}). Returns (T, B).
    """
    returns = []
    last = values[-1]
    for t in reversed(range(len(rewards))):
        last = rewards[t] + discount * continues[t] * ((1 - lam) * values[t + 1] + lam * last)
        returns.append(last)
    return torch.stack(returns[::-1])


def step_weights(continues: torch.Tensor, discount: float) -> torch.Tensor:
    """How much each imagined state counts (T, B): 1 for the first, then the product of the
    discounts and continuation probabilities before it (a state after a likely game over
    counts little)."""
    ones = torch.ones_like(continues[:1])
    return torch.cumprod(torch.cat([ones, discount * continues[:-1]]), dim=0)


class ReturnScale:
    """DreamerV3's return normalisation: the range between the 5th and 95th percentiles of the
    λ-returns, smoothed over updates; advantages are divided by max(1, range), so large
    returns are scaled down and small ones are not blown up into noise."""

    def __init__(self, decay: float):
        self.decay, self.range = decay, None

    def update(self, returns: torch.Tensor) -> float:
        flat = returns.detach().flatten().float()
        spread = float(torch.quantile(flat, 0.95) - torch.quantile(flat, 0.05))
        self.range = spread if self.range is None else self.decay * self.range + (1 - self.decay) * spread
        return max(1.0, self.range)


def actor_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    entropy_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with an entropy bonus: logits (T, B, A), the actions taken (T, B), advantages
    and weights (T, B), both treated as constants. Returns the loss and the mean entropy."""
    log_probs = torch.log_softmax(logits, dim=-1)
    taken = log_probs.gather(-1, actions[..., None]).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    objective = taken * advantages.detach() + entropy_scale * entropy
    return -(weights.detach() * objective).mean(), entropy.mean()


def critic_loss(values: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Half the weighted squared error of the critic's values (T, B) to its λ-return targets."""
    return 0.5 * (weights.detach() * (values - targets.detach()) ** 2).mean()


@torch.no_grad()
def update_slow(slow: nn.Module, fast: nn.Module, fraction: float) -> None:
    """Move each of `slow`'s weights `fraction` of the way to `fast`'s."""
    for slow_param, fast_param in zip(slow.parameters(), fast.parameters(), strict=True):
        slow_param.lerp_(fast_param, fraction)
