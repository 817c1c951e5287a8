"""params.yaml and the pydantic models that validate it.

Every tunable lives here with the original ArcadeDreamer defaults; a wrong key or value
becomes a `UserError` with one line per problem naming the dotted key.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from arcadedreamer.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_GAMES = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4"]
MAX_PARAMS_BYTES = 1 << 20  # a params file is a few kB; refuse to read more than 1 MiB

# Upper bounds a real run could need, generous but finite, so a typo fails at once, not after
# an allocation of terabytes or an epoch of work.
MAX_FRAMES = 5_000_000  # frames per game: 20 GB of 64×64 frames
MAX_SEED = 2**31 - 1  # ALE's seeds are signed 32-bit
MAX_EPOCHS = 100_000
MAX_WIDTH = 8192  # latent and hidden sizes
MAX_BATCH = 65_536
MAX_STEPS = 100_000  # horizons, sequence lengths, dream steps, warm-up steps per thousand
MAX_PATH = 4096
MAX_DREAMS = 65_536  # dreams stepped in one batch by the controller stage: ~100 MB of GRU state
MAX_DREAM_STEPS = 10_000  # imagined steps (and --actions): a 10 000-frame GIF is already 6 minutes


def _check_path(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("contains a NUL byte")
    if len(value) > MAX_PATH:
        raise ValueError(f"is longer than {MAX_PATH} characters")
    return value


PathStr = Annotated[str, AfterValidator(_check_path)]


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


GameId = Annotated[str, AfterValidator(check_game_id)]

# The real-game scoring keys the controller and the agent share: the same games for both
Contexts = Annotated[
    Literal["training", "heldout"],
    Field(description="Whose real frames start the dreams: data.out_dir or heldout.out_dir."),
]
EvalEpisodes = Annotated[int, Field(ge=2, le=10_000, description="Seeded real episodes per policy.")]
EvalMaxFrames = Annotated[
    int, Field(gt=0, le=MAX_FRAMES, description="A real episode is cut (truncated) after this many frames.")
]
EvalSeed = Annotated[int, Field(ge=0, le=MAX_SEED, description="Real episode i is reset with eval_seed + i.")]
ConstantBaselines = Annotated[
    bool,
    Field(description="Also play each of the game's actions held every frame (with ε) in the real game."),
]


def _scored_seeds_fit(section) -> None:
    if section.eval_seed + section.eval_episodes - 1 > MAX_SEED:
        raise ValueError(f"eval_seed + eval_episodes must stay within {MAX_SEED}")


class _Section(BaseModel):
    # strict: no bools for ints, no strings for numbers; floats must be finite
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class DataConfig(_Section):
    games: list[str] = Field(
        default_factory=lambda: list(DEFAULT_GAMES),
        min_length=1,
        max_length=64,
        description="The games to collect and train on (ALE's `…NoFrameskip-v4` ids).",
    )
    frames_per_game: int = Field(50_000, gt=0, le=MAX_FRAMES, description="Frames collected per game.")
    frame_size: int = Field(
        64, gt=0, le=1024, description="Side of the stored grayscale frames (64: the VAE's layers need it)."
    )
    stack_size: int = Field(4, gt=0, le=64, description="Frames per stack the VAE encodes.")
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Emulator i of a game replays as gymnasium's reset with this seed + i.",
    )
    num_envs: int = Field(
        8,
        gt=0,
        le=4096,
        description="Emulators per game (emulator i replays as gymnasium reset with seed + i).",
    )
    num_workers: int = Field(
        0, ge=0, le=1024, description="Emulators played at once, each in its own process (0: one per core)."
    )
    action_hold_min: int = Field(1, gt=0, le=10_000, description="Exploration: a random action is held ...")
    action_hold_max: int = Field(8, gt=0, le=10_000, description="... for a uniform number of frames.")
    max_episode_frames: int = Field(10_000, gt=0, le=1_000_000, description="Truncate longer episodes.")
    out_dir: PathStr = Field("data/collected", description="Where collect writes each game's recording.")

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
    seed: int = Field(1_000_000, ge=0, le=MAX_SEED, description="Seeds training never uses.")
    episodes_per_game: int = Field(4, gt=0, le=1000, description="Pinned evaluation episodes per game.")
    frames_per_episode: int = Field(400, gt=0, le=100_000, description="Each held-out episode's length.")
    out_dir: PathStr = Field(
        "data/heldout", description="Where the held-out episodes live (pinned by data.dvc)."
    )


class VAEConfig(_Section):
    latent_dim: int = Field(64, gt=0, le=MAX_WIDTH, description="Size of the latent a stack is encoded into.")
    beta: float = Field(
        1e-4,
        ge=0,
        le=1e6,
        description="Weight of the KL term (summed over latent dims) beside the summed reconstruction term.",
    )
    epochs: int = Field(50, gt=0, le=MAX_EPOCHS, description="VAE training epochs.")
    loss: Literal["bce", "sse"] = Field(
        "bce", description="Reconstruction term: bce (keeps the ball) or sse (the original's squared error)."
    )
    input_norm: bool = Field(
        True,
        description="Standardise each input pixel by its training mean and spread (finds the ball sooner).",
    )
    surprise_weight: float = Field(
        0.5,
        ge=0,
        le=100,
        description="Weigh each pixel's loss by 1 + this × its deviation from its mean, in its own stds (0: off).",
    )


class DynamicsConfig(_Section):
    hidden_size: int = Field(256, gt=0, le=MAX_WIDTH, description="The GRU's hidden units.")
    num_actions: Literal[18] = Field(18, description="One-hot actions in: ALE's full set of 18.")
    epochs: int = Field(100, gt=0, le=MAX_EPOCHS, description="Dynamics training epochs.")
    scheduled_sampling_prob: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Per step after the burn-in: fed the model's own prediction (first epoch).",
    )
    scheduled_sampling_final: float = Field(
        0.5, ge=0, le=1, description="... rising linearly to this (1: open loop, as the dream runs) ..."
    )
    scheduled_sampling_ramp: float = Field(
        0.0, ge=0, le=1, description="... over this fraction of the epochs (0: the final value throughout)."
    )
    frames_per_step: int = Field(
        1,
        ge=1,
        le=64,
        description="Frames one GRU step imagines: its input is that many one-hot actions, its output "
        "the latent of the stack they lead to (1: the original, one step a frame; 4: as SimPLe, IRIS, "
        "DreamerV3). At most data.stack_size.",
    )
    seq_len: int = Field(32, gt=1, le=MAX_STEPS, description="Latent steps per training sequence.")
    burn_in: int = Field(
        4,
        gt=0,
        le=MAX_STEPS,
        description="Leading steps of each training sequence always fed the true latent.",
    )
    sequence_stride: int = Field(
        1, gt=0, le=MAX_STEPS, description="Frames between the starts of training sequences (1: every frame)."
    )
    decoded_loss_weight: float = Field(
        0.0,
        ge=0,
        le=1e6,
        description="Predicted latents decoded and scored by the VAE's loss, this much (0: off).",
    )
    decoded_loss_samples: int = Field(
        8,
        ge=0,
        le=MAX_BATCH,
        description="Predictions per batch the decoded loss scores (each costs a decode).",
    )
    head_size: int = Field(
        128, gt=0, le=MAX_WIDTH, description="Hidden units of the reward and game-over heads."
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Added to training.seed for the dynamics alone: several dynamics seeds share one VAE.",
    )
    max_event_weight: float = Field(
        1000.0,
        ge=1,
        le=1e6,
        allow_inf_nan=False,
        description="Cap on a rare class's loss weight (rewards, game overs are balanced by frequency).",
    )

    @model_validator(mode="after")
    def _burn_in_fits(self) -> DynamicsConfig:
        if self.burn_in >= self.seq_len:
            raise ValueError("burn_in must be shorter than seq_len")
        return self


class TrainingConfig(_Section):
    """Optimisation. Large batches (GPU): raise batch_size, set lr_scaling (sqrt suits Adam,
    linear is the classic SGD rule) and keep warmup_steps; the effective lr is logged."""

    batch_size: int = Field(
        128, gt=0, le=MAX_BATCH, description="Samples per optimizer step (the global batch under torchrun)."
    )
    lr: float = Field(3e-4, gt=0, le=10, description="Adam's learning rate (see lr_scaling).")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="Scale lr by batch_size / lr_reference_batch (linear) or its root (sqrt)."
    )
    lr_reference_batch: int = Field(128, gt=0, le=MAX_BATCH, description="The batch size `lr` was tuned for.")
    weight_decay: float = Field(1e-5, ge=0, le=1, description="Adam's weight decay.")
    grad_clip: float = Field(1.0, gt=0, le=1e6, description="Gradient norm clipped to this.")
    scheduler: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning rate after the warm-up: cosine annealing to 0, or constant."
    )
    warmup_steps: int = Field(
        500, ge=0, le=1000 * MAX_STEPS, description="Linear learning-rate warm-up (optimizer steps)."
    )
    checkpoint_every: int = Field(
        10, gt=0, le=MAX_EPOCHS, description="Epochs between checkpoints (the last epoch always gets one)."
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of each game's episodes held out for validation."
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seeds the weights, the shuffling and the validation split."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto (the GPU when there is one), cpu or cuda."
    )
    num_threads: int = Field(0, ge=0, le=1024, description="torch CPU threads (0: torch's default).")
    compile: bool = Field(False, description="torch.compile the model (slower on CPU: see README).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16 autocast: auto = on the GPU only; fp32 = never; bf16 = also on the CPU."
    )
    checkpoint_dir: PathStr = Field("checkpoints", description="Checkpoints go to <this>/<stage>/.")
    metrics_dir: PathStr = Field("metrics", description="Where each training stage writes <stage>.json.")


OBJECT_METRICS = ("ball_recall", "false_ball_rate", "player_error")  # evaluation/objects.py
# what the misses are (evaluation/objects.py: OUTCOMES): shares of the scored frames
MISS_METRICS = (
    "ball_faded",
    "ball_misplaced",
    "ball_absent",
    "player_recall",
    "player_faded",
    "player_misplaced",
    "player_absent",
)


class EvaluationConfig(_Section):
    horizons: int = Field(50, gt=0, le=MAX_STEPS, description="Open-loop steps scored: 1…horizons.")
    context: int = Field(8, gt=0, le=MAX_STEPS, description="Real latents fed before going open loop.")
    window_stride: int = Field(
        8,
        ge=0,
        le=MAX_STEPS,
        description="Frames between evaluation windows' starts (0: windows do not overlap).",
    )
    headline_horizons: list[int] = Field(
        default_factory=lambda: [1, 10, 50],
        min_length=1,
        max_length=64,
        description="Horizons whose scores are headline keys in eval.json.",
    )
    promote_on: str = Field(
        "ball_recall_mean_model",
        description="eval.json key averaged over games (default: the dream's ball recall over every horizon).",
    )
    ball_tolerance: int = Field(
        2, ge=1, le=8, description="Frame pixels a drawn ball may be off (a 2×2 block needs at least 1)."
    )
    player_tolerance: int = Field(
        2, ge=0, le=16, description="Frame pixels a drawn player's centre may be off."
    )
    ball_visibility: float = Field(
        0.5, gt=0, le=1, description="Fraction of the true ball's brightness a drawn ball needs."
    )
    metrics_file: PathStr = Field("metrics/eval.json", description="The evaluation report (a DVC metric).")
    plots_dir: PathStr = Field("plots", description="Per-horizon curves: TSVs, series.json, eval_curves.png.")

    def headline_keys(self) -> list[str]:
        """Every per-game key of eval.json that `promote_on` may name."""
        horizons = self.headline_horizons
        keys = [f"psnr_h{h}_{kind}" for h in horizons for kind in ("gain", "model")]
        keys += [
            f"{m}_h{h}_{who}" for m in OBJECT_METRICS for h in horizons for who in ("model", "copy_last")
        ]
        keys += [f"{m}_h{h}_model" for m in MISS_METRICS for h in horizons] + ["ball_recall_mean_model"]
        recon = [f"recon_{m}" for m in (*OBJECT_METRICS, *MISS_METRICS)]
        return keys + ["recon_gain_over_mean_frame", "recon_psnr", *recon]

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
    game: GameId = Field("BreakoutNoFrameskip-v4", description="The game dream dreams by default.")
    actions: str = Field("", max_length=200_000, description="Comma-separated names or minimal-set numbers.")
    steps: int = Field(60, gt=0, le=MAX_DREAM_STEPS, description="Random actions when `actions` is empty.")
    episode: int = Field(
        0, ge=0, le=100_000, description="Held-out episode whose frames give the dream's real context."
    )
    start: int = Field(0, ge=0, le=MAX_FRAMES, description="Frame of that episode where the context starts.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seeds the random actions when none are given.")
    upscale: int = Field(4, ge=1, le=16, description="The GIF's pixels per frame pixel.")
    fps: int = Field(15, gt=0, le=240, description="The GIF's frames per second.")
    out_dir: PathStr = Field("outputs", description="Where dream_<game>.gif is written.")


class ControllerConfig(_Section):
    """The World Models controller, trained by CMA-ES in the dream only, scored in the real game."""

    game: GameId = Field("BreakoutNoFrameskip-v4", description="The game the controller learns.")
    horizon: int = Field(
        100,
        gt=0,
        le=MAX_DREAM_STEPS,
        description="Dreamt frames per rollout, in whole steps of dynamics.frames_per_step (then truncated).",
    )
    population: int = Field(32, ge=2, le=4096, description="CMA-ES candidates per generation.")
    rollouts: int = Field(
        64, gt=0, le=4096, description="Dream rollouts per candidate, the same contexts for all."
    )
    generations: int = Field(150, gt=0, le=100_000, description="CMA-ES generations.")
    sigma: float = Field(0.1, gt=0, le=100, description="CMA-ES initial step size.")
    features: Literal["latent_and_state", "latent"] = Field(
        "latent_and_state", description="What the controller reads: [latent, GRU state], or the latent alone."
    )
    action_choice: Literal["sample", "argmax"] = Field(
        "sample", description="Draw the action from the softmax of the logits, or take their argmax."
    )
    epsilon: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Each step (a frame, or dynamics.frames_per_step frames), a uniformly random action "
        "instead of the controller's, held for the step (dream and real).",
    )
    constant_baselines: ConstantBaselines = True
    contexts: Contexts = "training"
    eval_episodes: EvalEpisodes = 30
    eval_max_frames: EvalMaxFrames = 20_000
    eval_seed: EvalSeed = 2_000_000
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seeds the dream contexts, the exploration draws and CMA-ES."
    )
    out_dir: PathStr = Field(
        "checkpoints/controller", description="Where controller.pt and returns.png are written."
    )
    metrics_file: PathStr = Field(
        "metrics/controller.json", description="The controller stage's report (a DVC metric)."
    )

    @model_validator(mode="after")
    def _dreams_fit(self) -> ControllerConfig:
        if self.population * self.rollouts > MAX_DREAMS:
            raise ValueError(f"population × rollouts must stay within {MAX_DREAMS} dreams stepped at once")
        _scored_seeds_fit(self)
        return self


class AgentConfig(_Section):
    """An actor-critic trained in imagination only (Dreamer's recipe on the frozen world model),
    scored in the real game beside the random policy, the held actions and the controller."""

    game: GameId = Field("BreakoutNoFrameskip-v4", description="The game the agent learns.")
    updates: int = Field(
        600, gt=0, le=1_000_000, description="Actor and critic updates, one imagined batch each."
    )
    dreams: int = Field(
        256, ge=2, le=MAX_DREAMS, description="Dreams imagined per update, each from a real context."
    )
    horizon: int = Field(
        60,
        ge=2,
        le=MAX_DREAM_STEPS,
        description="Imagined frames per dream, in whole steps of dynamics.frames_per_step; the critic "
        "values the rest.",
    )
    discount: float = Field(0.995, gt=0, le=1, description="γ per frame: 0.995 looks about 200 frames ahead.")
    return_lambda: float = Field(0.95, ge=0, le=1, description="λ of the λ-returns (DreamerV3: 0.95).")
    entropy_scale: float = Field(
        3e-4,
        ge=0,
        le=10,
        description="Entropy bonus of the actor's loss (DreamerV3: 3e-4 on normalised returns).",
    )
    units: int = Field(
        256, gt=0, le=MAX_WIDTH, description="Width of the actor's and critic's hidden layers."
    )
    layers: int = Field(2, gt=0, le=16, description="Hidden layers of the actor and of the critic.")
    actor_lr: float = Field(1e-4, gt=0, le=1, description="Adam's learning rate for the actor.")
    critic_lr: float = Field(3e-4, gt=0, le=1, description="Adam's learning rate for the critic.")
    grad_clip: float = Field(100.0, gt=0, le=1e6, description="Gradient norm clip of each network.")
    slow_critic_fraction: float = Field(
        0.02, gt=0, le=1, description="Each update the slow critic moves this fraction toward the critic."
    )
    return_scale_decay: float = Field(
        0.99, ge=0, lt=1, description="Smoothing of the λ-returns' 5–95th percentile range."
    )
    life_loss: bool = Field(
        True, description="A life lost (a head fitted on the recorded RAM's lives counter) ends a dream."
    )
    epsilon: float = Field(
        0.05,
        ge=0,
        le=1,
        description="In the real game, each step a uniformly random action instead (as DQN).",
    )
    contexts: Contexts = "training"
    eval_episodes: EvalEpisodes = 30
    eval_max_frames: EvalMaxFrames = 20_000
    eval_seed: EvalSeed = 2_000_000
    constant_baselines: ConstantBaselines = True
    rounds: int = Field(
        0,
        ge=0,
        le=100,
        description="Rounds of real play after the first training: the agent's own games join the data, "
        "the world model is fine-tuned on the grown data and the agent trained again.",
    )
    round_episodes: int = Field(
        8, ge=1, le=1000, description="Real games the agent (with ε) plays in a round, each a whole game."
    )
    round_seed: int = Field(
        3_000_000,
        ge=0,
        le=MAX_SEED,
        description="Round r's game i is reset with round_seed + 1000·r + i (not the scored games' seeds).",
    )
    round_dynamics_epochs: int = Field(
        3, gt=0, le=10_000, description="Epochs the world model is fine-tuned on the grown data each round."
    )
    round_updates: int = Field(
        300,
        gt=0,
        le=1_000_000,
        description="Actor and critic updates each round, continuing the last round's.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seeds the networks, the contexts and the actions.")
    out_dir: PathStr = Field(
        "checkpoints/agent", description="Where agent.pt, returns.png and each round's folder are written."
    )
    metrics_file: PathStr = Field(
        "metrics/agent.json", description="The agent stage's report (a DVC metric)."
    )

    @model_validator(mode="after")
    def _fits(self) -> AgentConfig:
        if self.dreams * self.horizon > 4_000_000:
            raise ValueError("dreams × horizon must stay within 4 000 000 imagined states an update")
        _scored_seeds_fit(self)
        last_round_seed = self.round_seed + 1000 * self.rounds + self.round_episodes - 1
        if last_round_seed > MAX_SEED:
            raise ValueError(f"round_seed + 1000·rounds + round_episodes must stay within {MAX_SEED}")
        if (
            self.rounds
            and self.round_seed + 1000 <= self.eval_seed + self.eval_episodes - 1
            and (self.eval_seed <= last_round_seed)
        ):
            raise ValueError(
                "the rounds' games (round_seed + 1000·r + i) would replay the scored games (eval_seed + i): "
                "move round_seed"
            )
        return self


class PlayConfig(_Section):
    fps: int = Field(30, gt=0, le=240, description="Frames per second of play mode.")
    scale: int = Field(6, ge=1, le=16, description="Screen pixels per frame pixel in play mode.")
    num_threads: int = Field(
        1,
        gt=0,
        le=1024,
        description="torch threads for play and dream: a batch-1 step gains nothing from more.",
    )


class TrackingConfig(_Section):
    uri: PathStr = Field("sqlite:///mlflow.db", description="MLFLOW_TRACKING_URI overrides it.")
    experiment: str = Field(
        "arcadedreamer", min_length=1, max_length=256, description="The MLflow experiment every run goes to."
    )
    register_models: bool = Field(
        True, description="Register each trained model as a new version in the MLflow registry."
    )


class Params(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    heldout: HeldoutConfig = Field(default_factory=HeldoutConfig)
    vae: VAEConfig = Field(default_factory=VAEConfig)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    dream: DreamConfig = Field(default_factory=DreamConfig)
    play: PlayConfig = Field(default_factory=PlayConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _heldout_seeds_unused_by_training(self) -> Params:
        train = range(self.data.seed, self.data.seed + self.data.num_envs)
        held = range(self.heldout.seed, self.heldout.seed + self.heldout.episodes_per_game)
        if train.start < held.stop and held.start < train.stop:
            raise ValueError("heldout.seed range overlaps the seeds data.seed gives training")
        if held.stop - 1 > MAX_SEED or train.stop - 1 > MAX_SEED:
            raise ValueError(f"seed + number of emulators must stay within {MAX_SEED}")
        if self.dynamics.frames_per_step > self.data.stack_size:
            raise ValueError(
                f"dynamics.frames_per_step={self.dynamics.frames_per_step} exceeds data.stack_size="
                f"{self.data.stack_size}: a step's new frames must fit in the stack it predicts"
            )
        needed = self.data.stack_size + self.evaluation.context + self.evaluation.horizons
        if self.heldout.frames_per_episode < needed:
            raise ValueError(
                f"heldout.frames_per_episode must be at least stack_size + evaluation.context"
                f" + evaluation.horizons = {needed}"
            )
        return self

    @model_validator(mode="after")
    def _outputs_apart(self) -> Params:
        """Each stage replaces its output folder whole: two that are the same folder, or one
        inside another, would let one stage delete another's results (e.g. held-out episodes
        written over the training data)."""
        outputs = self.output_dirs()
        resolved = {key: Path(os.path.abspath(value)) for key, value in outputs.items()}
        keys = list(outputs)
        for key in keys:
            if resolved[key] == Path(os.path.abspath(".")):
                raise ValueError(f"{key} is the project folder itself; give it a folder of its own")
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                pa, pb = resolved[a], resolved[b]
                if pa == pb or pa in pb.parents or pb in pa.parents:
                    raise ValueError(
                        f"{a} ({outputs[a]}) and {b} ({outputs[b]}) overlap; each output needs a folder of its own"
                    )
        metrics_parent = Path(os.path.abspath(self.evaluation.metrics_file)).parent
        for key in ("data.out_dir", "heldout.out_dir", "training.checkpoint_dir", "evaluation.plots_dir"):
            if metrics_parent == resolved[key] or resolved[key] in metrics_parent.parents:
                raise ValueError(
                    f"evaluation.metrics_file lies inside {key}; put it beside, e.g. in metrics/"
                )
        return self

    def output_dirs(self) -> dict[str, str]:
        """The folders the stages replace, by key."""
        return {
            "data.out_dir": self.data.out_dir,
            "heldout.out_dir": self.heldout.out_dir,
            "training.checkpoint_dir": self.training.checkpoint_dir,
            "training.metrics_dir": self.training.metrics_dir,
            "evaluation.plots_dir": self.evaluation.plots_dir,
            "dream.out_dir": self.dream.out_dir,
        }

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
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] not in ("value_error", "assertion_error") and "input" in err:
                shown = repr(err["input"])
                msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
    return "\n".join(lines)


class _ParamsLoader(yaml.SafeLoader):
    """YAML for a config file: no aliases (an alias bomb expands to gigabytes), no duplicate
    keys (the last one would silently win), and `1e-3` read as the number it looks like."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in a params file; write the value out", mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ParamsLoader.add_implicit_resolver(  # YAML 1.2 floats without a dot (1e-3), which YAML 1.1 reads as text
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789")
)


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


def read_params_text(path: Path) -> str:
    """The file's text, read only from a regular file of sane size (a FIFO or /dev/zero would
    block or fill memory)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; run from the project root or pass --params PATH") from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}); pass --params PATH"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path}: is a directory; pass the params YAML file with --params PATH")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: not a regular file (a device, FIFO or socket); pass the params YAML file")
    if info.st_size > MAX_PARAMS_BYTES:
        raise UserError(f"{path}: {info.st_size} bytes; a params file is at most {MAX_PARAMS_BYTES} bytes")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PARAMS_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise UserError(f"{path}: larger than {MAX_PARAMS_BYTES} bytes; a params file is a few kB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; pass the params YAML file") from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    text = read_params_text(path)
    try:
        raw = yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a params file") from None
    return parse_params(raw, source=str(path))
