"""Rounds of real play (`agent.rounds`): where each round lives on disk and when it is done.

Round 0 is the agent trained in the dream of the pipeline's world model. Round r ≥ 1: the agent
of round r − 1 (with its ε) plays `agent.round_episodes` whole real games, recorded in collect's
layout under `<agent.out_dir>/rounds/round_r/data/<game>/`; the world model of round r − 1 is
fine-tuned on the collected data and every round's recordings so far (`checkpoints/dynamics/`); the agent
goes on learning in that dream. A round's folder appears whole (it is staged, then renamed) and
holds `round.json`, whose fingerprint names everything the round follows from: the settings
(the data, model, training and agent sections, but `agent.rounds` and where the agent's
outputs go), the pipeline's world model and the round's number. A finished round whose fingerprint matches is read back, not run again, so
raising `agent.rounds` by one runs only the new round.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from arcadedreamer.config import Params
from arcadedreamer.fileio import atomic_write_json, sha256_file
from arcadedreamer.models import checkpoints as ckpt

ROUND_FILE = "round.json"
POLICY_FILE = "agent.pt"  # the round's agent as `play --agent` loads it, and what it goes on learning from


def round_dir(params: Params, index: int) -> Path:
    return Path(params.agent.out_dir) / "rounds" / f"round_{index}"


def data_dir(folder: Path) -> Path:
    """A round's recordings: a root holding <game>/ as data.out_dir does."""
    return folder / "data"


def world_model_path(params: Params, folder: Path) -> Path:
    """The world model fine-tuned in a round (round ≥ 1)."""
    return folder / "checkpoints" / "dynamics" / f"dynamics_epoch_{params.agent.round_dynamics_epochs}.pt"


FOLLOWS_FROM = ("data", "heldout", "vae", "dynamics", "training", "agent")  # params.yaml's sections


def fingerprint(params: Params, model_path: Path, index: int) -> str:
    dump = params.model_dump(mode="json")
    settings = {section: dump[section] for section in FOLLOWS_FROM}
    for where_or_how_many in ("rounds", "out_dir", "metrics_file"):  # not what a round computes
        settings["agent"].pop(where_or_how_many)
    settings["context"] = params.evaluation.context  # the stacks that warm a dream up
    text = json.dumps(
        {"settings": settings, "world_model": sha256_file(model_path), "round": index}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def finished(folder: Path, key: str) -> dict | None:
    """The summary of a finished round with this fingerprint, else None (to be run)."""
    try:
        record = json.loads((folder / ROUND_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != key:
        return None
    if not (folder / POLICY_FILE).exists():
        return None
    return record.get("summary")


def mark_finished(folder: Path, key: str, summary: dict) -> None:
    atomic_write_json(folder / ROUND_FILE, {"fingerprint": key, "summary": summary})


def learner_state(learner) -> dict:
    """What a round's agent.pt holds beside the actor, to go on learning in the next round."""
    return {
        "critic": learner.critic.state_dict(),
        "slow_critic": learner.slow_critic.state_dict(),
        "actor_optimizer": learner.actor_optimizer.state_dict(),
        "critic_optimizer": learner.critic_optimizer.state_dict(),
        "return_range": learner.scale.range,
    }


def load_learner(path: Path, learner) -> None:
    state = ckpt.load_checkpoint(path, stage="agent")
    learner.actor.load_state_dict(state["model"])
    learner.critic.load_state_dict(state["critic"])
    learner.slow_critic.load_state_dict(state["slow_critic"])
    learner.actor_optimizer.load_state_dict(state["actor_optimizer"])
    learner.critic_optimizer.load_state_dict(state["critic_optimizer"])
    learner.scale.range = state["return_range"]


def round_generator(seed: int, index: int) -> torch.Generator:
    """Each round draws from its own seed: a round run later reads what it would have read in one go."""
    return torch.Generator().manual_seed(seed * 1009 + index)
