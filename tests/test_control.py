"""Learning inside the dream: the reward and game-over heads, DreamEnv checked by gymnasium's own
checker and trained in by stable-baselines3, and the controller stage end to end."""

import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
import yaml
from gymnasium.utils.env_checker import check_env

import arcadedreamer.control  # noqa: F401 - registers ArcadeDreamer/<Game>-Dream-v0
from arcadedreamer.control.dream_env import DreamEnv
from arcadedreamer.control.real_game import (
    constant_policy,
    difference_ci95,
    mean_and_ci95,
    play_episodes,
    random_policy,
)
from arcadedreamer.data.atari import minimal_action_set
from arcadedreamer.data.preprocessing import game_over_frames, reward_classes
from arcadedreamer.errors import UserError
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.controller import Agent, LinearController, explore, population_logits
from arcadedreamer.models.dynamics import EventHeads
from arcadedreamer.models.events import (
    expected_rewards,
    format_score,
    game_over_scores,
    predicted_events,
    reward_scores,
    roc_auc,
)
from arcadedreamer.training.common import balanced_class_weights
from conftest import run_cli, write_params

GAME = "BreakoutNoFrameskip-v4"


# --- the heads' labels, weights and scores (pure) ---


def test_game_overs_are_episode_ends_less_collection_cuts_and_truncations():
    ends = np.zeros(20, dtype=bool)
    ends[[4, 9, 14, 19]] = True  # episodes of 5 frames; 9 is where an emulator's quota cut it
    assert np.flatnonzero(game_over_frames(ends, np.array([9, 19]), max_episode_frames=100)).tolist() == [
        4,
        14,
    ]
    # an episode as long as max_episode_frames was truncated by ALE, not ended by the game
    assert np.flatnonzero(game_over_frames(ends, np.array([19]), max_episode_frames=5)).tolist() == []
    # one frame short of the budget, the first episode as the others: the game ended them
    assert np.flatnonzero(game_over_frames(ends, np.array([19]), max_episode_frames=6)).tolist() == [4, 9, 14]
    assert reward_classes(np.array([-1.0, 0.0, 4.0, 0.0])).tolist() == [0, 1, 2, 1]


def test_rare_classes_weigh_as_much_as_the_common_one_up_to_the_cap():
    weights = balanced_class_weights(torch.tensor([10, 980, 10]), max_weight=1000)
    assert torch.allclose(weights * torch.tensor([10.0, 980, 10]), torch.full((3,), 1000 / 3))
    assert balanced_class_weights(torch.tensor([0, 1000]), max_weight=50).tolist()[0] == 50


def test_event_scores_against_the_majority_baseline():
    true = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 2, 2])
    predicted = torch.tensor([1, 1, 1, 1, 1, 2, 1, 0, 2, 0])  # one false +, one sign wrong
    scores = reward_scores(predicted, true)
    assert scores["reward_events"] == 3
    assert scores["reward_recall"] == pytest.approx(2 / 3)
    assert scores["reward_precision"] == pytest.approx(2 / 4)
    assert scores["reward_accuracy"] == pytest.approx(0.8)
    assert scores["reward_majority_accuracy"] == pytest.approx(0.7)
    none = [0.0, 1.0, 0.0]
    probs = torch.tensor([none] * 5 + [[0, 0.3, 0.7], none, [0.5, 0.5, 0], [0, 0.2, 0.8], [0, 0.9, 0.1]])
    # the rewarded steps score 0.5, 0.8, 0.1 against six quiet steps at 0 and one at 0.7
    assert reward_scores(predicted, true, probs)["reward_auc"] == pytest.approx((6 + 7 + 6) / 21)
    game_overs = game_over_scores(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))
    assert game_overs["game_over_accuracy"] == 0.75 and game_overs["game_over_majority_accuracy"] == 0.75
    assert game_overs["game_over_balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(game_over_scores(torch.zeros(4), torch.zeros(4))["game_over_recall"])


def test_the_events_read_from_probabilities_and_their_edge_cases():
    rewards, game_overs = predicted_events(
        torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]), torch.tensor([0.5, 0.51])
    )
    assert rewards.tolist() == [1, 0] and game_overs.tolist() == [False, True], "over one half ends a game"
    batched, _ = predicted_events(torch.tensor([[[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]]), torch.zeros(1, 2))
    assert batched.tolist() == [[1, 0]], "the classes are the last axis, whatever the batch's shape"
    assert expected_rewards(torch.tensor([[0.2, 0.5, 0.3]])).item() == pytest.approx(0.1)
    assert roc_auc(torch.tensor([0.1, 0.9, 0.2]), torch.tensor([0, 1, 0])) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.1, 0.2]), torch.tensor([0, 1, 0])) == 0.0
    assert roc_auc(torch.full((4,), 0.3), torch.tensor([0, 1, 0, 1])) == 0.5, "ties count half"
    assert math.isnan(roc_auc(torch.rand(3), torch.ones(3))) and math.isnan(
        roc_auc(torch.rand(3), torch.zeros(3))
    )
    assert (format_score(0.914), format_score(0.914, 3), format_score(None), format_score(math.nan)) == (
        "0.91",
        "0.914",
        "n/a",
        "n/a",
    )
    scores = game_over_scores(torch.tensor([1, 1, 0, 0, 0]), torch.tensor([1, 0, 0, 0, 1]))
    assert (scores["game_over_precision"], scores["game_over_recall"], scores["game_over_events"]) == (
        0.5,
        0.5,
        2,
    )
    assert scores["game_over_balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert math.isnan(game_over_scores(torch.ones(3), torch.ones(3))["game_over_balanced_accuracy"])
    assert math.isnan(
        reward_scores(torch.ones(2, dtype=torch.long), torch.ones(2, dtype=torch.long))["reward_recall"]
    )


def test_heads_trained_with_balancing_weights_give_calibrated_probabilities():
    """A weighted cross-entropy learns the posterior scaled by the weights; the heads take the
    weights back out, so a 3% event reads as 3%, not as the ~50% the balanced logits say."""
    torch.manual_seed(0)
    states = torch.randn(4000, 8)
    true_rate = torch.where(states[:, 0] > 0, 0.06, 0.0)  # events only where feature 0 is positive
    classes = torch.where(torch.rand(4000) < true_rate, 2, 1)
    weights = balanced_class_weights(torch.bincount(classes, minlength=3), 1000)
    heads = EventHeads(8, 16)
    heads.set_class_weights(weights, torch.tensor(1.0))
    optimizer = torch.optim.Adam(heads.parameters(), lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(heads(states)[0], classes, weight=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        balanced = torch.softmax(heads(states)[0], -1)[:, 2]
        calibrated = heads.probabilities(states)[0]
    positive = states[:, 0] > 0
    assert balanced[positive].mean() > 0.3, "the balanced logits overstate the event"
    assert calibrated[positive, 2].mean().item() == pytest.approx(0.06, abs=0.02)
    assert calibrated[~positive, 2].mean().item() < 0.01
    assert expected_rewards(calibrated).mean().item() == pytest.approx(0.03, abs=0.01)


def test_a_population_of_controllers_acts_like_each_controller_alone():
    torch.manual_seed(0)
    controllers = [LinearController(5, 7, 3) for _ in range(4)]
    flat = torch.stack([torch.nn.utils.parameters_to_vector(c.parameters()) for c in controllers])
    features = torch.randn(4, 6, 12)
    together = population_logits(flat, features)
    for p, controller in enumerate(controllers):
        alone = controller(features[p, :, :5], features[p, :, 5:])
        assert torch.allclose(together[p], alone, atol=1e-5)
    copy = LinearController(5, 7, 3).load_flat(flat[2])
    assert torch.equal(copy.linear.weight, controllers[2].linear.weight)
    latent_only = LinearController(5, 0, 3)  # World Models' "V only": the GRU state is not read
    assert latent_only.num_parameters == 6 * 3
    assert torch.equal(
        latent_only(features[0, :, :5], features[0, :, 5:]), latent_only(features[0, :, :5], None)
    )


def test_exploration_replaces_the_chosen_action_at_the_rate_epsilon():
    chosen = torch.zeros(10_000, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    draws, random_actions = (
        torch.rand(10_000, generator=generator),
        torch.randint(4, (10_000,), generator=generator),
    )
    assert torch.equal(explore(chosen, 0.0, draws, random_actions), chosen)
    assert torch.equal(explore(chosen, 1.0, draws, random_actions), random_actions)
    mixed = explore(chosen, 0.05, draws, random_actions)
    # 5% of frames draw uniformly over 4 actions: 3.75% leave action 0
    assert (mixed != 0).float().mean().item() == pytest.approx(0.0375, abs=0.006)


def test_a_held_action_is_taken_every_frame_but_for_epsilon():
    actions = minimal_action_set(GAME)
    held = constant_policy(actions[2], GAME, epsilon=0.0, seed=0)(torch.zeros(500, 4, 64, 64))
    assert set(held.tolist()) == {actions[2]}
    noisy = constant_policy(actions[2], GAME, epsilon=0.2, seed=0)(torch.zeros(20_000, 4, 64, 64))
    assert set(noisy.tolist()) == set(actions)
    assert (noisy != actions[2]).float().mean().item() == pytest.approx(0.15, abs=0.01)


def test_confidence_intervals_match_scipys_t_tests():
    from scipy import stats

    rng = np.random.default_rng(0)
    first, second = rng.normal(1.0, 2.0, 30), rng.normal(0.0, 1.0, 30)
    mean, half = mean_and_ci95(first)
    low, high = stats.t.interval(0.95, 29, loc=first.mean(), scale=stats.sem(first))
    assert mean == pytest.approx(first.mean()) and half == pytest.approx((high - low) / 2)
    difference, half = difference_ci95(first, second)
    test = stats.ttest_ind(first, second, equal_var=False)
    low, high = test.confidence_interval(0.95)
    assert difference == pytest.approx(first.mean() - second.mean()) and half == pytest.approx(
        (high - low) / 2
    )


# --- DreamEnv on a tiny world model trained for real ---


def dream_kwargs(trained, **extra) -> dict:
    model = ckpt.final_checkpoint_path(trained.params, "dynamics")
    return {"model": str(model), "params": str(trained.params_path), **extra}


@pytest.mark.parametrize("observation", ["frame", "latent", "latent_and_state"])
def test_dream_env_passes_gymnasiums_env_checker(trained, observation):
    env = gymnasium.make(
        "ArcadeDreamer/Breakout-Dream-v0",
        render_mode="rgb_array",
        **dream_kwargs(trained, observation=observation),
    )
    with warnings.catch_warnings(record=True) as caught:  # the checker warns where it could fail
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    unbounded = "Box observation space m"  # latents have no bounds: the only warning allowed
    assert all(unbounded in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert env.action_space.n == len(minimal_action_set(GAME))
    observation_, _ = env.reset(seed=3)
    assert env.observation_space.contains(observation_)
    assert env.render().shape == (256, 256, 3)
    env.close()


def test_a_dream_is_seeded_ends_at_its_horizon_and_pays_the_heads_rewards(trained):
    env = DreamEnv(GAME, horizon=4, observation="latent", **dream_kwargs(trained))
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    assert np.array_equal(first, again)
    rewards, truncations = [], []
    for _ in range(4):
        _, reward, terminated, truncated, info = env.step(1)
        rewards.append(reward)
        truncations.append(truncated or terminated)
    assert truncations == [False, False, False, True] and info["step"] == 4
    assert all(-1.0 <= r <= 1.0 for r in rewards)
    with pytest.raises(ValueError, match="not in Discrete"):
        env.step(99)


def test_the_vector_env_steps_many_dreams_as_the_single_env_does(trained):
    vector = gymnasium.make_vec(
        "ArcadeDreamer/Breakout-Dream-v0", num_envs=3, vectorization_mode="vector_entry_point",
        **dream_kwargs(trained, observation="latent_and_state", horizon=2),
    )  # fmt: skip
    observations, _ = vector.reset(seed=10)
    actions = np.array([0, 1, 2])
    steps = [vector.step(actions) for _ in range(3)]
    for i in range(3):  # dream i is the single env reset with seed 10 + i
        single = DreamEnv(GAME, observation="latent_and_state", horizon=2, **dream_kwargs(trained))
        observation, _ = single.reset(seed=10 + i)
        assert np.allclose(observation, observations[i], atol=1e-5)
        for step in steps[:2]:
            observation, reward, _, truncated, _ = single.step(int(actions[i]))
            assert np.allclose(observation, step[0][i], atol=1e-4) and reward == pytest.approx(
                step[1][i], abs=1e-5
            )
        assert truncated and steps[1][3][i]
    # next-step autoreset: the step after a truncation restarts the dream and pays nothing
    assert np.all(steps[2][1] == 0) and not steps[2][3].any() and not steps[2][2].any()
    vector.close()


def test_bad_dream_settings_are_one_line_errors(trained, tmp_path):
    with pytest.raises(UserError, match="observation='pixels': choose one of frame, latent"):
        DreamEnv(GAME, observation="pixels", **dream_kwargs(trained))
    with pytest.raises(UserError, match="checkpoint not found"):
        DreamEnv(GAME, model=str(tmp_path / "missing.pt"), params=str(trained.params_path))
    with pytest.raises(UserError, match="trained on"):
        DreamEnv("SpaceInvadersNoFrameskip-v4", **dream_kwargs(trained))
    for horizon in (-3, 0, 2.5, True, 10**9):
        with pytest.raises(UserError, match=r"horizon=.*: give a whole number in 1…10000"):
            DreamEnv(GAME, horizon=horizon, **dream_kwargs(trained))
    with pytest.raises(UserError, match=r"num_envs=0: give 1 to 65536 dreams"):
        gymnasium.make_vec(
            "ArcadeDreamer/Breakout-Dream-v0", num_envs=0, vectorization_mode="vector_entry_point",
            **dream_kwargs(trained),
        )  # fmt: skip


def test_dreams_start_from_the_training_recordings_by_the_controllers_default(trained):
    """`controller.contexts: training` (the default): contexts from data.out_dir, not held-out."""
    env = DreamEnv(GAME, observation="latent", contexts="training", horizon=3, **dream_kwargs(trained))
    training = np.load(trained.root / "data/collected" / GAME / "frames.npy")
    assert len(env.dream.contexts.latents) == len(training), "the training recording's frames"
    first, _ = env.reset(seed=1)
    again, _ = env.reset(seed=1)
    assert np.array_equal(first, again)
    with pytest.raises(UserError, match="contexts='test': choose heldout or training"):
        DreamEnv(GAME, contexts="test", **dream_kwargs(trained))


def own_registry(trained, root) -> tuple[str, dict]:
    """A tracking store of the test's own holding two registered versions of the trained world
    model: (its params file, {version: its artifact folder})."""
    import mlflow

    from arcadedreamer import tracking
    from arcadedreamer.config import load_params

    raw = yaml.safe_load(trained.params_path.read_text())
    raw["tracking"]["uri"] = f"sqlite:///{root / 'mlflow.db'}"
    path = write_params(root, raw)
    params = load_params(path)
    folders = {}
    for _ in range(2):
        with tracking.stage_run("dynamics", params):
            version = tracking.register_checkpoint(
                tracking.DYNAMICS_MODEL, ckpt.final_checkpoint_path(trained.params, "dynamics"), {}
            )
        source = mlflow.MlflowClient().get_model_version(tracking.DYNAMICS_MODEL, version).source
        location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
        folders[version] = Path(location.removeprefix("file://"))
    return str(path), folders


def test_the_dream_env_dreams_with_the_champion_and_names_a_broken_one(trained, tmp_path, capsys):
    """No model given: before any evaluation the newest version, said aloud; then @champion.
    A champion whose files are gone is an error naming it, never a quiet stand-in."""
    from arcadedreamer import tracking

    params, folders = own_registry(trained, tmp_path)
    DreamEnv(GAME, params=params, observation="latent")
    assert "has no @champion yet (nothing evaluated): using version 2, the newest registered" in (
        capsys.readouterr().err
    )
    tracking.set_alias(tracking.DYNAMICS_MODEL, "champion", "1")
    env = DreamEnv(GAME, params=params, observation="latent")
    assert env.reset(seed=0)[0].shape == (64,) and capsys.readouterr().err == ""
    shutil.rmtree(folders["1"])
    with pytest.raises(UserError) as info:
        DreamEnv(GAME, params=params)
    message = str(info.value)
    assert message.startswith(
        f"models:/{tracking.DYNAMICS_MODEL}@champion is version 1, which cannot be loaded"
    )
    assert "point @champion at a good version" in message and "\n" not in message
    result = run_cli("dream", "--steps", "3", "--out", str(tmp_path / "d.gif"), "--params", params)
    assert result.returncode == 2 and "@champion is version 1, which cannot be loaded" in result.stderr
    assert not (tmp_path / "d.gif").exists()


def test_stable_baselines3_ppo_trains_in_the_dream(trained):
    """A standard agent library, not written here, learns in DreamEnv: its own env checker
    passes and a few hundred PPO steps run through rollouts and updates."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.logger import Logger

    env = DreamEnv(GAME, observation="latent", horizon=32, **dream_kwargs(trained))
    sb3_check_env(env)
    torch.manual_seed(0)
    agent = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu", verbose=0)
    agent.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default makes a folder in /tmp
    agent.learn(total_timesteps=256)
    assert agent.num_timesteps == 256
    assert agent.logger.name_to_value["train/n_updates"] == 4
    action, _ = agent.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(int(action))


# --- the real game and the controller stage ---


def test_seeded_real_episodes_replay_identically():
    policy = random_policy(GAME, seed=5)
    first = play_episodes(GAME, policy, episodes=2, seed=100, max_frames=300, progress=False)
    second = play_episodes(
        GAME, random_policy(GAME, seed=5), episodes=2, seed=100, max_frames=300, progress=False
    )
    assert np.array_equal(first["returns"], second["returns"]) and first["frames"].tolist() == [300, 300]


def test_the_baselines_games_are_played_once_a_process_and_equal_a_replay(capsys):
    """An agent's rounds score the random policy and the held actions on the same seeded games
    every round: the second time they are read back (equal to playing them again), and any
    other game setting plays them anew."""
    from arcadedreamer.control import train

    common = dict(episodes=2, seed=7, max_frames=1500, stack_size=4, frame_size=64, progress=False)
    train._BASELINE_GAMES.clear()
    first = train.baseline_games(GAME, 0.1, 3, True, common)
    assert "read back" not in capsys.readouterr().out and set(first[1]) == {"NOOP", "FIRE", "RIGHT", "LEFT"}
    again = train.baseline_games(GAME, 0.1, 3, True, {**common, "progress": True})
    assert "read back, not replayed" in capsys.readouterr().out and again is first
    train._BASELINE_GAMES.clear()
    replayed = train.baseline_games(GAME, 0.1, 3, True, common)
    assert replayed[0]["frames"].tolist() == first[0]["frames"].tolist()
    assert replayed[0]["returns"].tolist() == first[0]["returns"].tolist()
    assert {k: v.tolist() for k, v in replayed[1].items()} == {k: v.tolist() for k, v in first[1].items()}
    for changed in ({**common, "seed": 8}, {**common, "max_frames": 1400}):
        assert train.baseline_games(GAME, 0.1, 3, True, changed) is not first
        assert "read back" not in capsys.readouterr().out
    assert train.baseline_games(GAME, 0.2, 3, True, common) is not first  # another ε
    assert train.baseline_games(GAME, 0.1, 3, False, common)[1] == {}  # no held actions asked for


def test_controller_stage_trains_in_the_dream_scores_in_the_real_game_and_registers(trained, tmp_path):
    result = run_cli("controller", "--params", str(trained.params_path))
    assert result.returncode == 0, result.stderr
    assert "controller generation 2/2: dream return mean" in result.stdout
    assert "controller in the real game:" in result.stdout and "random" in result.stdout
    cfg = trained.params.controller
    summary = json.loads(open(cfg.metrics_file).read())
    assert summary["eval_episodes"] == 2 and len(summary["real_returns"]) == 2
    assert summary["beats_random"] == (summary["real_minus_random"] - summary["real_minus_random_ci95"] > 0)
    # the simplest policies beside it: each action held every frame (with ε), the best one compared
    assert set(summary["constant_return_means"]) == {"NOOP", "FIRE", "RIGHT", "LEFT"}
    assert summary["best_constant_return_mean"] == max(summary["constant_return_means"].values())
    assert summary["beats_best_constant"] == (
        summary["real_minus_best_constant"] - summary["real_minus_best_constant_ci95"] > 0
    )
    assert f"the best action held every frame (with ε), {summary['best_constant_action']}:" in result.stdout
    for key in ("dream_return_mean", "real_return_mean", "random_return_mean", "dream_real_gap"):
        assert math.isfinite(summary[key]), key
    controller, world_model, checkpoint = ckpt.load_controller(f"{cfg.out_dir}/controller.pt")
    assert checkpoint["game"] == GAME and controller.linear.out_features == len(minimal_action_set(GAME))
    assert checkpoint["epsilon"] == summary["epsilon"] == cfg.epsilon
    # a controller that never chose FIRE in its dreams still serves with ε: Breakout's score needs it
    controller.linear.weight.data.zero_()
    controller.linear.bias.data.copy_(torch.tensor([-50.0, -50.0, 50.0, -50.0]))  # always RIGHT
    actions = minimal_action_set(GAME)
    for epsilon, serves in ((0.0, False), (0.2, True)):
        agent = Agent(controller, world_model, actions, "sample", seed=0, epsilon=epsilon)
        taken = torch.cat([agent.act(torch.zeros(4, 4, 64, 64)) for _ in range(50)])
        assert (taken == actions[1]).any().item() is serves  # FIRE
    # a controller checkpoint with a bad choice or ε names it in one line
    for key, value, fragment in (("epsilon", 2.0, "'epsilon' must be a number from 0 to 1"),
                                 ("action_choice", "greedy", "'action_choice' must be sample or argmax")):  # fmt: skip
        damaged = tmp_path / f"bad_{key}.pt"
        torch.save({**checkpoint, key: value}, damaged)
        with pytest.raises(UserError, match=fragment):
            ckpt.load_controller(damaged)
    assert "registered arcadedreamer-controller version" in result.stdout
    import mlflow

    client = mlflow.MlflowClient(trained.params.tracking.uri)
    run_id = client.get_model_version("arcadedreamer-controller", "1").run_id
    assert len(client.get_metric_history(run_id, "population_dream_return")) == cfg.generations
    logged = client.get_run(run_id).data.metrics
    assert logged["real_return_mean"] == pytest.approx(summary["real_return_mean"])
    assert logged["real_minus_random_ci95"] == pytest.approx(summary["real_minus_random_ci95"])
    # the registered version acts in a fresh process, from MLflow alone
    script = (
        "import mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({trained.params.tracking.uri!r})\n"
        "m = mlflow.pyfunc.load_model('models:/arcadedreamer-controller/1')\n"
        "print(m.predict(np.zeros((2, 3, 4, 64, 64), dtype=np.float32)).shape)"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("(2, 3)"), loaded.stderr[-2000:]
    # and plays the real game beside its dream
    shot = tmp_path / "agent.png"
    played = run_cli(
        "play", "--game", GAME, "--agent", f"{cfg.out_dir}/controller.pt", "--dream", "--headless",
        "--steps", "5", "--screenshot", str(shot), "--params", str(trained.params_path),
    )  # fmt: skip
    assert played.returncode == 0, played.stderr
    assert "played 5 steps" in played.stdout and shot.stat().st_size > 0
    wrong = run_cli("play", "--game", "PongNoFrameskip-v4", "--agent", f"{cfg.out_dir}/controller.pt",
                    "--headless", "--steps", "2", "--params", str(trained.params_path))  # fmt: skip
    assert wrong.returncode != 0 and f"this controller plays {GAME}" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_controller_stage_refuses_bad_input_before_any_work(trained, tmp_path):
    missing = run_cli(
        "controller", "--params", str(trained.params_path), "--model", str(tmp_path / "none.pt")
    )
    assert missing.returncode == 2 and "none.pt: checkpoint not found" in missing.stderr
    raw = yaml.safe_load(trained.params_path.read_text())
    raw["controller"]["game"] = "SpaceInvadersNoFrameskip-v4"
    other = write_params(tmp_path / "other", raw)
    untrained = run_cli("controller", "--params", str(other))
    assert untrained.returncode == 2 and "not SpaceInvadersNoFrameskip-v4" in untrained.stderr
    raw["controller"]["population"] = 1
    bad = run_cli("controller", "--params", str(write_params(tmp_path / "bad", raw)))
    assert (
        bad.returncode == 2
        and "controller.population: Input should be greater than or equal to 2" in bad.stderr
    )
    for result in (missing, untrained, bad):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
