import json

import pytest
import yaml

from arcadedreamer.config import Params, load_params, parse_params
from arcadedreamer.errors import UserError
from conftest import PROJECT_ROOT, run_cli


def test_project_params_file_has_the_original_defaults():
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.data.games == [
        "BreakoutNoFrameskip-v4",
        "PongNoFrameskip-v4",
        "SpaceInvadersNoFrameskip-v4",
    ]
    assert (params.data.frames_per_game, params.data.frame_size, params.data.stack_size) == (50000, 64, 4)
    assert (params.vae.latent_dim, params.vae.beta, params.vae.epochs) == (64, 1e-4, 50)
    assert (params.dynamics.hidden_size, params.dynamics.num_actions, params.dynamics.epochs) == (
        256,
        18,
        100,
    )
    assert params.dynamics.scheduled_sampling_prob == 0.5
    t = params.training
    assert (t.batch_size, t.lr, t.weight_decay, t.grad_clip, t.scheduler, t.checkpoint_every) == (
        128,
        3e-4,
        1e-5,
        1.0,
        "cosine",
        10,
    )
    assert params.model_dump() == Params().model_dump(), "params.yaml and the pydantic defaults agree"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"vae": {"latnt_dim": 64}}, "params.yaml: vae.latnt_dim: unknown key"),
        ({"vea": {}}, "params.yaml: vea: unknown key"),
        ({"vae": {"latent_dim": "big"}}, "params.yaml: vae.latent_dim: Input should be a valid integer"),
        ({"vae": {"latent_dim": -3}}, "params.yaml: vae.latent_dim: Input should be greater than 0"),
        (
            {"data": {"frames_per_game": 0}},
            "params.yaml: data.frames_per_game: Input should be greater than 0",
        ),
        (
            {"dynamics": {"scheduled_sampling_prob": 1.5}},
            "params.yaml: dynamics.scheduled_sampling_prob: Input should be less than or equal to 1",
        ),
        ({"data": {"games": ["Foo-v0"]}}, "params.yaml: data.games: unknown game id 'Foo-v0'"),
        (
            {"training": {"device": "tpu"}},
            "params.yaml: training.device: Input should be 'auto', 'cpu' or 'cuda'",
        ),
        ({"heldout": {"seed": 3}}, "heldout.seed range overlaps the seeds data.seed gives training"),
        (
            {"controller": {"population": 4096, "rollouts": 4096}},
            "params.yaml: controller: population × rollouts must stay within 65536 dreams",
        ),
        (
            {"controller": {"features": "pixels"}},
            "controller.features: Input should be 'latent_and_state' or 'latent'",
        ),
        (
            {"dynamics": {"max_event_weight": 0.5}},
            "dynamics.max_event_weight: Input should be greater than or equal to 1",
        ),
        ({"dream": {"game": "Breakot"}}, "params.yaml: dream.game: unknown game id 'Breakot'"),
        ({"controller": {"game": "Pongg"}}, "params.yaml: controller.game: unknown game id 'Pongg'"),
        ({"agent": {"game": "Tetris-v9"}}, "params.yaml: agent.game: unknown game id 'Tetris-v9'"),
        (  # the controller and the agent score in the same real games: one set of bounds for both
            {"agent": {"eval_episodes": 1}},
            "params.yaml: agent.eval_episodes: Input should be greater than or equal to 2",
        ),
        (
            {"agent": {"eval_seed": 2**31 - 2}},
            "params.yaml: agent: eval_seed + eval_episodes must stay within 2147483647",
        ),
        (
            {"controller": {"eval_seed": 2**31 - 2}},
            "params.yaml: controller: eval_seed + eval_episodes must stay within 2147483647",
        ),
        (
            {"controller": {"contexts": "test"}},
            "controller.contexts: Input should be 'training' or 'heldout'",
        ),
        (  # a 1-pixel window holds no 2×2 block: every ball would be a miss
            {"evaluation": {"ball_tolerance": 0}},
            "evaluation.ball_tolerance: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_values_name_the_dotted_key(raw, expected):
    with pytest.raises(UserError) as info:
        parse_params(raw)
    assert expected in str(info.value)


def test_every_problem_gets_its_own_line():
    with pytest.raises(UserError) as info:
        parse_params({"vae": {"latnt_dim": 1, "beta": -1}, "training": {"lr": 0}})
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith("params.yaml: ") for line in lines)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match=r"not valid YAML at line \d+"):
        load_params(bad)
    with pytest.raises(UserError, match="no such file"):
        load_params(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="is a directory"):
        load_params(tmp_path)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_params(scalar)


def test_cli_config_prints_resolved_config_and_schema(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"vae": {"epochs": 3}}))
    result = run_cli("config", "--params", str(path))
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["vae"] == {
        "latent_dim": 64,
        "beta": 1e-4,
        "epochs": 3,
        "loss": "bce",
        "input_norm": True,
        "surprise_weight": 0.5,
    }
    assert printed["dynamics"]["hidden_size"] == 256
    schema = json.loads(run_cli("config", "--schema").stdout)
    assert set(schema["properties"]) >= {
        "data",
        "vae",
        "dynamics",
        "training",
        "evaluation",
        "dream",
        "tracking",
    }


def test_cli_bad_params_exit_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"vae": {"latnt_dim": 64}}))
    result = run_cli("config", "--params", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: vae.latnt_dim: unknown key"
    assert "Traceback" not in result.stderr
