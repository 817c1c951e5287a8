"""params.yaml and the pydantic models that validate it.

Every tunable lives here with the original ArcadeDreamer defaults; a wrong key or value
becomes a `UserError` with one line per problem naming the dotted key.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arcadedreamer.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_GAMES = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4"]


@functools.lru_cache(maxsize=1)
def known_game_ids() -> tuple[str, ...]:
    """Every `…NoFrameskip-v4` id that ale-py registers (its ROMs ship in the wheel)."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return tuple(sorted(i for i in gym.registry if i.endswith("NoFrameskip-v4") and "/" not in i))


def check_game_id(game: str) -> str:
    if game not in known_game_ids():
        close = [g for g in known_game_ids() if game.lower()[:4] in g.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (e.g. BreakoutNoFrameskip-v4)"
        raise ValueError(f"unknown game id '{game}'{hint}")
    return game


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    games: list[str] = Field(default_factory=lambda: list(DEFAULT_GAMES), min_length=1)
    frames_per_game: int = Field(50_000, gt=0)
    frame_size: int = Field(64, gt=0)
    stack_size: int = Field(4, gt=0)
    seed: int = Field(0, ge=0)
    num_envs: int = Field(
        8, gt=0, description="Emulators per game (emulator i replays as gymnasium reset with seed + i)."
    )
    num_workers: int = Field(
        0, ge=0, description="Emulators played at once, each in its own process (0: one per core)."
    )
    action_hold_min: int = Field(1, gt=0, description="Exploration: a random action is held ...")
    action_hold_max: int = Field(8, gt=0, description="... for a uniform number of frames.")
    max_episode_frames: int = Field(10_000, gt=0, description="Truncate longer episodes.")
    out_dir: str = "data/collected"

    @field_validator("games")
    @classmethod
    def _games_known(cls, games: list[str]) -> list[str]:
        for game in games:
            check_game_id(game)
        if len(set(games)) != len(games):
            raise ValueError("games are listed twice")
        return games

    @field_validator("frame_size")
    @classmethod
    def _frame_size_fits_vae(cls, size: int) -> int:
        if size != 64:
            raise ValueError("the VAE's four stride-2 convolutions to 4×4 need frame_size 64")
        return size

    @model_validator(mode="after")
    def _hold_range(self) -> DataConfig:
        if self.action_hold_min > self.action_hold_max:
            raise ValueError("action_hold_min must not exceed action_hold_max")
        return self


class HeldoutConfig(_Section):
    seed: int = Field(1_000_000, ge=0, description="Seeds training never uses.")
    episodes_per_game: int = Field(4, gt=0)
    frames_per_episode: int = Field(400, gt=0)
    out_dir: str = "data/heldout"


class VAEConfig(_Section):
    latent_dim: int = Field(64, gt=0)
    beta: float = Field(1e-4, ge=0)
    epochs: int = Field(50, gt=0)


class DynamicsConfig(_Section):
    hidden_size: int = Field(256, gt=0)
    num_actions: Literal[18] = 18
    epochs: int = Field(100, gt=0)
    scheduled_sampling_prob: float = Field(0.5, ge=0, le=1)
    seq_len: int = Field(32, gt=1, description="Latent steps per training sequence.")
    context: int = Field(4, gt=0, description="Leading steps always fed the true latent.")

    @model_validator(mode="after")
    def _context_fits(self) -> DynamicsConfig:
        if self.context >= self.seq_len:
            raise ValueError("context must be shorter than seq_len")
        return self


class TrainingConfig(_Section):
    """Optimisation. Large batches (GPU): raise batch_size, set lr_scaling (sqrt suits Adam,
    linear is the classic SGD rule) and keep warmup_steps; the effective lr is logged."""

    batch_size: int = Field(128, gt=0)
    lr: float = Field(3e-4, gt=0)
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="Scale lr by batch_size / lr_reference_batch (linear) or its root (sqrt)."
    )
    lr_reference_batch: int = Field(128, gt=0, description="The batch size `lr` was tuned for.")
    weight_decay: float = Field(1e-5, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(500, ge=0, description="Linear learning-rate warm-up (optimizer steps).")
    checkpoint_every: int = Field(10, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(0, ge=0, description="torch CPU threads (0: torch's default).")
    compile: bool = Field(False, description="torch.compile the model (slower on CPU: see README).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16 autocast: auto = on the GPU only; fp32 = never; bf16 = also on the CPU."
    )
    checkpoint_dir: str = "checkpoints"
    metrics_dir: str = "metrics"


OBJECT_METRICS = ("ball_recall", "false_ball_rate", "player_error")  # evaluation/objects.py


class EvaluationConfig(_Section):
    horizons: int = Field(50, gt=0, description="Open-loop steps scored: 1…horizons.")
    context: int = Field(8, gt=0, description="Real latents fed before going open loop.")
    window_stride: int = Field(
        8, ge=0, description="Frames between evaluation windows' starts (0: windows do not overlap)."
    )
    headline_horizons: list[int] = Field(default_factory=lambda: [1, 10, 50])
    promote_on: str = Field("psnr_h10_gain", description="eval.json key averaged over games.")
    ball_tolerance: int = Field(2, ge=0, le=8, description="Frame pixels a drawn ball may be off.")
    ball_visibility: float = Field(
        0.5, gt=0, le=1, description="Fraction of the true ball's brightness a drawn ball needs."
    )
    metrics_file: str = "metrics/eval.json"
    plots_dir: str = "plots"

    def headline_keys(self) -> list[str]:
        """Every per-game key of eval.json that `promote_on` may name."""
        horizons = self.headline_horizons
        keys = [f"psnr_h{h}_{kind}" for h in horizons for kind in ("gain", "model")]
        keys += [
            f"{m}_h{h}_{who}" for m in OBJECT_METRICS for h in horizons for who in ("model", "copy_last")
        ]
        return keys + ["recon_gain_over_mean_frame", "recon_psnr"] + [f"recon_{m}" for m in OBJECT_METRICS]

    @model_validator(mode="after")
    def _headline_within(self) -> EvaluationConfig:
        for h in self.headline_horizons:
            if not 1 <= h <= self.horizons:
                raise ValueError(f"headline horizon {h} is outside 1…{self.horizons}")
        scores = self.headline_keys()
        if self.promote_on not in scores:
            raise ValueError(
                f"promote_on '{self.promote_on}' is not a headline score; choose one of {', '.join(scores)}"
            )
        return self


class DreamConfig(_Section):
    game: str = "BreakoutNoFrameskip-v4"
    actions: str = Field("", description="Comma-separated names or minimal-set numbers.")
    steps: int = Field(60, gt=0, description="Random actions when `actions` is empty.")
    episode: int = Field(0, ge=0)
    start: int = Field(0, ge=0)
    seed: int = Field(0, ge=0)
    upscale: int = Field(4, ge=1)
    fps: int = Field(15, gt=0)
    out_dir: str = "outputs"

    @field_validator("game")
    @classmethod
    def _game_known(cls, game: str) -> str:
        return check_game_id(game)


class PlayConfig(_Section):
    fps: int = Field(30, gt=0)
    scale: int = Field(6, ge=1)


class TrackingConfig(_Section):
    uri: str = Field("sqlite:///mlflow.db", description="MLFLOW_TRACKING_URI overrides it.")
    experiment: str = "arcadedreamer"
    register_models: bool = True


class Params(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    heldout: HeldoutConfig = Field(default_factory=HeldoutConfig)
    vae: VAEConfig = Field(default_factory=VAEConfig)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    dream: DreamConfig = Field(default_factory=DreamConfig)
    play: PlayConfig = Field(default_factory=PlayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _heldout_seeds_unused_by_training(self) -> Params:
        train = set(range(self.data.seed, self.data.seed + self.data.num_envs))
        held = set(range(self.heldout.seed, self.heldout.seed + self.heldout.episodes_per_game))
        if train & held:
            raise ValueError("heldout.seed range overlaps the seeds data.seed gives training")
        needed = self.data.stack_size + self.evaluation.context + self.evaluation.horizons
        if self.heldout.frames_per_episode < needed:
            raise ValueError(
                f"heldout.frames_per_episode must be at least stack_size + evaluation.context"
                f" + evaluation.horizons = {needed}"
            )
        return self

    def flat(self) -> dict[str, object]:
        """`{"vae.latent_dim": 64, …}`: the form MLflow logs."""
        out: dict[str, object] = {}
        for section, values in self.model_dump().items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] not in ("value_error", "assertion_error") and "input" in err:
                msg += f" (got {err['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"{source}: expected a mapping of sections (data:, vae:, …), got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_errors(source, exc)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; run from the project root or pass --params PATH")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; pass the params YAML file with --params PATH")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; pass the params YAML file") from None
    return parse_params(raw, source=str(path))
