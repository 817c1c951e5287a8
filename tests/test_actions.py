import itertools

import pytest

from arcadedreamer.data.actions import (
    ACTION_ID,
    FULL_ACTIONS,
    action_from_keys,
    format_actions,
    minimal_action_names,
    parse_actions,
)
from arcadedreamer.errors import UserError
from conftest import run_cli

BREAKOUT = "BreakoutNoFrameskip-v4"


def test_full_action_set_is_ales_canonical_order():
    import ale_py

    assert len(FULL_ACTIONS) == 18
    for name, idx in ACTION_ID.items():
        assert int(getattr(ale_py.Action, name).value) == idx


def test_minimal_sets_as_the_games_list_them():
    assert minimal_action_names(BREAKOUT) == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert minimal_action_names("PongNoFrameskip-v4") == [
        "NOOP",
        "FIRE",
        "RIGHT",
        "LEFT",
        "RIGHTFIRE",
        "LEFTFIRE",
    ]


def test_original_example_is_fire_right_left_in_breakout():
    ids = parse_actions("1,1,1,2,2,3,3", BREAKOUT)
    assert format_actions(ids) == "FIRE,FIRE,FIRE,RIGHT,RIGHT,LEFT,LEFT"


def test_names_and_numbers_round_trip():
    ids = parse_actions("fire, RIGHT ,UPLEFTFIRE,0", BREAKOUT)
    assert ids == [ACTION_ID["FIRE"], ACTION_ID["RIGHT"], ACTION_ID["UPLEFTFIRE"], ACTION_ID["NOOP"]]
    assert parse_actions(format_actions(ids), BREAKOUT) == ids


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "--actions is empty"),
        ("1,,2", "empty token at position 2 (stray comma?)"),
        ("1,2,", "empty token at position 3"),
        ("-1", "'-1' is out of range 0…3"),
        ("4", "'4' is out of range 0…3"),
        ("JUMP", "unknown action 'JUMP'"),
        ("1,²", "unknown action '²'"),  # str.isdigit says yes, int() says no
        ("١", "unknown action '١'"),  # an Arabic-Indic one: not an ASCII number
    ],
)
def test_bad_tokens_are_named_with_the_valid_list(text, message):
    with pytest.raises(UserError) as info:
        parse_actions(text, BREAKOUT)
    assert message in str(info.value)
    assert "0=NOOP, 1=FIRE, 2=RIGHT, 3=LEFT" in str(info.value)


def test_keys_combine_into_the_full_action_set():
    seen = {}
    for up, down, left, right, fire in itertools.product([False, True], repeat=5):
        seen[(up, down, left, right, fire)] = FULL_ACTIONS[action_from_keys(up, down, left, right, fire)]
    assert seen[(True, False, False, True, True)] == "UPRIGHTFIRE"
    assert seen[(False, True, True, False, False)] == "DOWNLEFT"
    assert seen[(False, False, False, False, True)] == "FIRE"
    assert seen[(False, False, False, False, False)] == "NOOP"
    assert seen[(True, True, True, True, False)] == "NOOP", "opposite arrows cancel"
    assert set(seen.values()) == set(FULL_ACTIONS), "every ALE action is reachable from the keys"


def test_cli_actions_lists_numbers_and_names():
    result = run_cli("actions", "--game", BREAKOUT)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(n, name) for n, name, _ in lines] == [
        ("0", "NOOP"),
        ("1", "FIRE"),
        ("2", "RIGHT"),
        ("3", "LEFT"),
    ]
    bad = run_cli("actions", "--game", "Nope-v4")
    assert bad.returncode == 2
    assert "error: --game: unknown game id 'Nope-v4'" in bad.stderr
    assert "Traceback" not in bad.stderr
