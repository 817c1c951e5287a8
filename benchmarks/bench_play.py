"""Play and training beside a busy neighbour: steps/s with 1 and 2 torch threads, idle and with
a CPU hog using about 1.4 of this machine's cores, and play's start-up time.

Why: a batch-1 model step gains nothing from two threads, and OpenMP's threads wait on each
other, so one preempted thread stalls the step. The figures choose `play.num_threads` (1) and
say what `training.num_threads` costs on a shared machine.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, rate, vae_training_step  # noqa: E402

HOG_SHARE = 1.4  # cores the neighbour keeps busy


def _burn(duty: float, stop) -> None:
    """Busy for `duty` of every 10 ms, asleep the rest: a neighbour's share of one core."""
    while not stop.is_set():
        end = time.perf_counter() + 0.01 * duty
        while time.perf_counter() < end:
            pass
        time.sleep(0.01 * (1 - duty))


class Hog:
    """Processes keeping HOG_SHARE cores busy while the `with` block runs."""

    def __enter__(self):
        self.stop = multiprocessing.Event()
        shares = [1.0] * int(HOG_SHARE) + ([HOG_SHARE % 1] if HOG_SHARE % 1 else [])
        self.procs = [multiprocessing.Process(target=_burn, args=(s, self.stop), daemon=True) for s in shares]
        for proc in self.procs:
            proc.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for proc in self.procs:
            proc.join(timeout=5)


def play_steps_per_second(threads: int, seconds: float = 4.0) -> float:
    """The play session's step (emulator + encode + GRU + decode), headless, as `play` runs it."""
    import torch

    from arcadedreamer.models.dynamics import Dynamics
    from arcadedreamer.models.vae import VAE
    from arcadedreamer.models.world_model import WorldModel
    from arcadedreamer.viz.play import PlaySession

    torch.set_num_threads(threads)
    session = PlaySession("BreakoutNoFrameskip-v4", WorldModel(VAE(), Dynamics()).eval())
    actions = iter(range(10**9))

    def step():
        if session.step(next(actions) % 18):
            session.reset()

    return rate(step, 1, seconds)


def vae_stacks_per_second(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    return rate(vae_training_step(32), 32, 4.0)


def play_start_up_seconds(root: Path) -> float:
    """`arcadedreamer play --headless --steps 1` from the command to its end, with a checkpoint."""
    import torch

    from arcadedreamer.models.dynamics import Dynamics
    from arcadedreamer.models.vae import VAE

    vae, dynamics = VAE(), Dynamics()
    path = root / "model.pt"
    arch = {"stack_size": 4, "frame_size": 64, "latent_dim": 64}
    torch.save({"stage": "dynamics", "epoch": 1, "model": dynamics.state_dict(), "vae": vae.state_dict(),
                "arch": {"latent_dim": 64, "num_actions": 18, "hidden_size": 256}, "vae_arch": arch,
                "mean_frames": {"BreakoutNoFrameskip-v4": torch.zeros(64, 64)}}, path)  # fmt: skip
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    command = [
        sys.executable,
        "-m",
        "arcadedreamer",
        "play",
        "--headless",
        "--steps",
        "1",
        "--model",
        str(path),
    ]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=Path(__file__).parents[1])
        times.append(time.perf_counter() - start)
    return sorted(times)[1]


def main() -> dict:
    import tempfile

    print(f"Machine: {machine()}", flush=True)
    out: dict = {"play": {}, "vae": {}}
    for threads in (1, 2):
        out["play"][threads] = {"idle": play_steps_per_second(threads)}
        with Hog():
            out["play"][threads]["busy"] = play_steps_per_second(threads)
        out["vae"][threads] = {"idle": vae_stacks_per_second(threads)}
        with Hog():
            out["vae"][threads]["busy"] = vae_stacks_per_second(threads)
        print(f"{threads} thread(s): play {out['play'][threads]['idle']:.0f} steps/s idle, "
              f"{out['play'][threads]['busy']:.0f} beside a {HOG_SHARE}-core hog; VAE training "
              f"{out['vae'][threads]['idle']:.0f} / {out['vae'][threads]['busy']:.0f} stacks/s", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        out["start_up"] = play_start_up_seconds(Path(root))
    print(f"play --headless --steps 1, command to end: {out['start_up']:.2f} s (median of 3)")
    return out


if __name__ == "__main__":
    main()
