"""Real training on tiny real data, tracked in a temporary SQLite MLflow."""

import json
import math
import pickle
import shutil
import subprocess
import sys
import time

import mlflow
import pytest
import torch

from arcadedreamer import tracking
from arcadedreamer.config import load_params
from arcadedreamer.errors import UserError
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.training.vae_trainer import train_vae
from conftest import run_cli, tiny_params_dict, write_params


def client_for(params):
    mlflow.set_tracking_uri(params.tracking.uri)
    return mlflow.MlflowClient()


def test_training_writes_checkpoints_and_metrics(trained):
    params = trained.params
    vae_state = ckpt.load_checkpoint(ckpt.checkpoint_path(params, "vae", 1), stage="vae")
    assert {
        "stage",
        "epoch",
        "arch",
        "model",
        "optimizer",
        "scheduler",
        "rng",
        "config",
        "data_hash",
        "mean_frames",
    } <= set(vae_state)
    assert vae_state["epoch"] == 1 and vae_state["config"]["vae"]["latent_dim"] == 64
    assert set(vae_state["mean_frames"]) == set(trained.games)
    dyn_state = ckpt.load_checkpoint(ckpt.final_checkpoint_path(params, "dynamics"), stage="dynamics")
    assert dyn_state["arch"] == {
        "latent_dim": 64,
        "num_actions": 18,
        "hidden_size": 32,
        "head_size": 128,
        "frames_per_step": 1,
    }
    vae_json = json.loads((trained.root / "metrics/vae.json").read_text())
    # the reported PSNRs are those of the reported errors, and the gain their difference
    assert vae_json["val_psnr"] == pytest.approx(10 * math.log10(1 / vae_json["val_mse"]))
    assert vae_json["val_psnr_gain_over_mean_frame"] == pytest.approx(
        vae_json["val_psnr"] - vae_json["val_psnr_mean_frame"]
    )
    assert {f"val_psnr_{g}" for g in trained.games} <= set(vae_json)
    dyn_json = json.loads((trained.root / "metrics/dynamics.json").read_text())
    assert 0.3 < dyn_json["sampled_fraction"] < 0.7  # scheduled_sampling_prob 0.5
    assert dyn_json["val_loss_open_loop"] >= 0
    assert {
        "val_reward_recall",
        "val_reward_precision",
        "val_game_over_accuracy",
        "train_reward_loss",
    } <= set(dyn_json)


def test_runs_metrics_images_and_registered_versions_in_mlflow(trained):
    client = client_for(trained.params)
    experiment = client.get_experiment_by_name("arcadedreamer")
    runs = {
        r.data.tags["stage"]: r
        for r in client.search_runs([experiment.experiment_id])
        if "stage" in r.data.tags
    }
    assert {"vae", "dynamics"} <= set(runs)
    vae_run = runs["vae"]
    assert vae_run.info.status == "FINISHED"
    assert vae_run.data.tags["pipeline_id"] == runs["dynamics"].data.tags["pipeline_id"]
    assert vae_run.data.params["vae.latent_dim"] == "64" and vae_run.data.params["vae.beta"] == "0.0001"
    history = client.get_metric_history(vae_run.info.run_id, "val_psnr")
    assert [m.step for m in history] == [1]
    assert {"train_loss", "val_loss", "train_mse", "val_mse", "val_psnr_mean_frame", "lr"} <= set(
        vae_run.data.metrics
    )
    # one scale for training and validation: the same loss per stack on the two splits
    train_loss, val_loss = vae_run.data.metrics["train_loss"], vae_run.data.metrics["val_loss"]
    assert 0.2 < val_loss / train_loss < 5, (train_loss, val_loss)
    images = [a.path for a in client.list_artifacts(vae_run.info.run_id, "images")]
    assert any(p.startswith("images/reconstructions+step+1+") and p.endswith(".png") for p in images), images
    dynamics_images = [a.path for a in client.list_artifacts(runs["dynamics"].info.run_id, "images")]
    assert any(p.startswith("images/open_loop+step+1+") for p in dynamics_images), "the dynamics' own picture"
    for name, run in ((tracking.VAE_MODEL, vae_run), (tracking.DYNAMICS_MODEL, runs["dynamics"])):
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1
        version = versions[0]
        assert version.run_id == run.info.run_id
        assert len(version.tags["data_hash"]) == 64
    latest = client.get_model_version_by_alias(tracking.DYNAMICS_MODEL, "latest")
    assert str(latest.version) == "1"


def test_registered_model_loads_identically_in_a_fresh_process(trained):
    params = trained.params
    path = tracking.resolve_model_checkpoint(f"models:/{tracking.DYNAMICS_MODEL}@latest", params)
    model, _ = ckpt.load_world_model(path, params)
    stacks = torch.linspace(0, 1, 2 * 4 * 64 * 64).reshape(2, 4, 64, 64)
    local = model.decode(model.encode(stacks))
    script = f"""
import mlflow, numpy as np, torch
from arcadedreamer import tracking
from arcadedreamer.config import load_params
from arcadedreamer.models.checkpoints import load_world_model
params = load_params({str(trained.params_path)!r})
path = tracking.resolve_model_checkpoint("models:/{tracking.DYNAMICS_MODEL}@latest", params)
model, _ = load_world_model(path, params)
stacks = torch.linspace(0, 1, 2 * 4 * 64 * 64).reshape(2, 4, 64, 64)
np.save("ours.npy", model.decode(model.encode(stacks)).numpy())
pyfunc = mlflow.pyfunc.load_model("models:/{tracking.VAE_MODEL}@latest")
np.save("pyfunc.npy", pyfunc.predict(stacks.numpy()))
world = mlflow.pyfunc.load_model("models:/{tracking.DYNAMICS_MODEL}@latest")
context = torch.stack([stacks, stacks.flip(0)], 1)  # (2, 2, 4, 64, 64)
np.save("dream.npy", world.predict(context.numpy(), params={{"actions": [0, 1, 3, 3]}}))
"""
    subprocess.run(
        [sys.executable, "-c", script], cwd=trained.root, check=True, capture_output=True, timeout=300
    )
    import numpy as np

    np.testing.assert_array_equal(np.load(trained.root / "ours.npy"), local.numpy())
    vae = ckpt.vae_from_checkpoint(ckpt.load_checkpoint(ckpt.final_checkpoint_path(params, "vae")))
    with torch.no_grad():
        np.testing.assert_array_equal(
            np.load(trained.root / "pyfunc.npy"), vae.decode(vae.encode(stacks)).numpy()
        )
    context = torch.stack([stacks, stacks.flip(0)], 1)
    latents = model.encode(context.reshape(4, 4, 64, 64)).reshape(2, 2, -1)
    actions = torch.tensor([[0, 1, 3, 3]] * 2)
    imagined = model.imagine(latents, actions[:, :1], actions[:, 1:])
    expected = model.decode(imagined.reshape(6, -1))[:, -1].reshape(2, 3, 64, 64)
    np.testing.assert_allclose(np.load(trained.root / "dream.npy"), expected.numpy(), atol=1e-6)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(trained, tmp_path):
    raw = tiny_params_dict(tmp_path, trained.games)
    raw["data"]["out_dir"] = str(trained.root / "data/collected")
    raw["vae"]["epochs"] = 2
    raw["tracking"]["register_models"] = False
    params = load_params(write_params(tmp_path, raw))
    train_vae(params, progress=False)
    straight = ckpt.load_checkpoint(ckpt.checkpoint_path(params, "vae", 2))["model"]
    # An interrupted run leaves only its epoch-1 checkpoint behind.
    ckpt.checkpoint_path(params, "vae", 2).unlink()
    train_vae(params, resume=True, progress=False)
    resumed = ckpt.load_checkpoint(ckpt.checkpoint_path(params, "vae", 2))["model"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.parametrize("recipe", ["original", "open loop and the decoded loss"])
def test_dynamics_resume_reaches_the_same_weights_as_an_uninterrupted_run(trained, tmp_path, recipe):
    """Resumed after epoch 1, the dynamics ends bit-identical to a run never stopped: weights,
    optimizer, schedule, the self-feeding ramp and the decoded loss's draws all pick up; its
    training time counts the epoch before the stop too."""
    from arcadedreamer.training.dynamics_trainer import train_dynamics

    raw = tiny_params_dict(tmp_path, trained.games)
    raw["data"]["out_dir"] = str(trained.root / "data/collected")
    raw["dynamics"]["epochs"] = 2
    if recipe != "original":
        raw["dynamics"].update(
            scheduled_sampling_final=1.0,
            scheduled_sampling_ramp=1.0,
            decoded_loss_weight=1.0,
            decoded_loss_samples=4,
        )
    raw["tracking"]["register_models"] = False
    params = load_params(write_params(tmp_path, raw))
    vae = ckpt.final_checkpoint_path(trained.params, "vae")
    started = time.perf_counter()
    first = train_dynamics(params, vae_checkpoint=vae, progress=False)
    assert 0 < first["train_seconds"] < time.perf_counter() - started
    straight = ckpt.load_checkpoint(ckpt.checkpoint_path(params, "dynamics", 2))["model"]
    ckpt.checkpoint_path(params, "dynamics", 2).unlink()  # as if stopped after epoch 1
    epoch_1 = ckpt.checkpoint_path(params, "dynamics", 1)
    # as if the first epoch had taken 1000 s
    ckpt.save_checkpoint(epoch_1, {**ckpt.load_checkpoint(epoch_1), "train_seconds": 1000.0})
    started = time.perf_counter()
    again = train_dynamics(params, vae_checkpoint=vae, resume=True, progress=False)
    assert 1000 < again["train_seconds"] < 1000 + time.perf_counter() - started
    resumed = ckpt.load_checkpoint(ckpt.checkpoint_path(params, "dynamics", 2))["model"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert again["sampled_fraction"] == first["sampled_fraction"]
    if recipe != "original":
        assert first["sampled_fraction"] == 1.0 and first["train_frame_loss"] > 0


def test_compiled_dynamics_training_takes_steps_and_saves_plain_weights(trained, tmp_path):
    """torch.compile's training moves every part of the model off its initial weights, and the
    checkpoint holds the plain module's names. (Learning itself: test_models' overfitting tests,
    on data with something to learn; these tiny recordings barely move.)"""
    from arcadedreamer.models.dynamics import Dynamics
    from arcadedreamer.training.dynamics_trainer import train_dynamics

    raw = tiny_params_dict(tmp_path, trained.games)
    raw["data"]["out_dir"] = str(trained.root / "data/collected")
    raw["dynamics"]["epochs"] = 2
    raw["training"]["compile"] = True
    raw["tracking"]["register_models"] = False
    params = load_params(write_params(tmp_path, raw))
    summary = train_dynamics(
        params, vae_checkpoint=ckpt.final_checkpoint_path(trained.params, "vae"), progress=False
    )
    assert 0 < summary["train_loss"] < float("inf")
    weights = ckpt.load_checkpoint(ckpt.final_checkpoint_path(params, "dynamics"))["model"]
    assert not any(key.startswith("_orig_mod") for key in weights)
    model = Dynamics(64, 18, 32, params.dynamics.head_size)
    model.load_state_dict(weights)  # loads into a plain module
    torch.manual_seed(params.training.seed + params.dynamics.seed)
    initial = Dynamics(64, 18, 32, params.dynamics.head_size).state_dict()
    for key in ("gru.weight_ih_l0", "gru.weight_hh_l0", "head.weight", "events.reward.0.weight"):
        assert not torch.equal(weights[key], initial[key]), f"{key} never moved"


def test_precision_bf16_runs_both_models_under_bf16_autocast_with_fp32_gradients():
    """`training.precision: bf16` forces the GPU's autocast path on the CPU, so it is exercised
    without a GPU (one small step: bf16 is ~20x slower than fp32 on this CPU); `auto` stays fp32."""
    import torch

    from arcadedreamer.models.dynamics import Dynamics
    from arcadedreamer.models.vae import VAE, vae_loss
    from arcadedreamer.training.common import autocast

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    vae, dynamics = VAE(4, 64), Dynamics(64, 18, 32)
    frames = torch.rand(4, 4, 64, 64)
    latents, actions = torch.randn(4, 9, 64), torch.randint(0, 18, (4, 8))  # (B, T+1, D), (B, T)
    with autocast(cpu, "auto"):
        assert vae.encoder(frames)[0].dtype == torch.float32, "auto: fp32 on the CPU"
    with autocast(cpu, "bf16"):
        logits, mu, logvar = vae(frames, torch.Generator().manual_seed(0))
        vae_losses = vae_loss(frames, logits, mu, logvar, beta=1e-4, loss="bce")
        dynamics_losses = dynamics.compute_loss(
            latents, actions, torch.ones_like(actions), torch.zeros(4, 8), sampling_prob=0.5, burn_in=4
        )
    assert mu.dtype == torch.bfloat16, "the encoder ran in bf16"
    for losses, model in ((vae_losses, vae), (dynamics_losses, dynamics)):
        assert losses["loss"].dtype == torch.float32 and torch.isfinite(losses["loss"])
        losses["loss"].backward()
        for name, parameter in model.named_parameters():
            assert parameter.dtype == parameter.grad.dtype == torch.float32, name
            assert torch.isfinite(parameter.grad).all(), name
        assert any(parameter.grad.abs().sum() > 0 for parameter in model.parameters())


def test_large_batch_learning_rate_scaling():
    from arcadedreamer.training.common import scaled_lr

    assert scaled_lr(3e-4, 1024, 128, "none") == 3e-4
    assert scaled_lr(3e-4, 1024, 128, "linear") == pytest.approx(2.4e-3)
    assert scaled_lr(3e-4, 1024, 128, "sqrt") == pytest.approx(3e-4 * 8**0.5)


def test_bad_checkpoints_are_refused_with_one_line(trained, tmp_path):
    params = trained.params
    good = ckpt.final_checkpoint_path(params, "dynamics")
    mismatched = load_params(
        write_params(tmp_path / "p", {**tiny_params_dict(tmp_path, trained.games), "vae": {"latent_dim": 32}})
    )
    with pytest.raises(
        UserError,
        match=r"architecture does not match params.yaml: trained with vae.latent_dim=64 \(params.yaml has 32\)",
    ):
        ckpt.load_world_model(good, mismatched)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt or truncated checkpoint"):
        ckpt.load_checkpoint(truncated)
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (shutil.copy, (str(good), str(marker)))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"stage": "vae", "model": RunsCode()}))
    with pytest.raises(UserError, match="refused: it is not a plain-tensor checkpoint"):
        ckpt.load_checkpoint(evil)
    assert not marker.exists(), "loading never runs pickled code"
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="not an ArcadeDreamer checkpoint"):
        ckpt.load_checkpoint(other)
    with pytest.raises(UserError, match="is a vae checkpoint, expected a dynamics checkpoint"):
        ckpt.load_world_model(ckpt.checkpoint_path(params, "vae", 1))
    with pytest.raises(UserError, match="is a directory"):
        ckpt.load_checkpoint(tmp_path)


def test_cli_train_errors(trained, tmp_path):
    result = run_cli(
        "train",
        "--stage",
        "dynamics",
        "--vae-checkpoint",
        str(tmp_path / "none.pt"),
        "--params",
        str(trained.params_path),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "none.pt not found; VAE checkpoints are written to" in result.stderr
    result = run_cli("train", "--stage", "gru", "--params", str(trained.params_path))
    assert result.returncode == 2 and "unknown stage 'gru'; choose vae or dynamics" in result.stderr
    pickled = tmp_path / "pickled.pt"  # a plain pickle: refused in one line, no torch warning before it
    pickled.write_bytes(pickle.dumps({"stage": "dynamics", "model": {}}))
    result = run_cli("evaluate", "--model", str(pickled), "--params", str(trained.params_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {pickled}: refused: it is not a plain-tensor checkpoint (loading uses "
        "weights_only=True and never runs pickled code)"
    ]


def test_vae_on_real_breakout_carries_information_and_beats_the_mean_frame(tmp_path):
    """The posterior-collapse check on real frames: a short CPU run (1 epoch of 3 000 frames:
    +1.1 dB over the mean frame and all 64 dims informative, measured; 2 epochs gave +1.2 dB)."""
    from arcadedreamer.data.collector import collect_to_disk
    from arcadedreamer.data.dataset import FrameStacks, load_episodes, split_episodes

    game = "BreakoutNoFrameskip-v4"
    raw = tiny_params_dict(tmp_path, [game], frames=3000)
    raw["data"]["num_envs"] = 8
    raw["vae"]["epochs"] = 1
    # A constant rate (a 1-epoch cosine would decay it away) after a 50-step warm-up: the epoch is
    # ~80 steps, so the default 500-step warm-up would never reach the rate at all
    raw["training"].update(
        {"lr": 1e-3, "num_threads": 0, "checkpoint_every": 1, "scheduler": "constant", "warmup_steps": 50}
    )
    raw["tracking"]["register_models"] = False
    params = load_params(write_params(tmp_path, raw))
    collect_to_disk(
        [game],
        3000,
        params.data.out_dir,
        seed=0,
        num_envs=8,
        frame_size=64,
        hold_min=1,
        hold_max=8,
        max_episode_frames=10_000,
        progress=False,
    )
    summary = train_vae(params, progress=False)
    assert summary["val_psnr"] > summary["val_psnr_mean_frame"] + 0.5, summary
    vae = ckpt.vae_from_checkpoint(ckpt.load_checkpoint(ckpt.final_checkpoint_path(params, "vae")))
    episodes = load_episodes(params.data.out_dir, [game])
    val = FrameStacks(episodes, 4, split_episodes(episodes, 0.1, 0))
    stacks = next(val.batches(256))
    with torch.no_grad():
        mu, logvar = vae.encoder(stacks)
        recon = vae.decode(mu)
    informative = (mu.std(0) > 3 * torch.exp(0.5 * logvar).mean(0)).sum().item()
    assert informative >= 4, f"only {informative} latent dims vary beyond their posterior noise"
    differing = (recon[0] - recon[-1]).abs().max().item()
    assert differing > 0.1, "reconstructions of different inputs differ"
