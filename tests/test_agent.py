"""The actor-critic in imagination: its losses on hand-made returns, its learning on a bandit,
and the agent stage on the tiny world model, scored in the real game and registered."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from arcadedreamer.config import load_params
from arcadedreamer.errors import UserError
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.agent import (
    Actor,
    Critic,
    LifeLossHead,
    ReturnScale,
    actor_loss,
    critic_loss,
    lambda_returns,
    step_weights,
    update_slow,
)
from conftest import run_cli, write_params

GAME = "BreakoutNoFrameskip-v4"


def nan_to_null(value):
    """A report as strict JSON writes it: NaN as null, also inside lists and dicts."""
    if isinstance(value, dict):
        return {k: nan_to_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_null(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def column(*values: float) -> torch.Tensor:
    """(T, 1): one dream's values over time."""
    return torch.tensor(values, dtype=torch.float64)[:, None]


def test_lambda_returns_on_hand_computed_values():
    rewards, continues, values = column(1.0, 2.0), column(1.0, 1.0), column(0.5, 1.0, 3.0)
    # R_2 = v_2 = 3; R_1 = 2 + 0.9 (0.5·3 + 0.5·3) = 4.7; R_0 = 1 + 0.9 (0.5·1 + 0.5·4.7) = 3.565
    assert lambda_returns(rewards, continues, values, 0.9, 0.5)[:, 0].tolist() == pytest.approx([3.565, 4.7])
    # λ = 1: the discounted sum of rewards and the last value; λ = 0: one-step TD targets
    assert lambda_returns(rewards, continues, values, 0.9, 1.0)[:, 0].tolist() == pytest.approx([5.23, 4.7])
    assert lambda_returns(rewards, continues, values, 0.9, 0.0)[:, 0].tolist() == pytest.approx([1.9, 4.7])
    # a game that ends after the first step: nothing after it counts
    ended = lambda_returns(rewards, column(0.0, 1.0), values, 0.9, 0.5)
    assert ended[0, 0].item() == pytest.approx(1.0)


def test_later_states_weigh_by_discount_and_continuation():
    weights = step_weights(column(1.0, 0.5, 1.0), 0.9)
    assert weights[:, 0].tolist() == pytest.approx([1.0, 0.9, 0.405])


def test_the_critic_learns_the_slow_critics_targets_not_its_own(tmp_path):
    """With no reward, the λ-returns are the slow critic's values (here 0) wherever the game goes
    on; the online critic, answering 10 everywhere, is pulled toward them, and the slow one
    follows it by `slow_critic_fraction` of the way."""
    from arcadedreamer.control.agent import Learner

    raw = {"agent": {"units": 8, "layers": 1, "discount": 0.9, "slow_critic_fraction": 0.25}}
    learner = Learner(load_params(write_params(tmp_path, raw)), latent_dim=3, state_size=2, num_actions=4)
    learner.critic.net[-1].bias.data.fill_(10.0)
    steps, dreams = 4, 5
    rollout = {
        "features": torch.randn(steps + 1, dreams, 5),
        "actions": torch.zeros(steps, dreams, dtype=torch.long),
        "rewards": torch.zeros(steps, dreams),
        "continues": torch.ones(steps, dreams),
    }
    losses = learner.update(rollout)
    weights = 0.9 ** torch.arange(steps, dtype=torch.float32)  # γ^t, every dream alike
    assert losses["critic_loss"] == pytest.approx(float(0.5 * (weights * 100).mean()), rel=1e-5)
    slow_bias, fast_bias = learner.slow_critic.net[-1].bias.item(), learner.critic.net[-1].bias.item()
    assert fast_bias < 10.0, "the critic moved toward its targets"
    assert slow_bias == pytest.approx(0.25 * fast_bias, rel=1e-5)


def test_a_fresh_actor_is_the_uniform_policy_and_a_fresh_critic_expects_nothing():
    torch.manual_seed(0)
    latents, states = torch.randn(6, 3), torch.randn(6, 2)
    assert torch.equal(Actor(3, 2, 4, 8, 2)(latents, states), torch.zeros(6, 4))
    assert torch.equal(Critic(5, 8, 2)(torch.cat([latents, states], -1)), torch.zeros(6))


def test_the_critic_loss_is_half_the_weighted_squared_error():
    values, targets, weights = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 3.0]), torch.tensor([1.0, 0.5])
    assert critic_loss(values, targets, weights).item() == pytest.approx(0.5 * (4 * 1.0 + 1 * 0.5) / 2)


def test_the_life_loss_head_gives_one_probability_a_state():
    head = LifeLossHead(4)
    torch.nn.init.constant_(head.linear.weight, 0.5)
    torch.nn.init.constant_(head.linear.bias, -1.0)
    states = torch.ones(3, 5, 4)  # (T, B, H): the states of an imagined batch
    probabilities = head(states)
    assert probabilities.shape == (3, 5)
    assert torch.allclose(probabilities, torch.full((3, 5), 1 / (1 + math.exp(-1.0))))


def test_slow_weights_move_the_given_fraction():
    slow, fast = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    for module, value in ((slow, 0.0), (fast, 1.0)):
        for param in module.parameters():
            param.data.fill_(value)
    update_slow(slow, fast, 0.25)
    assert all(torch.allclose(p, torch.full_like(p, 0.25)) for p in slow.parameters())


def test_return_scale_shrinks_large_returns_and_leaves_small_ones():
    scale = ReturnScale(decay=0.5)
    assert scale.update(torch.linspace(0, 100, 1001)) == pytest.approx(90.0)
    assert scale.update(torch.linspace(0, 10, 1001)) == pytest.approx(0.5 * 90 + 0.5 * 9)
    assert ReturnScale(decay=0.99).update(torch.linspace(0, 0.1, 11)) == 1.0


def test_the_actor_loss_favours_an_action_by_its_advantage_and_entropy_spreads_it():
    logits = torch.zeros(1, 2, 3, requires_grad=True)  # (T, B, A): two dreams, uniform
    actions = torch.tensor([[0, 1]])
    advantages, weights = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    loss, entropy = actor_loss(logits, actions, advantages, weights, entropy_scale=0.0)
    assert entropy.item() == pytest.approx(math.log(3))
    loss.backward()
    stepped = logits.detach() - logits.grad  # a gradient step
    probs = torch.softmax(stepped, -1)[0]
    assert probs[0, 0] > 1 / 3 and probs[1, 1] < 1 / 3
    peaked = torch.tensor([[[5.0, 0.0, 0.0]]], requires_grad=True)
    loss, _ = actor_loss(peaked, torch.tensor([[0]]), torch.zeros(1, 1), torch.ones(1, 1), entropy_scale=1.0)
    loss.backward()
    assert peaked.grad[0, 0, 0] > 0, "the entropy bonus lowers the favoured logit"


def test_the_learner_finds_the_rewarded_action_of_a_bandit(tmp_path):
    """Actions drawn from the actor, a reward of 1 for action 2 only: after 150 updates the
    actor takes it almost always (REINFORCE on λ-returns, the critic as baseline)."""
    from arcadedreamer.control.agent import Learner
    from arcadedreamer.models.controller import sample_actions

    raw = {"agent": {"units": 16, "layers": 1, "actor_lr": 0.01, "critic_lr": 0.01}}
    learner = Learner(load_params(write_params(tmp_path, raw)), latent_dim=3, state_size=2, num_actions=4)
    generator = torch.Generator().manual_seed(0)
    steps, dreams = 3, 64
    for _ in range(150):
        features = torch.randn(steps + 1, dreams, 5, generator=generator)
        with torch.no_grad():
            logits = learner.actor(features[:-1, :, :3], features[:-1, :, 3:])
        actions = sample_actions(logits, torch.rand(steps, dreams, generator=generator))
        rewards = (actions == 2).float()
        learner.update({"features": features, "actions": actions, "rewards": rewards,
                        "continues": torch.ones(steps, dreams)})  # fmt: skip
    with torch.no_grad():
        probs = torch.softmax(learner.actor(torch.randn(256, 3), torch.randn(256, 2)), -1)
    assert probs[:, 2].mean() > 0.9, probs.mean(0)


def test_the_learners_dream_reward_rate_counts_frames_not_steps(tmp_path):
    """A reward of 1 every step of four frames is 250 per 1 000 dreamt frames, and γ applies
    per frame (γ^4 a step)."""
    from arcadedreamer.control.agent import Learner

    params = load_params(write_params(tmp_path, {"agent": {"units": 8, "layers": 1, "discount": 0.9}}))
    for frames_per_step, rate in ((1, 1000.0), (4, 250.0)):
        learner = Learner(params, latent_dim=3, state_size=2, num_actions=4, frames_per_step=frames_per_step)
        assert learner.discount == pytest.approx(0.9**frames_per_step)
        point = learner.update({"features": torch.zeros(4, 2, 5), "actions": torch.zeros(3, 2, dtype=torch.long),
                                "rewards": torch.ones(3, 2), "continues": torch.ones(3, 2)})  # fmt: skip
        assert point["dream_reward_rate"] == pytest.approx(rate)


def test_bad_agent_settings_are_refused_in_one_line(tmp_path):
    for key, value, fragment in (
        ("horizon", 1, "agent.horizon: Input should be greater than or equal to 2"),
        ("discount", 1.5, "agent.discount: Input should be less than or equal to 1"),
        ("game", "Tetris", "agent.game"),
        ("dreams", 65_536, "dreams × horizon must stay within"),
    ):
        with pytest.raises(UserError, match=fragment):
            load_params(
                write_params(
                    tmp_path, {"agent": {key: value, "horizon": 100} if key == "dreams" else {key: value}}
                )
            )


def test_rounds_that_would_replay_the_scored_games_are_refused(tmp_path):
    clash = {"agent": {"rounds": 2, "round_seed": 1_999_000, "eval_seed": 2_000_000}}
    with pytest.raises(UserError, match="would replay the scored games"):
        load_params(write_params(tmp_path, clash))
    assert load_params(write_params(tmp_path, {"agent": {**clash["agent"], "rounds": 0}})).agent.rounds == 0


def test_agent_stage_learns_in_the_dream_scores_in_the_real_game_and_registers(trained, tmp_path):
    """The stage on the tiny world model: its report beside the random policy, each held action
    and the controller (scored on the same games first), its checkpoint a whole agent that plays
    and that the registry serves."""
    from arcadedreamer.control.agent import train_agent
    from arcadedreamer.control.train import train_controller

    raw = yaml.safe_load(trained.params_path.read_text())
    for section, key in (("controller", "out_dir"), ("controller", "metrics_file"), ("agent", "out_dir"),
                         ("agent", "metrics_file")):  # fmt: skip
        raw[section][key] = str(tmp_path / raw[section][key].rsplit("/", 1)[-1])
    raw["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = load_params(write_params(tmp_path, raw))
    model = ckpt.final_checkpoint_path(params, "dynamics")
    train_controller(params, model, progress=False)
    summary = train_agent(params, model, progress=False)
    report = json.loads(open(params.agent.metrics_file).read())
    # the report is the summary, with a ratio of nothing played written as null (strict JSON)
    written = nan_to_null({k: v for k, v in summary.items() if k != "registered_version"})
    assert report == json.loads(json.dumps(written))
    assert report["rounds"] == 0 and [r["round"] for r in report["round_scores"]] == [0]
    assert len(report["real_returns"]) == 2 and report["eval_episodes"] == 2
    assert report["beats_random"] == (report["real_minus_random"] - report["real_minus_random_ci95"] > 0)
    assert set(report["constant_return_means"]) == {"NOOP", "FIRE", "RIGHT", "LEFT"}
    # the controller played the same seeded games: its returns are compared game by game
    controller = json.loads(open(params.controller.metrics_file).read())
    assert report["controller_return_mean"] == pytest.approx(np.mean(controller["real_returns"]))
    assert report["beats_controller"] == (
        report["real_minus_controller"] - report["real_minus_controller_ci95"] > 0
    )
    for key in (
        "dream_reward_rate",
        "dream_random_reward_rate",
        "real_reward_rate",
        "dream_value_last_update",
    ):
        assert math.isfinite(report[key]), key
    actor, world_model, checkpoint = ckpt.load_controller(f"{params.agent.out_dir}/agent.pt")
    assert isinstance(actor, Actor) and checkpoint["stage"] == "agent" and checkpoint["game"] == GAME
    assert checkpoint["epsilon"] == report["epsilon"] == params.agent.epsilon
    assert set(checkpoint["critic"]) and checkpoint["world_model"]["arch"]["hidden_size"] == 32
    # a damaged actor is named in one line
    damaged = tmp_path / "bad_agent.pt"
    torch.save({**checkpoint, "model": {"net.0.weight": torch.zeros(2, 2)}}, damaged)
    with pytest.raises(UserError, match="'model' does not hold an agent's actor's weights"):
        ckpt.load_controller(damaged)
    # registered, and served from MLflow alone in a fresh process
    version = summary["registered_version"]
    script = (
        "import mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({params.tracking.uri!r})\n"
        f"m = mlflow.pyfunc.load_model('models:/arcadedreamer-agent/{version}')\n"
        "print(m.metadata.signature is not None, m.predict(np.zeros((2, 3, 4, 64, 64), dtype=np.float32)).shape)"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("True (2, 3)"), loaded.stderr[-2000:]
    # and plays the real game, as the controller does
    played = run_cli("play", "--game", GAME, "--agent", f"{params.agent.out_dir}/agent.pt", "--headless",
                     "--steps", "3", "--params", str(tmp_path / "params.yaml"))  # fmt: skip
    assert played.returncode == 0 and "played 3 steps" in played.stdout, played.stderr


def test_a_lost_life_ends_a_dream_and_is_learnt_from_the_recorded_ram(trained, tmp_path):
    """The head is fitted on exactly the steps of the recording that lost a life (the RAM's
    counter), and the dreams it judges to have lost one stop counting."""
    from arcadedreamer.control.agent import fit_life_loss, imagine
    from arcadedreamer.control.dream_env import open_dream
    from arcadedreamer.data.objects import lives_lost
    from arcadedreamer.data.preprocessing import stack_start_indices
    from arcadedreamer.data.storage import load_game_data
    from arcadedreamer.models.agent import LifeLossHead

    raw = yaml.safe_load(trained.params_path.read_text())
    raw["agent"]["contexts"] = "training"
    params = load_params(write_params(tmp_path, raw))
    batch, _ = open_dream(GAME, ckpt.final_checkpoint_path(params, "dynamics"), params, "latent_and_state", 6,
                          "training", 8)  # fmt: skip
    head, report = fit_life_loss(batch, params)
    data = load_game_data(trained.root / "data/collected" / GAME)
    valid = np.zeros(len(data.episode_ends), dtype=bool)
    valid[stack_start_indices(data.episode_ends, 4)] = True
    usable = valid & ~data.episode_ends
    assert report["life_losses"] == int(lives_lost(GAME, data.ram, data.episode_ends)[usable].sum()) > 0
    assert report["life_loss_steps"] == int(usable.sum())
    assert head is not None and 0.0 <= report["life_loss_auc"] <= 1.0  # the last episode lost a life too
    starts = batch.contexts.starts[:8]
    actor = Actor(64, 32, 4, 8, 1)
    for bias, ends in ((50.0, True), (-50.0, False)):
        certain = LifeLossHead(32)
        torch.nn.init.zeros_(certain.linear.weight)
        torch.nn.init.constant_(certain.linear.bias, bias)
        rollout = imagine(batch, actor, starts, torch.Generator().manual_seed(0), certain)
        assert bool((rollout["continues"] < 1e-6).all()) is ends
    plain = imagine(batch, actor, starts, torch.Generator().manual_seed(0))
    assert torch.allclose(rollout["continues"], plain["continues"])  # a head that never fires changes nothing
    assert fit_life_loss(
        batch,
        load_params(write_params(tmp_path / "off", {**raw, "agent": {**raw["agent"], "life_loss": False}})),
    ) == (None, {})


def test_rounds_of_real_play_grow_the_data_fine_tune_the_world_and_go_on_learning(trained, tmp_path, capsys):
    """Two rounds on the tiny world model: each records the agent's own real games (replayable
    from their seeds and actions), fine-tunes the world model on the grown data, and goes on
    from the last round's agent; one MLflow run a round. Raising agent.rounds by one runs only
    the new round; changing a round's setting runs them all again."""
    import mlflow

    from arcadedreamer.control.agent import train_agent
    from arcadedreamer.data.dataset import data_hash, load_episodes
    from arcadedreamer.data.emulator import replay
    from arcadedreamer.data.storage import load_game_data
    from arcadedreamer.training.dynamics_trainer import train_dynamics

    raw = yaml.safe_load(trained.params_path.read_text())
    raw["agent"] |= {"out_dir": str(tmp_path / "agent"), "metrics_file": str(tmp_path / "agent.json"),
                     "contexts": "training", "rounds": 2, "round_episodes": 2, "round_dynamics_epochs": 1,
                     "round_updates": 2, "eval_max_frames": 60, "constant_baselines": False}  # fmt: skip
    raw["tracking"] |= {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "register_models": False}
    params = load_params(write_params(tmp_path, raw))
    model = ckpt.final_checkpoint_path(params, "dynamics")
    summary = train_agent(params, model, progress=False, fine_tune=train_dynamics)
    report = json.loads((tmp_path / "agent.json").read_text())
    assert report["rounds"] == 2 and [r["round"] for r in report["round_scores"]] == [0, 1, 2]
    assert (
        report["round"] == 2 and report["real_return_mean"] == summary["round_scores"][-1]["real_return_mean"]
    )

    rounds_dir = tmp_path / "agent" / "rounds"
    original = ckpt.load_checkpoint(model, stage="dynamics")
    hashes, actors = [original["data_hash"]], []
    for index in (1, 2):
        folder = rounds_dir / f"round_{index}"
        recording = load_game_data(folder / "data" / GAME)
        assert recording.num_episodes == 2 and recording.manifest["episodes"] == 2
        # the agent's real games: each replays from its reset seed and the recorded actions
        for start, length, seed in recording.manifest["streams"]["rows"]:
            assert seed == 3_000_000 + 1000 * index + (start > 0)
            actions = recording.actions[start : start + length - 1]
            _, frames = replay(GAME, seed, actions)
            assert np.array_equal(frames, recording.frames[start : start + length])
        world = ckpt.load_checkpoint(folder / "checkpoints/dynamics/dynamics_epoch_1.pt", stage="dynamics")
        # fine-tuned on the collected data and every round's games so far, from the last world model
        grown = load_episodes(params.data.out_dir, params.data.games,
                              extra_roots=[rounds_dir / f"round_{i}" / "data" for i in range(1, index + 1)])  # fmt: skip
        assert world["data_hash"] == data_hash(grown) and world["data_hash"] not in hashes
        hashes.append(world["data_hash"])
        assert str(world["fine_tuned_from"]).endswith("dynamics_epoch_1.pt" if index == 2 else model.name)
        assert not torch.equal(world["model"]["gru.weight_hh_l0"], original["model"]["gru.weight_hh_l0"])
        assert all(torch.equal(world["vae"][k], v) for k, v in original["vae"].items())  # the VAE frozen
    for index in (0, 1, 2):
        agent = ckpt.load_checkpoint(rounds_dir / f"round_{index}" / "agent.pt", stage="agent")
        actors.append(agent["model"])
        assert agent["world_model"]["data_hash"] == hashes[index]
    # each round went on from the last: its optimiser has taken the earlier rounds' steps too
    steps = [ckpt.load_checkpoint(rounds_dir / f"round_{i}" / "agent.pt")["actor_optimizer"]["state"][0]["step"]
             for i in (0, 1, 2)]  # fmt: skip
    assert [int(s) for s in steps] == [3, 5, 7]
    final = ckpt.load_checkpoint(tmp_path / "agent" / "agent.pt", stage="agent")
    assert all(torch.equal(final["model"][k], actors[2][k]) for k in actors[2])
    runs = mlflow.MlflowClient(params.tracking.uri).search_runs(
        [mlflow.MlflowClient(params.tracking.uri).get_experiment_by_name("arcadedreamer").experiment_id],
        "tags.stage = 'agent'",
    )
    assert sorted((r.data.tags["agent.round"], r.data.tags["data_hash"]) for r in runs) == sorted(
        zip(("0", "1", "2"), hashes)
    )
    # the last round's run charts the real score round by round, and holds the figure
    client = mlflow.MlflowClient(params.tracking.uri)
    last = next(r for r in runs if r.data.tags["agent.round"] == "2")
    history = client.get_metric_history(last.info.run_id, "real_return_by_round")
    assert [(m.step, m.value) for m in history] == [
        (r["round"], r["real_return_mean"]) for r in report["round_scores"]
    ]
    assert [a.path for a in client.list_artifacts(last.info.run_id, "plots")] == ["plots/returns.png"]
    assert (tmp_path / "agent" / "returns.png").read_bytes() == (
        rounds_dir / "round_2" / "returns.png"
    ).read_bytes()

    # one more round: rounds 0-2 are read back, only round 3 plays, fine-tunes and learns
    before = {i: (rounds_dir / f"round_{i}" / "round.json").stat().st_mtime_ns for i in (0, 1, 2)}
    capsys.readouterr()
    raw["agent"]["rounds"] = 3
    train_agent(load_params(write_params(tmp_path, raw)), model, progress=False, fine_tune=train_dynamics)
    out = capsys.readouterr().out
    assert all(f"agent round {i}: finished before" in out for i in (0, 1, 2))
    assert "agent round 3/3: the agent plays 2 real games" in out and "agent round 1/3" not in out
    assert before == {i: (rounds_dir / f"round_{i}" / "round.json").stat().st_mtime_ns for i in (0, 1, 2)}
    assert [r["round"] for r in json.loads((tmp_path / "agent.json").read_text())["round_scores"]] == [
        0,
        1,
        2,
        3,
    ]
    # the report written elsewhere: every round is read back
    raw["agent"]["metrics_file"] = str(tmp_path / "moved" / "agent.json")
    train_agent(load_params(write_params(tmp_path, raw)), model, progress=False, fine_tune=train_dynamics)
    assert (
        capsys.readouterr().out.count("finished before") == 4 and (tmp_path / "moved" / "agent.json").exists()
    )
    # another setting of the rounds: nothing is read back
    raw["agent"] |= {"rounds": 1, "round_updates": 1}
    train_agent(load_params(write_params(tmp_path, raw)), model, progress=False, fine_tune=train_dynamics)
    assert "finished before" not in capsys.readouterr().out
