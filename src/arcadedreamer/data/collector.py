"""Real Atari collection: raw ALE emulators forked from one loaded emulator, one process per
core at a time, writing frames, actions, rewards, episode ends and RAM into shared memory.
Why it is built this way (and measured): docs/design.md.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import multiprocessing.connection
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from arcadedreamer import interrupts
from arcadedreamer.config import Params
from arcadedreamer.data.atari import open_emulator, rom_path
from arcadedreamer.data.objects import RAM_SIZE
from arcadedreamer.data.policy import HeldRandomPolicy
from arcadedreamer.data.resize import UNKNOWN_LEVEL, AreaResizer, exact_area_resize_supported
from arcadedreamer.data.storage import recording_manifest, save_game_data
from arcadedreamer.fileio import exclusive_lock, lock_path_for
from arcadedreamer.preflight import check_collect
from arcadedreamer.progress import progress_bar


def frames_per_env(total: int, num_envs: int) -> list[int]:
    return [total // num_envs + (1 if i < total % num_envs else 0) for i in range(num_envs)]


def action_schedule(num_envs: int, rows: int, hold_min: int, hold_max: int, seed: int) -> np.ndarray:
    """(num_envs, rows) actions: the policy does not look at frames, so it is drawn up front.

    Drawn step by step for all emulators at once, as the policy sees them. The last row leads
    nowhere (0).
    """
    policy = HeldRandomPolicy(num_envs, hold_min, hold_max, seed)
    schedule = np.zeros((num_envs, rows), dtype=np.int64)
    for t in range(rows - 1):
        schedule[:, t] = policy()
    return schedule


SCREEN = (210, 160)  # ALE's screen (height, width)
PROGRESS_EVERY = 1024  # rows between a worker's progress reports


def make_resizer(frame_size: int) -> AreaResizer | None:
    """The exact kernel for SCREEN → frame_size, compiled (or loaded from numba's cache) now, so
    processes forked afterwards inherit it ready; None where only cv2 gives the exact bytes."""
    if not exact_area_resize_supported(*SCREEN, frame_size):
        return None
    resizer = AreaResizer(*SCREEN, frame_size)
    resizer(np.zeros((1, *SCREEN), dtype=np.uint8))
    return resizer


class FrameReader:
    """One emulator's screens → (size, size) frames, equal to cv2 INTER_AREA of ALE's grayscale.

    Reads palette indices and learns each index's gray level from ALE's own grayscale the first
    time it appears (a few times per emulator), so frames keep ALE's palette exactly. Without a
    resizer (sizes the exact kernel does not serve: `make_resizer`), cv2 resizes ALE's grayscale
    (slower, same bytes).
    """

    def __init__(self, frame_size: int, resizer: AreaResizer | None):
        self.size = frame_size
        self.resizer = resizer
        self.screens = [np.zeros(SCREEN, dtype=np.uint8) for _ in range(2)]
        self.gray = np.zeros(SCREEN, dtype=np.uint8)
        self.levels = np.full(256, UNKNOWN_LEVEL, dtype=np.float32)

    def read(self, ale, frame: np.ndarray, previous_frame: np.ndarray | None) -> None:
        """Writes the current screen's frame; `previous_frame`: this reader's last frame, if kept."""
        if self.resizer is None:
            ale.getScreenGrayscale(self.gray)
            frame[:] = cv2.resize(self.gray, (self.size, self.size), interpolation=cv2.INTER_AREA)
            return
        self.screens.reverse()  # [this read, the previous one]
        screen, previous_screen = self.screens
        ale.getScreen(screen)
        if previous_frame is None:
            previous_screen = None
        if not self.resizer.resize_into(screen, frame, self.levels, previous_screen, previous_frame):
            ale.getScreenGrayscale(self.gray)
            self.levels[screen] = self.gray
            self.resizer.resize_into(screen, frame, self.levels)


@dataclass
class _Shared:
    """What each emulator's process inherits; the arrays are anonymous shared memory it writes into."""

    emulator: object  # the loaded ALEInterface each emulator's process inherits
    resizer: AreaResizer | None  # from make_resizer
    frame_size: int
    actions: np.ndarray  # (N,) int64, the schedule per row
    frames: np.ndarray  # (N, size, size) uint8
    ram: np.ndarray  # (N, 128) uint8, the console's RAM as each frame was shown
    arrived_rewards: np.ndarray  # (N,) float32, the reward that came with this row
    ends: np.ndarray  # (N,) bool, this row is its episode's last frame
    progress: np.ndarray  # (num_envs,) int64, rows done per emulator
    parent: int  # the collecting process: helpers die with it


def _shared_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def _leave_interrupts_to_the_parent(parent: int) -> None:
    """In a forked helper: the parent's handlers would raise KeyboardInterrupt here too, and a
    parent killed outright (kill -9) must take its helpers with it (they hold its lock)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent stops helpers with SIGTERM
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _draw_schedule(
    actions: np.ndarray, quotas: np.ndarray, hold_min: int, hold_max: int, seed: int, parent: int
) -> None:
    """Writes each emulator's row of the action schedule into its block of the shared `actions`."""
    _leave_interrupts_to_the_parent(parent)
    schedule = action_schedule(len(quotas), int(quotas.max()), hold_min, hold_max, seed)
    actions[:] = np.concatenate([schedule[i, :quota] for i, quota in enumerate(quotas)])


def _play_emulator(shared: _Shared, index: int, start: int, quota: int) -> None:
    """Plays emulator `index` for `quota` rows from row `start` of the shared arrays.

    Runs in a process forked for this emulator alone, so the inherited emulator is as loaded.
    """
    _leave_interrupts_to_the_parent(shared.parent)
    ale = shared.emulator
    action_set = ale.getLegalActionSet()  # all 18, in ALE's canonical order
    reader = FrameReader(shared.frame_size, shared.resizer)
    frames = shared.frames[start : start + quota]
    rams = shared.ram[start : start + quota]
    actions = shared.actions[start : start + quota]
    rewards = shared.arrived_rewards[start : start + quota]
    ends = shared.ends[start : start + quota]
    frames.fill(0)  # faults the block's pages in one sweep: +3% frames/s over faulting them frame by frame
    reward, finished = 0, False
    for row in range(quota):
        reader.read(ale, frames[row], frames[row - 1] if row else None)
        ale.getRAM(rams[row])
        rewards[row], ends[row] = reward, finished
        if row % PROGRESS_EVERY == 0:
            shared.progress[index] = row
        if row == quota - 1:
            break
        if finished:  # next-step autoreset: the action of an episode's last frame is ignored
            ale.reset_game()
            reward, finished = 0, False
        else:
            reward = ale.act(action_set[actions[row]])
            finished = ale.game_over()  # terminated or truncated
    shared.progress[index] = quota


def _run_emulators(shared: _Shared, starts: np.ndarray, quotas: np.ndarray, workers: int, on_poll) -> None:
    """Plays every emulator in its own forked process, `workers` at a time.

    Processes are forked here, in the main thread, so no other thread's lock is copied held.
    """
    context = multiprocessing.get_context("fork")
    waiting, running = list(range(len(quotas))), {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                index = waiting.pop(0)
                running[index] = context.Process(
                    target=_play_emulator, args=(shared, index, int(starts[index]), int(quotas[index]))
                )
                running[index].start()
            multiprocessing.connection.wait([process.sentinel for process in running.values()], timeout=0.05)
            interrupts.raise_if_requested()
            on_poll()
            for index, process in list(running.items()):
                if process.exitcode is None:
                    continue
                if process.exitcode != 0:
                    raise RuntimeError(
                        f"the process playing emulator {index} failed (exit code {process.exitcode})"
                    )
                del running[index]
    finally:
        for process in running.values():  # interrupted or failed: stop the others
            process.terminate()
        for process in running.values():
            process.join()


def collect_game(
    game_id: str,
    total_frames: int,
    *,
    num_envs: int,
    seed: int,
    frame_size: int = 64,
    hold_min: int = 1,
    hold_max: int = 8,
    max_episode_frames: int = 10_000,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[list[int]]]:
    """Play `total_frames` frames of `game_id`; returns the arrays `storage` writes and streams.

    Emulator i follows row i of the action schedule; its stream is gymnasium's when reset with
    seed `seed + i` (see the module docstring). Each emulator's frames form consecutive
    episodes; its last (unfinished) episode is cut where its quota ends.
    """
    num_envs = max(1, min(num_envs, total_frames))
    quotas = np.array(frames_per_env(total_frames, num_envs))
    starts = np.concatenate([[0], np.cumsum(quotas)[:-1]])  # each emulator's first row
    shared = _Shared(
        emulator=None,
        resizer=None,
        frame_size=frame_size,
        actions=_shared_array((total_frames,), np.int64),
        frames=_shared_array((total_frames, frame_size, frame_size), np.uint8),
        ram=_shared_array((total_frames, RAM_SIZE), np.uint8),
        arrived_rewards=_shared_array((total_frames,), np.float32),
        ends=_shared_array((total_frames,), np.bool_),
        progress=_shared_array((num_envs,), np.int64),
        parent=os.getpid(),
    )
    context = multiprocessing.get_context("fork")
    # Drawing the schedule and loading the ROM take ~0.1 s each on one core: done side by side.
    drawer = context.Process(
        target=_draw_schedule,
        args=(shared.actions, quotas, hold_min, hold_max, seed, shared.parent),
        daemon=True,
    )
    drawer.start()
    try:
        shared.emulator = open_emulator(rom_path(game_id), seed, max_episode_frames)
        shared.resizer = make_resizer(frame_size)
        drawer.join()
    finally:
        if drawer.is_alive():  # interrupted
            drawer.terminate()
            drawer.join()
    if drawer.exitcode != 0:
        raise RuntimeError(f"drawing the action schedule failed (exit code {drawer.exitcode})")
    workers = min(num_workers or len(os.sched_getaffinity(0)), num_envs)
    with progress_bar(total_frames, f"collect {game_id}", "frame", progress) as bar:
        _run_emulators(
            shared, starts, quotas, workers, on_poll=lambda: bar.update(int(shared.progress.sum()) - bar.n)
        )
        bar.update(total_frames - bar.n)
    actions = shared.actions
    ends = shared.ends.copy()
    ends[starts + quotas - 1] = True  # each emulator's quota cuts its last episode
    # A row that ends an episode leads nowhere: the next step resets and ignores its action.
    rewards = np.append(shared.arrived_rewards[1:], 0.0).astype(np.float32)
    arrays = {
        "frames": shared.frames,
        "actions": np.where(ends, 0, actions).astype(np.uint8),
        "rewards": np.where(ends, 0.0, rewards).astype(np.float32),
        "episode_ends": ends,
        "ram": shared.ram,
    }
    # Where each emulator's frames start, and a reset seed that replays it in gymnasium.
    streams = [[int(start), int(q), int(seed + i)] for i, (start, q) in enumerate(zip(starts, quotas))]
    return arrays, streams


def collect_to_disk(
    games: list[str],
    frames_per_game: int,
    out_root: str | Path,
    *,
    seed: int,
    num_envs: int,
    frame_size: int,
    hold_min: int,
    hold_max: int,
    max_episode_frames: int,
    num_workers: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Collect each game and write it atomically to `out_root/<game>/`; returns the manifests."""
    manifests = []
    for game in games:
        game_dir = Path(out_root) / game
        with exclusive_lock(lock_path_for("collect", game_dir), f"{game_dir}"):
            arrays, streams = collect_game(
                game,
                frames_per_game,
                num_envs=num_envs,
                seed=seed,
                frame_size=frame_size,
                hold_min=hold_min,
                hold_max=hold_max,
                max_episode_frames=max_episode_frames,
                num_workers=num_workers,
                progress=progress,
            )
            manifest = recording_manifest(
                game,
                arrays,
                seed=seed,
                frame_size=frame_size,
                policy=f"uniform random full-set action held {hold_min}-{hold_max} frames",
                max_episode_frames=max_episode_frames,
                stream_rows=streams,
                num_envs=min(num_envs, frames_per_game),
            )
            manifests.append(save_game_data(game_dir, arrays, manifest))
    return manifests


def collect_dataset(
    params: Params,
    heldout: bool = False,
    games: list[str] | None = None,
    frames: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Collect what `params` configures: the training data (`data.*`), or with `heldout` the
    pinned evaluation episodes (`heldout.*`: one emulator an episode, truncated at its length)."""
    data, held = params.data, params.heldout
    common = dict(
        frame_size=data.frame_size,
        hold_min=data.action_hold_min,
        hold_max=data.action_hold_max,
        num_workers=data.num_workers,
        progress=progress,
    )
    if heldout:
        check_collect(
            held.out_dir,
            games or data.games,
            held.episodes_per_game * held.frames_per_episode,
            data.frame_size,
        )
        return collect_to_disk(
            games or data.games,
            held.episodes_per_game * held.frames_per_episode,
            held.out_dir,
            seed=held.seed,
            num_envs=held.episodes_per_game,
            max_episode_frames=held.frames_per_episode,
            **common,
        )
    check_collect(data.out_dir, games or data.games, frames or data.frames_per_game, data.frame_size)
    return collect_to_disk(
        games or data.games,
        frames or data.frames_per_game,
        data.out_dir,
        seed=data.seed,
        num_envs=data.num_envs,
        max_episode_frames=data.max_episode_frames,
        **common,
    )
