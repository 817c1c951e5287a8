"""A world model of four frames a step (`dynamics.frames_per_step: 4`), end to end on tiny real
data: trained, scored frame by frame, dreamt as a GIF of one frame an action, acted in as a
gymnasium env, played beside the real game, and driven by a controller in the real game."""

import json

import numpy as np
import pytest
import torch

from arcadedreamer.config import load_params
from arcadedreamer.data.dataset import LatentSequences, load_episodes, sequence_starts, step_reward_classes
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.dynamics import Dynamics
from arcadedreamer.models.world_model import actions_by_step, context_steps, recorded_steps
from conftest import run_cli, tiny_params_dict, write_params

GAME = "BreakoutNoFrameskip-v4"
K = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """600 real Breakout frames, a 1-epoch VAE and a 1-epoch dynamics of four frames a step."""
    from arcadedreamer.data.collector import collect_dataset
    from arcadedreamer.training.dynamics_trainer import train_dynamics
    from arcadedreamer.training.vae_trainer import train_vae

    root = tmp_path_factory.mktemp("k4")
    settings = tiny_params_dict(root, [GAME])
    settings["dynamics"] |= {"frames_per_step": K, "seq_len": 6, "burn_in": 2, "decoded_loss_weight": 1.0}
    path = write_params(root, settings)
    params = load_params(path)
    collect_dataset(params, progress=False)
    collect_dataset(params, heldout=True, progress=False)
    train_vae(params, progress=False)
    train_dynamics(params, progress=False)
    return root, path, params


def test_step_helpers_group_frames_into_steps():
    assert context_steps(8, 4).tolist() == [3, 7] and context_steps(8, 1).tolist() == list(range(8))
    assert context_steps(3, 4).tolist() == [2]
    grouped = actions_by_step(torch.tensor([[1, 2, 3, 4, 5, 6]]), 4)
    assert grouped.tolist() == [[[1, 2, 3, 4], [5, 6, 6, 6]]]  # the partial step repeats its last action
    assert recorded_steps(np.arange(10, 21), 4).tolist() == [[10, 11, 12, 13], [14, 15, 16, 17]]
    # classes 0 (−), 1 (none), 2 (+): a brick in four frames is a + step; + and − cancel
    classes = torch.tensor([[1, 1, 2, 1], [1, 1, 1, 1], [0, 1, 1, 1], [0, 2, 1, 1], [2, 2, 1, 0]])
    assert step_reward_classes(classes).tolist() == [2, 1, 0, 1, 2]


def test_a_step_takes_exactly_its_k_actions():
    dynamics = Dynamics(latent_dim=8, hidden_size=16, head_size=8, frames_per_step=K)
    assert dynamics.gru.input_size == 8 + K * 18
    latents, hidden = dynamics.step(torch.zeros(3, 8), torch.zeros(3, K, dtype=torch.long))
    assert latents.shape == (3, 8) and hidden.shape == (1, 3, 16)
    with pytest.raises(ValueError, match="a step takes 4 actions"):
        dynamics.step(torch.zeros(3, 8), torch.zeros(3, dtype=torch.long))


def test_frames_per_step_beyond_the_stack_is_refused(tmp_path):
    settings = tiny_params_dict(tmp_path, [GAME])
    settings["dynamics"]["frames_per_step"] = 5
    result = run_cli("config", "--params", str(write_params(tmp_path, settings)))
    code, err = result.returncode, result.stderr
    assert code != 0 and "frames_per_step=5 exceeds data.stack_size=4" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_training_sequences_step_k_frames_with_the_k_actions_between(world):
    _, _, params = world
    episodes = load_episodes(params.data.out_dir, [GAME])
    latents = torch.arange(len(episodes), dtype=torch.float32)[:, None]  # latent i names frame i
    mask = np.ones(len(episodes), dtype=bool)
    starts = sequence_starts(episodes, 4, 3, mask, 1, K)
    sequences = LatentSequences(latents, episodes, starts, 3, K)
    batch_latents, actions, rewards, game_overs, first = next(sequences.batches(5))
    frames = batch_latents[..., 0].long()  # (B, 4): the frames each latent stands for
    assert (frames - first[:, None] == torch.arange(0, 4 * K, K)).all()
    assert (actions == episodes.actions[frames[:, :-1, None] + torch.arange(K)]).all()
    assert actions.shape == (5, 3, K) and rewards.shape == (5, 3) and game_overs.shape == (5, 3)
    ids = episodes.episode_id
    assert all(ids[s] == ids[s + 3 * K] for s in starts)  # a sequence never crosses an episode end


def test_the_checkpoint_remembers_four_frames_a_step(world):
    _, _, params = world
    state = ckpt.load_checkpoint(ckpt.final_checkpoint_path(params, "dynamics"), stage="dynamics")
    assert state["arch"]["frames_per_step"] == K
    model, _ = ckpt.load_world_model(ckpt.final_checkpoint_path(params, "dynamics"), params)
    assert model.frames_per_step == K and model.dynamics.gru.input_size == 64 + K * 18
    # a checkpoint from before the setting existed was one step a frame
    del state["arch"]["frames_per_step"]
    assert ckpt.dynamics_from_arch(state["arch"]).frames_per_step == 1


def test_evaluate_and_dream_speak_frames(world):
    root, path, params = world
    result = run_cli("evaluate", "--params", str(path), cwd=root)
    assert result.returncode == 0, result.stderr
    scores = json.loads((root / "metrics/eval.json").read_text())
    assert scores["settings"]["frames_per_step"] == K
    series = json.loads((root / "plots/series.json").read_text())[GAME]["model"]
    assert len(series["psnr"]) == params.evaluation.horizons == 10  # frames, not steps
    assert len(series["ball_recall"]) == 10 and np.isfinite(series["psnr"]).all()
    assert scores["games"][GAME]["reward_events"] >= 0  # the heads scored on whole steps
    gif = root / "outputs/k4.gif"
    result = run_cli("dream", "--params", str(path), "--steps", "7", "--out", str(gif), cwd=root)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(gif) as image:  # the context's frames, then one dreamt frame an action
        assert image.n_frames == params.data.stack_size - 1 + params.evaluation.context + 7
    from arcadedreamer.data.storage import load_game_data
    from arcadedreamer.viz.dream import dream

    model, _ = ckpt.load_world_model(ckpt.final_checkpoint_path(params, "dynamics"), params)
    data = load_game_data(root / "data/heldout" / GAME)
    result = dream(model, data, [1, 3, 3, 4, 4, 4, 0], 0, 0, 4, params.evaluation.context)
    assert result.dream_frames.shape == (7, 64, 64) and result.real_frames.shape == (7, 64, 64)


def test_a_dream_step_is_k_frames_of_one_held_action(world):
    _, path, params = world
    from arcadedreamer.control.dream_env import DreamEnv

    env = DreamEnv(GAME, model=str(ckpt.final_checkpoint_path(params, "dynamics")), params=path, horizon=10)
    env.reset(seed=0)
    infos = []
    truncated = terminated = False
    while not (truncated or terminated):
        _, _, terminated, truncated, info = env.step(1)
        infos.append(info)
    assert [i["frames"] for i in infos][:3] == [4, 8, 12][: len(infos)]
    if truncated:
        assert len(infos) == 3  # 10 frames: three steps of four


def test_a_controller_in_the_real_game_holds_its_action_for_a_step(world):
    _, _, params = world
    from arcadedreamer.models.controller import Agent, LinearController

    model, _ = ckpt.load_world_model(ckpt.final_checkpoint_path(params, "dynamics"), params)
    torch.manual_seed(0)
    controller = LinearController(64, model.dynamics.hidden_size, 4)
    player = Agent(controller, model, (0, 1, 3, 4), "sample", seed=3)
    stacks = torch.rand(2, 4, 64, 64)
    actions, states = [], []
    for _ in range(12):
        actions.append(player.act(stacks))
        states.append(None if player.hidden is None else player.hidden.clone())
    actions = torch.stack(actions, 1)  # (2, 12)
    for step in range(3):
        held = actions[:, step * K : step * K + K]
        assert (held == held[:, :1]).all(), "an action is held for the four frames of its step"
    assert len({tuple(a) for a in actions.T.tolist()}) > 1, "the controller chooses again each step"
    # the GRU is stepped once a step, with the step's four actions: its state changes at frames 4 and 8
    assert states[3] is None and states[4] is not None and torch.equal(states[4], states[7])
    assert not torch.equal(states[7], states[8])


def test_play_steps_the_model_once_a_step_and_shows_each_of_its_frames(world):
    _, _, params = world
    from arcadedreamer.viz.play import PlaySession

    model, _ = ckpt.load_world_model(ckpt.final_checkpoint_path(params, "dynamics"), params)
    session = PlaySession(GAME, model, dream=True)
    shown, hidden = [], []
    for action in (3, 4, 4, 4, 4, 3, 3, 3):
        session.step(action)
        shown.append(session.predicted.copy())
        hidden.append(session.hidden.clone())
    assert session.recorded["actions"][:8] == [3, 3, 3, 3, 4, 4, 4, 4]  # held for the step
    assert torch.equal(hidden[0], hidden[3]) and not torch.equal(hidden[3], hidden[4])
    assert any(not np.array_equal(shown[0], frame) for frame in shown[1:4]), (
        "four frames, not one shown four times"
    )


def test_the_controller_and_the_agent_learn_in_a_four_frame_dream(world):
    """Both stages on the four-frame world model: their dreams count frames (a step is four),
    the agent's life-loss head learns on steps, and both score whole real games."""
    root, _, params = world
    from arcadedreamer.control.agent import train_agent
    from arcadedreamer.control.train import train_controller

    model = ckpt.final_checkpoint_path(params, "dynamics")
    controller = train_controller(params, model, progress=False)
    agent = train_agent(params, model, progress=False)
    for report in (controller, agent):
        assert len(report["real_returns"]) == 2 and np.isfinite(report["real_reward_rate"])
        assert np.isfinite(report["dream_reward_rate"])
    # a dream of the controller's 6-frame horizon is two steps of four: 8 frames lived, at most
    from arcadedreamer.control.agent import fit_life_loss
    from arcadedreamer.control.dream_env import open_dream
    from arcadedreamer.control.train import dream_returns

    batch, _ = open_dream(GAME, model, params, "latent_and_state", 6, "heldout", 4)
    assert batch.horizon == 2 and batch.frames_per_step == K
    lived = dream_returns(batch, None, batch.contexts.starts[:4])["frames"]
    assert (lived % K == 0).all() and K <= lived.min() and lived.max() <= 8
    _, life = fit_life_loss(batch, params)
    frames = len(batch.contexts.latents)
    assert frames / K - 10 <= life["life_loss_steps"] <= frames / K  # one labelled state a step
    written = json.loads((root / "metrics/agent.json").read_text())
    assert written["eval_episodes"] == 2 and (root / "checkpoints/agent/agent.pt").exists()
    actor, world_model, _ = ckpt.load_controller(root / "checkpoints/agent/agent.pt")
    assert world_model.frames_per_step == K  # the agent plays as it dreamt: four frames an action
