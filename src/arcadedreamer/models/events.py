"""Scores of the reward and game-over heads, and the majority-class baseline beside them.

Rewards and game overs are rare (a few per thousand frames), so accuracy alone flatters any
head: a head that always says "nothing happened" is right 99% of the time. The scores here are
the events' precision and recall, with that majority baseline's accuracy kept beside the head's.
"""

from __future__ import annotations

import math

import torch

from arcadedreamer.data.preprocessing import NO_REWARD, REWARD_SIGNS


def predicted_events(
    reward_probs: torch.Tensor, game_over_probs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated probabilities (…, 3) and (…) → the likeliest reward classes (…), game overs (…) bool."""
    return reward_probs.argmax(-1), game_over_probs > 0.5


def expected_rewards(reward_probs: torch.Tensor) -> torch.Tensor:
    """(…, 3) sign probabilities → (…) expected reward in units of its sign: P(+) − P(−)."""
    signs = torch.tensor(REWARD_SIGNS, dtype=reward_probs.dtype, device=reward_probs.device)
    return reward_probs @ signs


def format_score(value, digits: int = 2) -> str:
    """0.91 → "0.91"; a score with nothing to score (NaN, or None in a JSON report) → "n/a"."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative (ties count half); 0.5 for any constant score, NaN without both classes."""
    scores, labels = scores.reshape(-1).double(), labels.reshape(-1).bool()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return math.nan
    values, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    ranks = ((last - counts + 1 + last) / 2)[inverse]  # 1-based ranks, tied scores share their mean
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def reward_scores(
    predicted: torch.Tensor, true: torch.Tensor, reward_probs: torch.Tensor | None = None
) -> dict[str, float]:
    """Reward-sign classes → precision and recall of the rewarded steps (a hit needs the right
    sign), accuracy, and the accuracy of always predicting the majority class; with the
    probabilities (…, 3), the AUC of P(some reward) for telling rewarded steps apart."""
    if reward_probs is not None:
        auc = roc_auc(1 - reward_probs[..., NO_REWARD], true != NO_REWARD)
    predicted, true = predicted.reshape(-1), true.reshape(-1)
    hits = int(((predicted == true) & (true != NO_REWARD)).sum())
    counts = torch.bincount(true, minlength=len(REWARD_SIGNS))
    return {
        "reward_events": int((true != NO_REWARD).sum()),
        "reward_precision": _ratio(hits, int((predicted != NO_REWARD).sum())),
        "reward_recall": _ratio(hits, int((true != NO_REWARD).sum())),
        "reward_accuracy": _ratio(int((predicted == true).sum()), len(true)),
        "reward_majority_accuracy": _ratio(int(counts.max()), len(true)),
        **({"reward_auc": auc} if reward_probs is not None else {}),
    }


def game_over_scores(predicted: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Game-over flags → accuracy beside the majority baseline's, recall, precision, and the
    balanced accuracy (mean of the two classes' recalls: 0.5 for any constant guess)."""
    predicted, true = predicted.reshape(-1).bool(), true.reshape(-1).bool()
    positives, negatives = int(true.sum()), int((~true).sum())
    hits = int((predicted & true).sum())
    true_negatives = int((~predicted & ~true).sum())
    recall = _ratio(hits, positives)
    specificity = _ratio(true_negatives, negatives)
    return {
        "game_over_events": positives,
        "game_over_accuracy": _ratio(hits + true_negatives, len(true)),
        "game_over_majority_accuracy": _ratio(max(positives, negatives), len(true)),
        "game_over_recall": recall,
        "game_over_precision": _ratio(hits, int(predicted.sum())),
        "game_over_balanced_accuracy": (recall + specificity) / 2,  # NaN when a class is missing
    }
