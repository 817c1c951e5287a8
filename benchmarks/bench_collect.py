"""Collection speed: `collect` against the bare emulator and a plain gymnasium + cv2 loop.

Bare emulator: one ALEInterface per core, each in its own *process* (`ALEInterface.act` holds
the GIL, so threads would measure one core), random actions, no screen read-out, no
preprocessing, no storage; ROM loading included, as `collect` includes its start-up.
Measurements alternate (bare, collect, bare, collect, ...) and the median is reported: the
machine is shared and single runs vary by ±20%.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time

import numpy as np

GAMES = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4"]


def _bare_worker(rom: str, seed: int, frames: int) -> None:
    from arcadedreamer.data.atari import open_emulator

    ale = open_emulator(rom, seed)  # collect's emulator settings, no episode limit
    actions = ale.getLegalActionSet()
    choice = np.random.default_rng(seed).integers(0, len(actions), size=frames)
    for i in range(frames):
        ale.act(actions[choice[i]])
        if ale.game_over():
            ale.reset_game()


def bare_emulator_fps(game_id: str, frames: int, cores: int) -> float:
    from arcadedreamer.data.atari import rom_path

    rom = rom_path(game_id)
    per_core = frames // cores
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_bare_worker, args=(rom, i, per_core)) for i in range(cores)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return per_core * cores / (time.perf_counter() - start)


def collect_fps(game_id: str, frames: int, cores: int) -> float:
    """`collect_game` with the default params (start-up, policy, resize, storage arrays)."""
    from arcadedreamer.config import Params
    from arcadedreamer.data.collector import collect_game

    data = Params().data
    start = time.perf_counter()
    collect_game(
        game_id,
        frames,
        num_envs=data.num_envs,
        seed=0,
        frame_size=data.frame_size,
        hold_min=data.action_hold_min,
        hold_max=data.action_hold_max,
        max_episode_frames=data.max_episode_frames,
        num_workers=cores,
        progress=False,
    )
    return frames / (time.perf_counter() - start)


def startup_seconds(game_id: str, cores: int) -> float:
    """`collect_game` of one frame per emulator: the ROM load (the schedule drawn beside it) and
    one forked process per emulator."""
    from arcadedreamer.config import Params

    num_envs = Params().data.num_envs
    return num_envs / collect_fps(game_id, num_envs, cores)


def gym_cv2_fps(game_id: str, frames: int) -> float:
    from arcadedreamer.data.emulator import Emulator

    emulator = Emulator(game_id)
    emulator.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for action in rng.integers(0, 18, size=frames):
        _, _, done = emulator.step(int(action))  # step + cv2 grayscale + INTER_AREA resize
        if done:
            emulator.reset()
    return frames / (time.perf_counter() - start)


def main(frames: int = 50_000, repeats: int = 5) -> list[dict]:
    """`frames`: the default frames per game, so start-up weighs as much as in a real `collect`."""
    cores = os.cpu_count() or 1
    collect_fps(GAMES[0], 200, cores)  # compiles (or loads the cached) resize kernel
    rows = []
    for game in GAMES:
        bare_runs, collect_runs = [], []
        for _ in range(repeats):
            bare_runs.append(bare_emulator_fps(game, frames, cores))
            collect_runs.append(collect_fps(game, frames, cores))
        bare, ours = statistics.median(bare_runs), statistics.median(collect_runs)
        startup = statistics.median(startup_seconds(game, cores) for _ in range(repeats))
        steady = frames / (frames / ours - startup)  # collect's rate once its emulators run
        single = gym_cv2_fps(game, frames // 10)
        rows.append(
            {
                "game": game,
                "bare": bare,
                "collect": ours,
                "steady": steady,
                "startup": startup,
                "gym_cv2": single,
            }
        )
        print(
            f"{game}: collect {ours:,.0f} frames/s, bare emulator ({cores} processes) {bare:,.0f} "
            f"({ours / bare:.2f}x; runs {[round(r) for r in collect_runs]} vs {[round(r) for r in bare_runs]}), "
            f"start-up {startup:.2f} s, without it {steady:,.0f} ({steady / bare:.2f}x), "
            f"single gymnasium+cv2 loop {single:,.0f} ({ours / single:.2f}x)",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
