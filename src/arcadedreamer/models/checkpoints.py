"""Checkpoints: plain tensors and Python values only, loaded with `weights_only=True`.

A checkpoint holds the stage, the epoch, the architecture, the model weights (a dynamics
checkpoint also holds the VAE it was trained on, so it is the whole world model), the
optimizer, scheduler and RNG state for `--resume`, the params it was trained with, the data
hash and the final metrics.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from arcadedreamer.config import Params
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_open
from arcadedreamer.models.dynamics import Dynamics
from arcadedreamer.models.vae import VAE
from arcadedreamer.models.world_model import WorldModel

# The architecture, described once: each model's shape-setting values and the params.yaml
# section each comes from. Checkpoints store them as `arch` / `vae_arch`.
ARCH = {
    "vae": {"stack_size": "data", "frame_size": "data", "latent_dim": "vae"},
    "dynamics": {"latent_dim": "vae", "num_actions": "dynamics", "hidden_size": "dynamics"},
}


def arch_of(params: Params, model: str) -> dict[str, int]:
    return {name: getattr(getattr(params, section), name) for name, section in ARCH[model].items()}


def vae_arch(params: Params) -> dict[str, int]:
    return arch_of(params, "vae")


def dynamics_arch(params: Params) -> dict[str, int]:
    return arch_of(params, "dynamics")


def stage_dir(params: Params, stage: str) -> Path:
    return Path(params.training.checkpoint_dir) / stage


def checkpoint_path(params: Params, stage: str, epoch: int) -> Path:
    return stage_dir(params, stage) / f"{stage}_epoch_{epoch}.pt"


def final_checkpoint_path(params: Params, stage: str) -> Path:
    epochs = params.vae.epochs if stage == "vae" else params.dynamics.epochs
    return checkpoint_path(params, stage, epochs)


def latest_checkpoint(params: Params, stage: str) -> Path | None:
    """The highest-epoch checkpoint of `stage` not beyond the configured epochs."""
    epochs = params.vae.epochs if stage == "vae" else params.dynamics.epochs
    found = []
    for path in stage_dir(params, stage).glob(f"{stage}_epoch_*.pt"):
        match = re.fullmatch(rf"{stage}_epoch_(\d+)\.pt", path.name)
        if match and int(match.group(1)) <= epochs:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        torch.save(checkpoint, handle)


def load_checkpoint(path: str | Path, stage: str | None = None) -> dict:
    """Load safely; every way a file can be wrong becomes a one-line `UserError`."""
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"{path}: checkpoint not found; train one with `arcadedreamer train --stage {stage or 'vae'}`"
        )
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the path of a .pt checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path}: refused: it is not a plain-tensor checkpoint (loading uses weights_only=True "
            "and never runs pickled code)"
        ) from None
    except Exception as exc:  # torch.load raises many types (KeyError, RuntimeError, …) for other files
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise UserError(
            f"{path}: corrupt or truncated checkpoint ({reason}); retrain or restore it"
        ) from None
    if not isinstance(checkpoint, dict) or "stage" not in checkpoint or "model" not in checkpoint:
        raise UserError(f"{path}: not an ArcadeDreamer checkpoint (no stage/model entries)")
    if checkpoint["stage"] not in ("vae", "dynamics"):
        raise UserError(
            f"{path}: unknown stage {str(checkpoint['stage'])[:40]!r}; not an ArcadeDreamer checkpoint"
        )
    if stage is not None and checkpoint["stage"] != stage:
        raise UserError(f"{path}: is a {checkpoint['stage']} checkpoint, expected a {stage} checkpoint")
    problem = schema_problem(checkpoint)
    if problem:
        raise UserError(f"{path}: damaged checkpoint: {problem}; retrain or restore it")
    return checkpoint


def schema_problem(checkpoint: dict) -> str | None:
    """What is wrong with a loaded checkpoint's layout, or None: every entry the loaders read,
    with its type, and weights whose names and shapes are those of the architecture it states."""
    parts = [("arch", "model", checkpoint["stage"])]
    if checkpoint["stage"] == "dynamics":
        parts.append(("vae_arch", "vae", "vae"))
    for arch_key, weights_key, kind in parts:
        arch = checkpoint.get(arch_key)
        if not isinstance(arch, dict):
            return f"'{arch_key}' is missing or not a mapping"
        for name in ARCH[kind]:
            value = arch.get(name)
            if type(value) is not int or not 0 < value <= 65_536:
                return f"{arch_key}.{name} is {str(value)[:40]!r}, not a positive integer"
        weights = checkpoint.get(weights_key)
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            return f"'{weights_key}' is missing or not a mapping of tensors"
        expected = (
            VAE(arch["stack_size"], arch["latent_dim"])
            if kind == "vae"
            else Dynamics(arch["latent_dim"], arch["num_actions"], arch["hidden_size"])
        ).state_dict()
        if set(weights) != set(expected):
            missing = sorted(set(expected) - set(weights)) or sorted(set(weights) - set(expected))
            return f"'{weights_key}' does not hold the {kind} model's weights (e.g. {missing[0]})"
        for name, tensor in expected.items():
            if weights[name].shape != tensor.shape:
                return (
                    f"'{weights_key}.{name}' has shape {tuple(weights[name].shape)}, "
                    f"its architecture needs {tuple(tensor.shape)}"
                )
    means = checkpoint.get("mean_frames")
    if not isinstance(means, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.dim() == 2 for k, v in means.items()
    ):
        return "'mean_frames' is missing or not a mapping of game → 2-D tensor"
    if type(checkpoint.get("epoch")) is not int:
        return "'epoch' is missing or not an integer"
    return None


def check_arch(checkpoint: dict, expected: dict[str, int], path: str | Path, key: str = "arch") -> None:
    found = checkpoint.get(key, {})
    section = {**ARCH["vae"], **ARCH["dynamics"]}
    diffs = [
        f"{section.get(name, '?')}.{name}={found.get(name)} (params.yaml has {value})"
        for name, value in expected.items()
        if found.get(name) != value
    ]
    if diffs:
        raise UserError(
            f"{path}: architecture does not match params.yaml: trained with {', '.join(diffs)}; "
            "use matching params or retrain"
        )


def check_trained_on(checkpoint: dict, game: str, path: str | Path) -> None:
    """A world model knows the games it was trained on; it dreams no other."""
    games = list(checkpoint["mean_frames"])
    if game not in games:
        raise UserError(
            f"{path}: this model was trained on {', '.join(games)}, not {game}; choose one of those "
            "games or train on it (data.games in params.yaml)"
        )


def vae_from_checkpoint(checkpoint: dict) -> VAE:
    state, arch = (
        (checkpoint["model"], checkpoint["arch"])
        if checkpoint["stage"] == "vae"
        else (checkpoint["vae"], checkpoint["vae_arch"])
    )
    vae = VAE(arch["stack_size"], arch["latent_dim"])
    vae.load_state_dict(state)
    return vae.eval()


def world_model_from_checkpoint(checkpoint: dict) -> WorldModel:
    if checkpoint["stage"] != "dynamics":
        raise UserError("a world model needs a dynamics checkpoint (it holds the VAE too)")
    arch = checkpoint["arch"]
    dynamics = Dynamics(arch["latent_dim"], arch["num_actions"], arch["hidden_size"])
    dynamics.load_state_dict(checkpoint["model"])
    return WorldModel(vae_from_checkpoint(checkpoint), dynamics.eval()).eval()


def load_world_model(path: str | Path, params: Params | None = None) -> tuple[WorldModel, dict]:
    """A dynamics checkpoint → (WorldModel, checkpoint), checked against params when given."""
    checkpoint = load_checkpoint(path, stage="dynamics")
    if params is not None:
        check_arch(checkpoint, dynamics_arch(params), path)
        check_arch(checkpoint, vae_arch(params), path, key="vae_arch")
    return world_model_from_checkpoint(checkpoint), checkpoint


def restore_training_state(
    params: Params,
    stage: str,
    arch: dict[str, int],
    model,
    optimizer,
    scheduler,
    generators: dict[str, torch.Generator],
) -> tuple[int, str | None, Path]:
    """`--resume`: load the stage's latest checkpoint into the training objects.

    Returns (epoch it ended, its MLflow run id, its path).
    """
    path = latest_checkpoint(params, stage)
    if path is None:
        raise UserError(
            f"--resume: no {stage} checkpoint in {stage_dir(params, stage)}; train without --resume"
        )
    state = load_checkpoint(path, stage=stage)
    check_arch(state, arch, path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for name, generator in generators.items():
        generator.set_state(state["rng"][name].to(generator.get_state().device))
    return state["epoch"], state.get("mlflow_run_id"), path
