"""Training throughput, FLOP/s and memory.

- VAE and dynamics samples/s of the project's trainers (data loading, stacking, logging and
  validation included) against a bare PyTorch loop over the same model on in-memory tensors,
  same batch and threads.
- Achieved FP32 FLOP/s of one VAE step (torch.utils.flop_counter), against the best FLOP/s a
  large fp32 matmul reaches on this machine (a measured stand-in for the peak).
- Peak RSS of VAE training on N frames against their raw size (N×64×64 bytes), in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

GAME = "BreakoutNoFrameskip-v4"


def make_project(root: Path, frames: int, **overrides) -> Path:
    from arcadedreamer.data.collector import collect_to_disk

    params = {
        "data": {"games": [GAME], "frames_per_game": frames, "out_dir": str(root / "data")},
        "vae": {"epochs": 1}, "dynamics": {"epochs": 1},
        "training": {"checkpoint_dir": str(root / "ck"), "metrics_dir": str(root / "metrics"),
                     "checkpoint_every": 1000, "device": "cpu", "val_fraction": 0.0},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "register_models": False},
    }  # fmt: skip
    for section, values in overrides.items():
        params[section].update(values)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    if not (root / "data" / GAME).exists():
        collect_to_disk([GAME], frames, root / "data", seed=0, num_envs=8, frame_size=64, hold_min=1, hold_max=8,
                        max_episode_frames=10_000, progress=False)  # fmt: skip
    return path


def bare_vae_rate(batch: int, seconds: float) -> float:
    from arcadedreamer.models.vae import VAE

    torch.manual_seed(0)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    frames = torch.rand(batch, 4, 64, 64)

    def step():
        losses = model.compute_loss(frames, 1e-4)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    from common import rate

    return rate(step, batch, seconds)


def bare_dynamics_rate(batch: int, seq_len: int, seconds: float) -> float:
    from arcadedreamer.models.dynamics import Dynamics

    torch.manual_seed(0)
    model = Dynamics()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    latents, actions = torch.randn(batch, seq_len + 1, 64), torch.randint(0, 18, (batch, seq_len))

    def step():
        losses = model.compute_loss(latents, actions, 0.5, 4)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    from common import rate

    return rate(step, batch, seconds)


def trainer_rate(params_path: Path, stage: str) -> float:
    """Samples/s of one full epoch of the real trainer (its own printout gives the count)."""
    from arcadedreamer.config import load_params

    params = load_params(params_path)
    if stage == "vae":
        from arcadedreamer.training.vae_trainer import train_vae

        start = time.perf_counter()
        train_vae(params, progress=False)
        elapsed = time.perf_counter() - start
        import numpy as np

        from arcadedreamer.data.dataset import FrameStacks, load_episodes

        episodes = load_episodes(params.data.out_dir, params.data.games)
        return len(FrameStacks(episodes, 4, np.ones(len(episodes), bool))) / elapsed
    from arcadedreamer.training.dynamics_trainer import train_dynamics

    start = time.perf_counter()
    summary = train_dynamics(params, progress=False)
    return summary["train_sequences"] / (time.perf_counter() - start)


def vae_flops(batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from arcadedreamer.models.vae import VAE

    model = VAE()
    frames = torch.rand(batch, 4, 64, 64)
    with FlopCounterMode(display=False) as counter:
        model.compute_loss(frames, 1e-4)["loss"].backward()
    return counter.get_total_flops()


def matmul_peak(seconds: float = 3.0) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    from common import rate

    return rate(lambda: a @ b, 2 * 2048**3, seconds)


def peak_rss_mib(params_path: Path) -> float:
    code = (
        "import resource, sys; from arcadedreamer.config import load_params;"
        "from arcadedreamer.training.vae_trainer import train_vae;"
        f"train_vae(load_params({str(params_path)!r}), progress=False);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def baseline_rss_mib() -> float:
    code = ("import resource, torch, mlflow, numpy, arcadedreamer.training.vae_trainer;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(frames: int = 6000) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = make_project(root, frames, training={"batch_size": 128})
        ours = trainer_rate(params, "vae")
        bare = bare_vae_rate(128, 10.0)
        results["vae"] = {"trainer": ours, "bare": bare}
        print(
            f"VAE training: trainer {ours:,.0f} stacks/s, bare loop {bare:,.0f} ({ours / bare:.2f}x)",
            flush=True,
        )
        ours = trainer_rate(params, "dynamics")
        bare = bare_dynamics_rate(128, 32, 10.0)
        results["dynamics"] = {"trainer": ours, "bare": bare}
        print(
            f"dynamics training: trainer {ours:,.0f} seq/s, bare loop {bare:,.0f} ({ours / bare:.2f}x)",
            flush=True,
        )
        flops = vae_flops(128)
        achieved = flops * results["vae"]["bare"] / 128
        peak = matmul_peak()
        results["flops"] = {"per_step": flops, "achieved": achieved, "matmul_peak": peak}
        print(f"VAE step: {flops / 1e9:.1f} GFLOP per batch of 128, {achieved / 1e9:.1f} GFLOP/s achieved, "
              f"{achieved / peak:.0%} of the {peak / 1e9:.0f} GFLOP/s an fp32 2048² matmul reaches", flush=True)  # fmt: skip
        big = make_project(root / "mem", 4 * frames)
        rss, base = peak_rss_mib(big), baseline_rss_mib()
        raw = 4 * frames * 64 * 64 / 2**20
        results["memory"] = {"peak_rss_mib": rss, "import_rss_mib": base, "raw_frames_mib": raw}
        print(f"memory: VAE training on {4 * frames} frames peaks at {rss:.0f} MiB RSS; imports alone "
              f"{base:.0f} MiB; frames {raw:.0f} MiB raw → {(rss - base) / raw:.2f}x raw above the fixed "
              "overhead", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
