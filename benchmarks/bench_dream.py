"""Dream steps per second against the real emulator's frames per second, on this CPU.

The dream (`DreamVectorEnv`) steps the default-size world model (VAE 64-d latent, GRU 256) for
many dreams in one batch; the real game is ALE (`…NoFrameskip-v4`, one frame per step, frames
preprocessed to 64×64 as collected). Speed does not depend on what the weights learned, so the
world model here is freshly initialised (pass --model/--params to time a trained one).
Observation "latent_and_state" is what the controller reads; "frame" also decodes every step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine  # noqa: E402

GAME = "BreakoutNoFrameskip-v4"
BATCHES = (1, 16, 256, 1024)


def random_world_model(root: Path) -> tuple[Path, Path]:
    """A default-architecture world model with fresh weights, a params.yaml and a few recorded
    episodes to start dreams from, under `root`."""
    import torch
    import yaml

    from arcadedreamer.config import load_params
    from arcadedreamer.data.collector import collect_to_disk
    from arcadedreamer.models import checkpoints as ckpt
    from arcadedreamer.models.dynamics import Dynamics
    from arcadedreamer.models.vae import VAE

    raw = {"data": {"games": [GAME]}, "heldout": {"out_dir": str(root / "heldout")}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    collect_to_disk([GAME], 800, root / "heldout", seed=1_000_000, num_envs=2, frame_size=64,
                    hold_min=1, hold_max=8, max_episode_frames=400, progress=False)  # fmt: skip
    torch.manual_seed(0)
    vae, dynamics = VAE(), Dynamics()
    path = root / "dynamics.pt"
    ckpt.save_checkpoint(
        path,
        {
            "stage": "dynamics",
            "epoch": 0,
            "arch": ckpt.dynamics_arch(params),
            "model": dynamics.state_dict(),
            "vae_arch": ckpt.vae_arch(params),
            "vae": vae.state_dict(),
            "mean_frames": {GAME: torch.zeros(64, 64)},
        },
    )
    return path, root / "params.yaml"


def dream_steps_per_second(model: Path, params: Path, batch: int, observation: str, seconds: float) -> float:
    import numpy as np

    from arcadedreamer.control.dream_env import DreamVectorEnv

    env = DreamVectorEnv(
        GAME, num_envs=batch, model=model, params=params, observation=observation, horizon=10**4
    )
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, (64, batch))
    env.step(actions[0])
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(actions[steps % 64])
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def emulator_frames_per_second(seconds: float) -> float:
    """One real emulator as the controller's evaluation plays it: step, preprocess to 64×64."""
    import numpy as np

    from arcadedreamer.data.emulator import Emulator

    emulator = Emulator(GAME)
    emulator.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 18, 4096)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, done = emulator.step(int(actions[frames % 4096]))
        if done:
            emulator.reset(seed=frames)
        frames += 1
    emulator.close()
    return frames / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained dynamics checkpoint (default: fresh weights)")
    parser.add_argument("--params", type=Path, help="its params.yaml (with --model)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per figure")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"Machine: {machine()}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model, params = (args.model, args.params) if args.model else random_world_model(Path(tmp))
        real = emulator_frames_per_second(args.seconds)
        print(f"real emulator ({GAME}, one process, preprocessed): {real:,.0f} frames/s\n")
        print("| dreams at once | observation | dream steps/s | vs one real emulator |")
        print("|---:|---|---:|---:|")
        rows = []
        for observation in ("latent_and_state", "frame"):
            for batch in BATCHES:
                dream = dream_steps_per_second(model, params, batch, observation, args.seconds)
                rows.append({"batch": batch, "observation": observation, "dream": dream, "real": real})
                print(f"| {batch} | {observation} | {dream:,.0f} | {dream / real:.2f}x |", flush=True)
    return rows


if __name__ == "__main__":
    main()
