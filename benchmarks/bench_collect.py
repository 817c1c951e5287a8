"""Collection speed: `collect` against the bare emulator and a plain gymnasium + cv2 loop.

Bare emulator: one ALEInterface per core in threads (ALE releases the GIL while emulating),
random actions, no screen read-out, no preprocessing, no storage.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

GAMES = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4"]


def bare_emulator_fps(game_id: str, frames: int, cores: int) -> float:
    import ale_py
    import gymnasium as gym

    from arcadedreamer.data.collector import ale_game_name

    gym.register_envs(ale_py)
    rom = ale_py.roms.get_rom_path(ale_game_name(game_id))
    per_thread = frames // cores

    def work(seed: int) -> None:
        ale = ale_py.ALEInterface()
        ale.setInt("random_seed", seed)
        ale.setFloat("repeat_action_probability", 0.0)
        ale.setLoggerMode(ale_py.LoggerMode.Error)
        ale.loadROM(rom)
        actions = ale.getLegalActionSet()
        rng = np.random.default_rng(seed)
        choice = rng.integers(0, len(actions), size=per_thread)
        for i in range(per_thread):
            ale.act(actions[choice[i]])
            if ale.game_over():
                ale.reset_game()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(cores)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_thread * cores / (time.perf_counter() - start)


def collect_fps(game_id: str, frames: int, cores: int) -> float:
    from arcadedreamer.data.collector import collect_game

    start = time.perf_counter()
    collect_game(game_id, frames, num_envs=8, seed=0, num_threads=cores, progress=False)
    return frames / (time.perf_counter() - start)


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


def main(frames: int = 20_000) -> list[dict]:
    cores = os.cpu_count() or 1
    rows = []
    for game in GAMES:
        bare = bare_emulator_fps(game, frames, cores)
        ours = collect_fps(game, frames, cores)
        single = gym_cv2_fps(game, frames // 4)
        rows.append({"game": game, "bare": bare, "collect": ours, "gym_cv2": single})
        print(f"{game}: collect {ours:,.0f} frames/s, bare emulator {bare:,.0f} ({ours / bare:.2f}x), "
              f"single gymnasium+cv2 loop {single:,.0f} ({ours / single:.2f}x)", flush=True)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
