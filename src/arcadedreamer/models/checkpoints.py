"""Checkpoints: plain tensors and Python values only, loaded with `weights_only=True`.

A checkpoint holds the stage, the epoch, the architecture, the model weights (a dynamics
checkpoint also holds the VAE it was trained on, so it is the whole world model), the
optimizer, scheduler and RNG state for `--resume`, the params it was trained with, the data
hash and the final metrics.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from arcadedreamer.config import Params
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_open, describe_write_failure
from arcadedreamer.models.agent import Actor
from arcadedreamer.models.controller import Agent, LinearController
from arcadedreamer.models.dynamics import Dynamics
from arcadedreamer.models.vae import VAE
from arcadedreamer.models.world_model import WorldModel

# The architecture, described once: each model's shape-setting values and the params.yaml
# section each comes from. Checkpoints store them as `arch` / `vae_arch`.
ARCH = {
    "vae": {"stack_size": "data", "frame_size": "data", "latent_dim": "vae"},
    "dynamics": {
        "latent_dim": "vae",
        "num_actions": "dynamics",
        "hidden_size": "dynamics",
        "head_size": "dynamics",
        "frames_per_step": "dynamics",
    },
}
# What a checkpoint saved before an entry existed was trained with
ARCH_DEFAULTS = {"frames_per_step": 1}


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)
    except UserError as exc:  # atomic_open's own one line
        raise UserError(f"{exc} (earlier checkpoints are intact)") from None
    except (OSError, RuntimeError) as exc:  # torch.save's writer raises RuntimeError on a full disk
        raise UserError(f"{describe_write_failure(path, exc)} (earlier checkpoints are intact)") from None


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
        # a plain pickle is refused below in one line, not after torch's advice about its protocol
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
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
    if checkpoint["stage"] not in ("vae", "dynamics", "controller", "agent"):
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
    if checkpoint["stage"] in ("controller", "agent"):
        return controller_problem(checkpoint)
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
            VAE(arch["stack_size"], arch["latent_dim"]) if kind == "vae" else dynamics_from_arch(arch)
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
        f"{section.get(name, '?')}.{name}={found.get(name, ARCH_DEFAULTS.get(name))} (params.yaml has {value})"
        for name, value in expected.items()
        if found.get(name, ARCH_DEFAULTS.get(name)) != value
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


def dynamics_from_arch(arch: dict[str, int]) -> Dynamics:
    return Dynamics(
        arch["latent_dim"],
        arch["num_actions"],
        arch["hidden_size"],
        arch["head_size"],
        arch.get("frames_per_step", ARCH_DEFAULTS["frames_per_step"]),
    )


# What a controller checkpoint keeps of the dynamics checkpoint it dreamt with: the world model.
WORLD_MODEL_ENTRIES = ("stage", "epoch", "arch", "model", "vae", "vae_arch", "mean_frames", "data_hash")


def save_policy(
    path: Path,
    stage: str,
    weights: dict,
    arch: dict,
    play: dict,
    world_checkpoint: dict,
    world_checkpoint_path: Path,
    summary: dict,
    run_id: str,
    **extra,
) -> Path:
    """A controller or agent checkpoint: the policy, how it plays (`play`: game, action_ids,
    action_choice, epsilon), and the world model it dreamt with, so that it is a whole agent."""
    save_checkpoint(
        path,
        {
            "stage": stage,
            "model": weights,
            **extra,
            "arch": arch,
            **play,
            "world_model": {k: world_checkpoint[k] for k in WORLD_MODEL_ENTRIES},
            "world_model_checkpoint": str(world_checkpoint_path),
            "metrics": {k: v for k, v in summary.items() if isinstance(v, (int, float))},
            "mlflow_run_id": run_id,
        },
    )
    return path


def controller_arch(controller: LinearController) -> dict[str, int]:
    width, actions = controller.linear.in_features, controller.linear.out_features
    return {"features": width, "num_actions": actions}


def policy_arch(actor: Actor) -> dict[str, int]:
    """An agent's actor: its features and actions, and the width and depth of its layers."""
    first, last = actor.net[0], actor.net[-1]
    layers = sum(isinstance(m, torch.nn.LayerNorm) for m in actor.net)
    return {
        "features": first.in_features,
        "num_actions": last.out_features,
        "units": first.out_features,
        "layers": layers,
    }


def policy_from_arch(stage: str, arch: dict[str, int], latent_dim: int) -> LinearController | Actor:
    """The policy a controller or agent checkpoint describes, with fresh weights."""
    state_size = arch["features"] - latent_dim
    if stage == "agent":
        return Actor(latent_dim, state_size, arch["num_actions"], arch["units"], arch["layers"])
    return LinearController(latent_dim, state_size, arch["num_actions"])


def controller_problem(checkpoint: dict) -> str | None:
    arch, weights = checkpoint.get("arch"), checkpoint.get("model")
    names = ("features", "num_actions") + (("units", "layers") if checkpoint["stage"] == "agent" else ())
    if not isinstance(arch, dict) or not all(
        type(arch.get(k)) is int and 0 < arch[k] <= 65_536 for k in names
    ):
        return f"'arch' must give positive integers {', '.join(names)}"
    if arch.get("layers", 1) > 16 or arch["num_actions"] > 18:
        return "'arch' gives more layers (16) or actions (18) than a policy has"
    policy = "an agent's actor" if checkpoint["stage"] == "agent" else "a linear controller"
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return f"'model' does not hold {policy}'s weights"
    # the shapes an architecture of this width implies (the latent's share does not change them)
    expected = policy_from_arch(checkpoint["stage"], arch, 0).state_dict()
    if set(weights) != set(expected):
        return f"'model' does not hold {policy}'s weights"
    for name, tensor in expected.items():
        if weights[name].shape != tensor.shape:
            return (
                f"'model.{name}' has shape {tuple(weights[name].shape)}, its arch needs {tuple(tensor.shape)}"
            )
    actions = checkpoint.get("action_ids")
    if (
        not isinstance(actions, list)
        or len(actions) != arch["num_actions"]
        or not all(type(a) is int and 0 <= a < 18 for a in actions)
    ):
        return "'action_ids' must list one ALE action id (0-17) per controller action"
    if checkpoint.get("action_choice") not in ("sample", "argmax"):
        return "'action_choice' must be sample or argmax"
    epsilon = checkpoint.get("epsilon", 0.0)
    if type(epsilon) is not float or not 0.0 <= epsilon <= 1.0:
        return "'epsilon' must be a number from 0 to 1"
    world = checkpoint.get("world_model")
    if not isinstance(world, dict) or world.get("stage") != "dynamics" or "model" not in world:
        return "'world_model' is missing or not a dynamics checkpoint"
    if not isinstance(checkpoint.get("game"), str):
        return "'game' is missing"
    problem = schema_problem(world)
    if problem:
        return f"world_model: {problem}"
    latent, state = world["arch"]["latent_dim"], world["arch"]["hidden_size"]
    if arch["features"] not in (latent, latent + state):
        return (
            f"the controller reads {arch['features']} features, its world model gives "
            f"{latent} (latent) or {latent + state} (latent and state)"
        )
    return None


def load_controller(path: str | Path) -> tuple[LinearController | Actor, WorldModel, dict]:
    """A controller or agent checkpoint → (its policy, the world model it dreamt with, checkpoint)."""
    if not Path(path).exists():
        raise UserError(
            f"{path}: no controller or agent; train one with `arcadedreamer controller` or `arcadedreamer agent` "
            "(or `dvc repro`)"
        )
    checkpoint = load_checkpoint(path)
    if checkpoint["stage"] not in ("controller", "agent"):
        raise UserError(
            f"{path}: is a {checkpoint['stage']} checkpoint, expected a controller or agent checkpoint"
        )
    world_model = world_model_from_checkpoint(checkpoint["world_model"])
    policy = policy_from_arch(checkpoint["stage"], checkpoint["arch"], world_model.vae.latent_dim)
    policy.load_state_dict(checkpoint["model"])
    return policy.eval(), world_model, checkpoint


def load_player(path: str | Path, seed: int = 0) -> tuple[Agent, dict]:
    """A controller or agent checkpoint as a policy of the real game, acting as its stage scored
    it (its world model, its way of choosing, its ε); and the checkpoint."""
    policy, world_model, checkpoint = load_controller(path)
    return Agent.from_checkpoint(policy, world_model, checkpoint, seed), checkpoint


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
    dynamics = dynamics_from_arch(checkpoint["arch"])
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
) -> tuple[int, str | None, Path, float]:
    """`--resume`: load the stage's latest checkpoint into the training objects.

    Returns (epoch it ended, its MLflow run id, its path, the seconds of training it holds).
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
    return state["epoch"], state.get("mlflow_run_id"), path, float(state.get("train_seconds", 0.0))


def newest_checkpoint(params: Params, stage: str) -> Path | None:
    """The highest-epoch checkpoint of `stage` on disk, whatever the configured epochs."""
    found = []
    for path in stage_dir(params, stage).glob(f"{stage}_epoch_*.pt"):
        match = re.fullmatch(rf"{stage}_epoch_(\d+)\.pt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def resolve_world_model(model: str | Path | None, params: Params) -> Path:
    """A checkpoint path, a `models:/…` URI, or by default the registry's @champion.

    Why no silent stand-in: a champion that is set but cannot be loaded (its version or files
    gone) is an error naming it, or a dream would quietly come from another model. Only where
    no champion exists yet (nothing evaluated) does the newest registered version, else the
    newest dynamics checkpoint on disk, stand in — said on stderr.
    """
    import sys

    from arcadedreamer import tracking

    if model is not None and not str(model).startswith("models:/"):
        return Path(model)
    if model is not None:
        return tracking.resolve_model_checkpoint(str(model), params)
    name = tracking.DYNAMICS_MODEL
    tracking.connect(params)
    champion = tracking.alias_version(name, "champion")
    if champion is not None:
        uri = f"models:/{name}@champion"
        try:
            return tracking.resolve_model_checkpoint(uri, params)
        except tracking.TrackingError:
            raise
        except UserError as exc:
            raise UserError(
                f"{uri} is version {champion['version']}, which cannot be loaded ({str(exc)[:160]}); "
                f"point @champion at a good version (`arcadedreamer evaluate --model PATH` promotes one) "
                "or pass --model PATH"
            ) from None
    latest = tracking.latest_version(name)
    if latest is not None:
        print(
            f"note: {name} has no @champion yet (nothing evaluated): using version {latest}, the newest "
            "registered; `arcadedreamer evaluate` chooses a champion",
            file=sys.stderr,
        )
        return tracking.resolve_model_checkpoint(f"models:/{name}/{latest}", params)
    newest = newest_checkpoint(params, "dynamics")
    if newest is not None:
        print(f"note: nothing is registered as {name}: using {newest}, the newest on disk", file=sys.stderr)
        return newest
    raise UserError(
        f"no world model: nothing registered as {name} and no checkpoint in {stage_dir(params, 'dynamics')}; "
        "train one with `make quickstart` (or `arcadedreamer train --stage dynamics`)"
    )
