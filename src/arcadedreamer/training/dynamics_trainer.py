"""Dynamics training: the GRU learns next latents on sequences the trained VAE encoded once,
run by the shared loop."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from arcadedreamer import tracking
from arcadedreamer.config import Params
from arcadedreamer.data.dataset import (
    Episodes,
    LatentSequences,
    data_hash,
    load_episodes,
    sequence_starts,
    split_episodes,
)
from arcadedreamer.data.preprocessing import REWARD_SIGNS
from arcadedreamer.errors import UserError
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.dynamics import DecodedFrameLoss, Dynamics, sampling_prob_at
from arcadedreamer.models.events import format_score, game_over_scores, predicted_events, reward_scores
from arcadedreamer.training import loop
from arcadedreamer.training.common import (
    ComputeLoss,
    autocast,
    balanced_class_weights,
    check_resources,
    comparison_grid,
    configure_threads,
    resolve_device,
)
from arcadedreamer.training.distributed import Distributed, init_distributed, shutdown


@torch.no_grad()
def evaluate_dynamics(
    model: Dynamics, sequences: LatentSequences, params: Params, device: torch.device
) -> dict:
    """Open-loop (every step after the context fed its own prediction) and copy-last MSE, and
    the event heads' scores on the states that open loop visits."""
    model.eval()
    totals, count = {"loss_after_burn_in": 0.0, "loss_copy": 0.0}, 0
    rewards, game_overs, probabilities = ([], []), ([], []), []
    for latents, actions, reward_classes, game_over_flags, _ in sequences.batches(params.training.batch_size):
        with autocast(device, params.training.precision):
            losses = model.compute_loss(
                latents,
                actions,
                reward_classes,
                game_over_flags,
                sampling_prob=1.0,
                burn_in=params.dynamics.burn_in,
            )
        for key in totals:
            totals[key] += losses[key].item() * len(latents)
        count += len(latents)
        reward_probs, game_over_probs = model.events.calibrated(
            losses["reward_logits"], losses["game_over_logits"]
        )
        predicted_rewards, predicted_game_overs = predicted_events(reward_probs, game_over_probs)
        probabilities.append(reward_probs.cpu())
        rewards[0].append(predicted_rewards.cpu())
        rewards[1].append(reward_classes.cpu())
        game_overs[0].append(predicted_game_overs.cpu())
        game_overs[1].append(game_over_flags.cpu() > 0.5)
    model.train()
    scores = {k: v / count for k, v in totals.items()} if count else {k: float("nan") for k in totals}
    events = {}
    if count:
        events = {
            **reward_scores(torch.cat(rewards[0]), torch.cat(rewards[1]), torch.cat(probabilities)),
            **game_over_scores(torch.cat(game_overs[0]), torch.cat(game_overs[1])),
        }
    return {"loss": scores["loss_after_burn_in"], "loss_copy": scores["loss_copy"], **events}


def event_weights(
    episodes: Episodes, train_mask, max_weight: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class weights of the reward head and the game-over head's positive weight, balanced on
    the training split's transitions (`balanced_class_weights`)."""
    transitions = torch.from_numpy(train_mask & ~episodes.episode_ends)
    reward_counts = torch.bincount(episodes.reward_classes[transitions], minlength=len(REWARD_SIGNS))
    # a transition ends the game when the frame after it is a game-over frame
    game_over_next = torch.cat([episodes.game_overs[1:], torch.zeros(1, dtype=torch.bool)])[transitions]
    game_over_counts = torch.stack([(~game_over_next).sum(), game_over_next.sum()])
    game_over_classes = balanced_class_weights(game_over_counts, max_weight)
    return (
        balanced_class_weights(reward_counts, max_weight).to(device),
        (game_over_classes[1] / game_over_classes[0]).to(device),
    )


def train_dynamics(
    params: Params,
    vae_checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    extra_data: Sequence[str | Path] = (),
    start_from: str | Path | None = None,
) -> dict:
    """`start_from` a dynamics checkpoint: fine-tune that world model (its VAE stays frozen) on
    the collected data and the recordings under `extra_data` (the agent's rounds)."""
    check_resources(params, "dynamics")
    configure_threads(params)
    dist_info, device = init_distributed(resolve_device(params.training.device))
    try:
        stage = dynamics_stage(params, vae_checkpoint, dist_info, device, extra_data, start_from)
        return loop.run(stage, params, resume, progress and dist_info.is_main, dist_info, device)
    finally:
        shutdown(dist_info)


def dynamics_stage(
    params: Params,
    vae_checkpoint: str | Path | None,
    dist_info: Distributed,
    device: torch.device,
    extra_data: Sequence[str | Path] = (),
    start_from: str | Path | None = None,
) -> loop.Stage:
    """The GRU's data (latent sequences of the trained VAE), loss, validation and checkpoint
    contents (the VAE too: a dynamics checkpoint is the whole world model), for the shared loop."""
    cfg, train_cfg = params.dynamics, params.training
    if start_from is not None:  # a world model fine-tuned: its own VAE, its GRU's weights to start
        vae_path = Path(start_from)
        world_state = ckpt.load_checkpoint(vae_path, stage="dynamics")
        ckpt.check_arch(world_state, ckpt.dynamics_arch(params), vae_path)
        vae_state = {"mean_frames": world_state["mean_frames"], "mlflow_run_id": None}
    else:
        vae_path = Path(vae_checkpoint) if vae_checkpoint else ckpt.final_checkpoint_path(params, "vae")
        world_state = None
        vae_state = ckpt.load_checkpoint(vae_path, stage="vae")
    vae_source = world_state or vae_state
    ckpt.check_arch(vae_source, ckpt.vae_arch(params), vae_path, key="vae_arch" if world_state else "arch")
    vae = ckpt.vae_from_checkpoint(vae_source).to(device).eval().requires_grad_(False)
    # the VAE's own checkpoint, also when a world model is fine-tuned
    vae_file = str(world_state.get("vae_checkpoint", vae_path)) if world_state else str(vae_path)

    episodes = load_episodes(params.data.out_dir, params.data.games, extra_roots=extra_data)
    val_mask = split_episodes(episodes, train_cfg.val_fraction, train_cfg.seed)
    episodes.frames = episodes.frames.to(device)
    with autocast(device, train_cfg.precision):
        latents = vae.encode_recording(episodes.frames, episodes.episode_ends)
    stack, seq_len, stride, k = params.data.stack_size, cfg.seq_len, cfg.sequence_stride, cfg.frames_per_step
    train_set, val_set = (
        LatentSequences(
            latents, episodes, sequence_starts(episodes, stack, seq_len, mask, stride, k), seq_len, k
        )
        for mask in (~val_mask, val_mask)
    )
    reward_weights, game_over_weight = event_weights(episodes, ~val_mask, cfg.max_event_weight, device)
    if len(train_set) == 0:
        raise UserError(
            f"no training sequences of dynamics.seq_len={cfg.seq_len} steps of {k} frames: collect "
            "longer episodes or shorten seq_len"
        )
    if len(val_set) == 0:
        val_set = train_set

    seed = train_cfg.seed + cfg.seed  # several dynamics seeds on one VAE (and one validation split)
    torch.manual_seed(seed)
    model = ckpt.dynamics_from_arch(ckpt.dynamics_arch(params)).to(device)
    if world_state is not None:
        model.load_state_dict(world_state["model"])
    model.events.set_class_weights(reward_weights, game_over_weight)
    generators = {
        "shuffle": torch.Generator().manual_seed(seed),
        "sampling": torch.Generator().manual_seed(seed + 2 + 1000 * dist_info.rank),
    }
    decoded = DecodedFrameLoss(
        vae=vae,
        frames=episodes.frames,
        loss=params.vae.loss,
        surprise=params.vae.surprise_weight,
        samples=cfg.decoded_loss_samples,
        weight=cfg.decoded_loss_weight,
    )
    loss = ComputeLoss(
        model,
        sampling_prob=cfg.scheduled_sampling_prob,
        burn_in=cfg.burn_in,
        generator=generators["sampling"],
        reward_weights=reward_weights,
        game_over_weight=game_over_weight,
        decoded=decoded if cfg.decoded_loss_weight > 0 and cfg.decoded_loss_samples > 0 else None,
    )

    def before_epoch(epoch: int) -> None:
        loss.settings["sampling_prob"] = sampling_prob_at(
            epoch,
            cfg.epochs,
            cfg.scheduled_sampling_prob,
            cfg.scheduled_sampling_final,
            cfg.scheduled_sampling_ramp,
        )

    dhash = data_hash(episodes)

    def validate(train: dict[str, float]) -> dict[str, float]:
        val = evaluate_dynamics(model, val_set, params, device)
        return {
            "train_loss": train["latent_loss"],
            "train_frame_loss": train["frame_loss"],
            "train_reward_loss": train["reward_loss"],
            "train_game_over_loss": train["game_over_loss"],
            "sampled_fraction": train["sampled_fraction"],
            "val_loss_open_loop": val["loss"],
            "val_loss_copy_last": val["loss_copy"],
            "val_gain_over_copy_last": val["loss_copy"] / max(val["loss"], 1e-12),
            **{f"val_{k}": v for k, v in val.items() if k.startswith(("reward_", "game_over_"))},
        }

    preview = val_set if len(val_set) else train_set
    preview_start = preview.starts[len(preview.starts) // 2 : len(preview.starts) // 2 + 1]

    @torch.no_grad()
    def log_open_loop(epoch: int) -> None:
        """Real (top) and imagined (bottom) frames of one validation sequence, open loop after the
        burn-in: the run's own picture of how long its dream keeps the game."""
        index = (preview_start[:, None] + k * torch.arange(cfg.seq_len + 1)).to(device)
        sequence = latents[index]
        actions = episodes.actions.to(device)[index[:, :-1, None] + torch.arange(k, device=device)]
        model.eval()
        hidden, current, imagined = None, sequence[:, 0], []
        for t in range(cfg.seq_len):
            current, hidden = model.step(
                sequence[:, t] if t < cfg.burn_in else current, actions[:, t], hidden
            )
            imagined.append(current)
        model.train()
        shown = torch.arange(cfg.burn_in - 1, cfg.seq_len, max(1, (cfg.seq_len - cfg.burn_in) // 8))[:8]
        real = vae.decode(sequence[0, shown + 1].float())[:, -1]
        dream = vae.decode(torch.stack(imagined, 1)[0, shown].float())[:, -1]
        tracking.log_image(comparison_grid(real.cpu(), dream.cpu()), "open_loop", epoch)

    return loop.Stage(
        name="dynamics",
        title="dynamics",
        model=model,
        loss=loss,
        epochs=cfg.epochs,
        arch=ckpt.dynamics_arch(params),
        batches=lambda generator: train_set.batches(train_cfg.batch_size, generator),
        samples=len(train_set),
        unit="seq",
        generators=generators,
        running=("latent_loss", "frame_loss", "reward_loss", "game_over_loss", "sampled_fraction"),
        before_epoch=before_epoch,
        validate=validate,
        describe=lambda epoch, m: (
            f"dynamics epoch {epoch}: train {m['train_loss']:.4f}, open-loop val "
            f"{m['val_loss_open_loop']:.3g} (copy-last {m['val_loss_copy_last']:.3g}); rewards: "
            f"recall {format_score(m.get('val_reward_recall'))}, precision {format_score(m.get('val_reward_precision'))}"
            f" of {m.get('val_reward_events', 0)} in val"
        ),
        checkpoint_entries=lambda: {
            "vae": vae.state_dict(),
            "vae_arch": ckpt.vae_arch(params),
            "vae_checkpoint": vae_file,
            "mean_frames": vae_state["mean_frames"],
            "data_hash": dhash,
            **({"fine_tuned_from": str(start_from)} if start_from is not None else {}),
        },
        after_checkpoint=log_open_loop,
        tags={
            "data_hash": dhash,
            "vae_checkpoint": vae_file,
            **({"fine_tuned_from": str(start_from)} if start_from is not None else {}),
        },
        lineage=lambda: vae_lineage(vae_state),
        description=(
            f"Dynamics (GRU {cfg.hidden_size}), {cfg.epochs} epochs "
            f"{f'fine-tuning {vae_path.name} ' if start_from is not None else ''}on the latents of VAE "
            f"{Path(vae_file).name}: sequences of {cfg.seq_len} steps of {k} frames, burn-in {cfg.burn_in}, self-feeding "
            f"{cfg.scheduled_sampling_prob:g}→{cfg.scheduled_sampling_final:g}, decoded loss "
            f"{cfg.decoded_loss_weight:g}; {', '.join(episodes.games)}, data {dhash[:12]}"
        ),
        datasets=(params.data.out_dir, episodes.games, episodes.content_hashes),
        summary={"data_hash": dhash, "train_sequences": len(train_set), "val_sequences": len(val_set)},
        model_name=tracking.DYNAMICS_MODEL,
    )


def vae_lineage(vae_state: dict) -> dict[str, str]:
    """The VAE run this world model was built on, and its registered version when it has one."""
    run_id = vae_state.get("mlflow_run_id")
    if not run_id:
        return {}
    uri = tracking.model_uri_for_run(tracking.VAE_MODEL, run_id)
    return {"vae.run_id": run_id, **({"vae.model_uri": uri} if uri else {})}
