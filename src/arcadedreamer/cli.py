"""The `arcadedreamer` command: parse, validate, call one function per command."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
import yaml

from arcadedreamer import interrupts
from arcadedreamer.config import (
    DEFAULT_PARAMS,
    MAX_DREAM_STEPS,
    MAX_FRAMES,
    Params,
    check_game_id,
    load_params,
)
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import check_output_path, exclusive_lock, lock_path_for

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: typer's rich panels print flags as "--headless <bool>"
    pretty_exceptions_enable=False,
    help="ArcadeDreamer: a VAE + GRU world model of Atari games, tracked with DVC and MLflow.",
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params YAML file.", dir_okay=True)]


def _check_dirs(cfg: Params, *keys: str) -> None:
    """The configured output folders, checked before any work starts."""

    for key in keys:
        section, name = key.split(".")
        check_output_path(getattr(getattr(cfg, section), name), key, is_dir=True)


def _game(game: str) -> str:
    try:
        return check_game_id(game)
    except ValueError as exc:
        raise UserError(f"--game: {exc}") from None


@app.command()
def config(
    params: ParamsOption = DEFAULT_PARAMS,
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON schema instead.")] = False,
) -> None:
    """Print the validated, resolved configuration (or its JSON schema)."""
    if schema:
        typer.echo(json.dumps(Params.model_json_schema(), indent=2))
        return
    typer.echo(yaml.safe_dump(load_params(params).model_dump(), sort_keys=False), nl=False)


@app.command()
def actions(
    game: Annotated[str, typer.Option("--game", help="Game id, e.g. BreakoutNoFrameskip-v4.")],
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """List the game's own actions: the numbers and names --actions accepts."""
    from arcadedreamer.data.actions import ACTION_ID, minimal_action_names

    game = _game(game)
    typer.echo(f"{game}: number  name  (ALE full-action id)")
    for number, name in enumerate(minimal_action_names(game)):
        typer.echo(f"  {number:>2}  {name:<14} ({ACTION_ID[name]})")


@app.command()
def collect(
    game: Annotated[
        str | None, typer.Option("--game", help="Only this game (default: all in params).")
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames", min=1, max=MAX_FRAMES, help="Frames per game (default: data.frames_per_game)."
        ),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Play the games with a seeded random policy and store 64×64 grayscale frames."""
    from arcadedreamer.data.collector import collect_dataset

    cfg = load_params(params)
    games = [_game(game)] if game else cfg.data.games
    _check_dirs(cfg, "data.out_dir")
    for m in collect_dataset(cfg, games=games, frames=frames):
        typer.echo(
            f"{m['game']}: {m['frames']} frames, {m['episodes']} episodes -> "
            f"{Path(cfg.data.out_dir) / m['game']} (hash {m['content_hash'][:12]})"
        )


@app.command()
def heldout(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Regenerate the pinned held-out evaluation episodes (seeds training never uses)."""
    from arcadedreamer.data.collector import collect_dataset

    cfg = load_params(params)
    _check_dirs(cfg, "heldout.out_dir")
    for m in collect_dataset(cfg, heldout=True):
        typer.echo(
            f"{m['game']}: {m['episodes']} held-out episodes, {m['frames']} frames (hash {m['content_hash'][:12]})"
        )


@app.command()
def train(
    stage: Annotated[str, typer.Option("--stage", help="vae or dynamics.")],
    vae_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--vae-checkpoint", help="VAE for the dynamics stage (default: the vae stage's final checkpoint)."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the stage's last checkpoint.")
    ] = False,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Train the VAE or the dynamics model; logs to MLflow and registers a model version."""
    if stage not in ("vae", "dynamics"):
        raise UserError(f"--stage: unknown stage '{stage}'; choose vae or dynamics")
    if vae_checkpoint is not None and stage != "dynamics":
        raise UserError("--vae-checkpoint only applies to --stage dynamics")
    cfg = load_params(params)
    _check_dirs(cfg, "training.checkpoint_dir", "training.metrics_dir")
    if vae_checkpoint is not None and not vae_checkpoint.exists():
        from arcadedreamer.models.checkpoints import stage_dir

        moved = stage_dir(cfg, "vae") / vae_checkpoint.name
        hint = (
            f"did you mean {moved}? (checkpoints live in <checkpoint_dir>/<stage>/)"
            if moved.exists()
            else (
                f"VAE checkpoints are written to {stage_dir(cfg, 'vae')}/ by `arcadedreamer train --stage vae`"
            )
        )
        raise UserError(f"--vae-checkpoint: {vae_checkpoint} not found; {hint}")
    # one training of a stage at a time in a project (the second would overwrite the first's checkpoints)
    lock = lock_path_for(f"train-{stage}", cfg.training.checkpoint_dir)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 holds it for all
    with (
        exclusive_lock(lock, f"{stage} training in {cfg.training.checkpoint_dir}")
        if main_rank
        else nullcontext()
    ):
        if stage == "vae":
            from arcadedreamer.training.vae_trainer import train_vae

            summary = train_vae(cfg, resume=resume)
            if not summary:  # a torchrun worker other than rank 0
                return
            typer.echo(
                f"VAE: held-out PSNR {summary['val_psnr']:.2f} dB vs mean frame "
                f"{summary['val_psnr_mean_frame']:.2f} dB"
            )
        else:
            from arcadedreamer.training.dynamics_trainer import train_dynamics

            summary = train_dynamics(cfg, vae_checkpoint=vae_checkpoint, resume=resume)
            if not summary:
                return
            typer.echo(
                f"dynamics: open-loop latent MSE {summary['val_loss_open_loop']:.3g} vs "
                f"copy-last {summary['val_loss_copy_last']:.3g}"
            )


def _resolve_model(model: str | None, params: Params) -> Path:
    """A checkpoint path, a `models:/…` URI, or by default the registry's @champion."""
    from arcadedreamer.models.checkpoints import resolve_world_model

    return resolve_world_model(model, params)


def _resolve_agent(agent: str, params: Params) -> Path:
    """A controller checkpoint path or a `models:/arcadedreamer-controller@…` URI → its file."""
    from arcadedreamer import tracking

    if agent.startswith("models:/"):
        return tracking.resolve_model_checkpoint(agent, params)
    return Path(agent)


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", help="Checkpoint path or models:/NAME@alias (default: @champion; before any, the newest)."
    ),
]


@app.command()
def evaluate(
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Dynamics checkpoint (default: the dynamics stage's final one)."),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Score open-loop rollouts on the held-out episodes against baselines; promote @champion."""
    from arcadedreamer.evaluation.stage import run_evaluate
    from arcadedreamer.models.checkpoints import final_checkpoint_path

    cfg = load_params(params)
    check_output_path(cfg.evaluation.metrics_file, "evaluation.metrics_file", suffix=".json")
    _check_dirs(cfg, "evaluation.plots_dir")
    run_evaluate(cfg, model or final_checkpoint_path(cfg, "dynamics"))
    typer.echo(f"wrote {cfg.evaluation.metrics_file} and {cfg.evaluation.plots_dir}/")


@app.command()
def controller(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Dynamics checkpoint to dream with (default: the dynamics stage's final one)."
        ),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Train the World Models controller in the dream (CMA-ES), then score it against the random
    policy in the real game."""
    from arcadedreamer.control.train import train_controller

    cfg = load_params(params)
    check_output_path(cfg.controller.metrics_file, "controller.metrics_file", suffix=".json")
    _check_dirs(cfg, "controller.out_dir")
    summary = train_controller(cfg, model)
    typer.echo(f"wrote {cfg.controller.out_dir}/controller.pt and {cfg.controller.metrics_file}")
    if not summary["beats_random"]:
        typer.echo("the controller does not beat the random policy outside the 95% interval (see the README)")


@app.command()
def agent(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Dynamics checkpoint to dream with (default: the dynamics stage's final one)."
        ),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Train an actor-critic in the dream (λ-returns, a slow critic), then score it in the real game
    against the random policy, each held action and the controller; with agent.rounds, rounds of
    its own real games that fine-tune the world model it goes on learning in."""
    from arcadedreamer.control.agent import train_agent
    from arcadedreamer.training.dynamics_trainer import train_dynamics

    cfg = load_params(params)
    check_output_path(cfg.agent.metrics_file, "agent.metrics_file", suffix=".json")
    _check_dirs(cfg, "agent.out_dir")
    summary = train_agent(cfg, model, fine_tune=train_dynamics)  # rounds fine-tune the world model
    typer.echo(f"wrote {cfg.agent.out_dir}/agent.pt and {cfg.agent.metrics_file}")
    if not summary["beats_random"]:
        typer.echo("the agent does not beat the random policy outside the 95% interval")


@app.command()
def scores(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Print the scorecard of the last evaluation (evaluation.metrics_file), a few lines per game."""
    from arcadedreamer.evaluation.stage import format_headline

    cfg = load_params(params)
    path = Path(cfg.evaluation.metrics_file)
    try:
        report = json.loads(path.read_text())
        report["games"]  # noqa: B018 - must be there
    except FileNotFoundError:
        raise UserError(
            f"{path}: no scores yet; run `arcadedreamer evaluate` (or `make quickstart`)"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not an evaluation report; run `arcadedreamer evaluate` again") from None
    typer.echo(format_headline(report))


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 5000,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (only this machine: 127.0.0.1).")
    ] = "127.0.0.1",
    print_url: Annotated[bool, typer.Option("--print-url", help="Print the address and exit.")] = False,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """The MLflow UI on this project's store, opened on the experiment's training runs; light:
    one worker and no job runner (the MLflow default starts four and a job queue)."""
    from arcadedreamer import tracking

    cfg = load_params(params)
    uri, url = tracking.ui_address(cfg, host, port)
    typer.echo(f"MLflow UI: {url}")
    if print_url:
        return
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    os.execve(sys.executable, command, env)


@app.command()
def dream(
    game: Annotated[str | None, typer.Option("--game", help="Game id (default: dream.game).")] = None,
    actions: Annotated[
        str | None, typer.Option("--actions", help='e.g. "FIRE,RIGHT,LEFT" or "1,1,2,3" (see `actions`).')
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", min=1, max=MAX_DREAM_STEPS, help="Seeded random actions when --actions is not given."
        ),
    ] = None,
    episode: Annotated[
        int | None,
        typer.Option("--episode", min=0, max=100_000, help="Held-out episode giving the real context."),
    ] = None,
    start: Annotated[
        int | None,
        typer.Option(
            "--start", min=0, max=MAX_FRAMES, help="Frame of that episode where the context starts."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="GIF path (default: outputs/dream_<game>.gif).")
    ] = None,
    model: ModelOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Imagine a sequence from real context and the given actions; write an animated GIF."""
    from arcadedreamer.data.actions import parse_actions

    cfg = load_params(params)
    game = _game(game or cfg.dream.game)
    out = check_output_path(out or Path(cfg.dream.out_dir) / f"dream_{game}.gif", "--out", suffix=".gif")
    if actions is not None:  # given on the command line: must be valid, even when empty
        action_ids = parse_actions(actions, game)
    elif cfg.dream.actions and not steps:
        action_ids = parse_actions(cfg.dream.actions, game)
    else:
        action_ids = None  # seeded random actions, `--steps` (or dream.steps) of them
    from arcadedreamer.viz.dream import run_dream  # torch: imported once the arguments are known good

    path = run_dream(
        cfg,
        game,
        _resolve_model(model, cfg),
        action_ids,
        steps=steps or cfg.dream.steps,
        episode=cfg.dream.episode if episode is None else episode,
        start=cfg.dream.start if start is None else start,
        out=out,
    )
    typer.echo(f"wrote {path}")


@app.command()
def play(
    game: Annotated[
        str, typer.Option("--game", help="Game id, e.g. BreakoutNoFrameskip-v4.")
    ] = "BreakoutNoFrameskip-v4",
    dream: Annotated[bool, typer.Option("--dream", help="Start in dream mode (D toggles it).")] = False,
    headless: Annotated[
        bool, typer.Option("--headless", help="No window: SDL dummy driver, seeded random policy.")
    ] = False,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, max=10_000_000, help="Stop after N steps.")
    ] = None,
    screenshot: Annotated[
        Path | None, typer.Option("--screenshot", help="Save the last frame of the window as PNG.")
    ] = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Save the session as collected data under DIR/<game>/.")
    ] = None,
    fps: Annotated[
        int | None, typer.Option("--fps", min=1, max=240, help="Frame rate (default: play.fps).")
    ] = None,
    model: ModelOption = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="A controller or agent (checkpoint path, or models:/arcadedreamer-controller@latest, "
            "models:/arcadedreamer-agent@latest) plays instead of you; with --dream, Predicted shows its own dream.",
        ),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Play the real game beside the world model: Real | Predicted | Overlay panels."""
    from arcadedreamer.models.checkpoints import check_trained_on, load_player, load_world_model
    from arcadedreamer.viz.play import run_play

    cfg = load_params(params)
    game = _game(game)
    if screenshot is not None:
        check_output_path(screenshot, "--screenshot", suffix=".png")
    if record is not None:
        check_output_path(record, "--record", is_dir=True)
    if headless and steps is None:
        raise UserError("--headless needs --steps N (there is no Esc key to stop it)")
    player = None
    if agent is not None:  # the controller brings the world model it dreamt with
        if model is not None:
            raise UserError("--agent brings its own world model; leave out --model")
        agent_path = _resolve_agent(agent, cfg)
        player, checkpoint = load_player(agent_path)
        if checkpoint["game"] != game:
            raise UserError(
                f"{agent_path}: this controller plays {checkpoint['game']}; pass --game {checkpoint['game']}"
            )
        world_model = player.model
    else:
        model_path = _resolve_model(model, cfg)
        world_model, checkpoint = load_world_model(model_path, cfg)
        check_trained_on(checkpoint, game, model_path)
    summary = run_play(
        game,
        world_model,
        stack_size=cfg.data.stack_size,
        fps=fps or cfg.play.fps,
        scale=cfg.play.scale,
        dream=dream,
        headless=headless,
        steps=steps,
        screenshot=screenshot,
        record=record,
        num_threads=cfg.play.num_threads,
        agent=player,
    )
    typer.echo(f"played {summary['steps']} steps ({summary['reason']})")
    for key in ("screenshot", "record"):
        if key in summary:
            typer.echo(f"wrote {summary[key]}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: a `UserError` becomes one line on stderr and its exit code, no traceback."""
    with interrupts.installed():
        return _run_app(argv)


def _run_app(argv: list[str] | None) -> int:
    try:
        code = app(args=argv, standalone_mode=False, prog_name="arcadedreamer")
        # typer turns Ctrl-C / SIGTERM into Exit(130) and, without standalone mode, returns the code;
        # a stop request some library swallowed still counts
        if code == 130 or interrupts.requested():
            raise KeyboardInterrupt
        if isinstance(code, int):
            return code
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted: partial outputs were discarded; earlier outputs are intact", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors: typer prints usage and the problem
        if hasattr(exc, "show"):
            exc.show()
        return getattr(exc, "exit_code", 2)
    return 0


_exit_code = 1  # what the process returns if `main` never does (an uncaught exception)


def run() -> None:
    global _exit_code
    atexit.register(_exit_without_teardown)  # registered first, so it runs after every other handler
    # one line per epoch is the progress in a log or a pipe (dvc repro): write each line as it comes
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    _exit_code = main()
    sys.exit(_exit_code)


def _exit_without_teardown() -> None:
    """The last exit handler ends the process without the interpreter's clean-up. Why: freeing
    torch's and MLflow's modules takes about 2 s of every command (a third of a short one), and
    by now every thread has been joined, MLflow's queues flushed by their own exit handlers, and
    every file written and closed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, or a stream already closed
            pass
    os._exit(_exit_code)


if __name__ == "__main__":
    run()
