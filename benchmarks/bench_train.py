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
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

GAME = "BreakoutNoFrameskip-v4"


def make_project(root: Path, frames: int, **overrides) -> Path:
    from arcadedreamer.data.collector import collect_to_disk

    params = {
        "data": {"games": [GAME], "frames_per_game": frames, "out_dir": str(root / "data")},
        "vae": {"epochs": 1},
        "dynamics": {"epochs": 1},
        "training": {
            "checkpoint_dir": str(root / "ck"),
            "metrics_dir": str(root / "metrics"),
            "checkpoint_every": 1000,
            "device": "cpu",
            "val_fraction": 0.0,
        },
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "register_models": False},
    }
    for section, values in overrides.items():
        params[section].update(values)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    if not (root / "data" / GAME).exists():
        collect_to_disk(
            [GAME],
            frames,
            root / "data",
            seed=0,
            num_envs=8,
            frame_size=64,
            hold_min=1,
            hold_max=8,
            max_episode_frames=10_000,
            progress=False,
        )
    return path


def bare_vae_rate(batch: int, seconds: float) -> float:
    from common import rate, vae_training_step

    return rate(vae_training_step(batch), batch, seconds)


def bare_dynamics_rate(batch: int, seq_len: int, seconds: float) -> float:
    from common import dynamics_training_step, rate

    return rate(dynamics_training_step(batch, seq_len), batch, seconds)


def decoded_loss_cost(seconds: float) -> dict:
    """Sequences/s of a bare dynamics step at make quickstart-long's shape (batch 32, 16 steps of
    4 frames), without and with its decoded loss on 8 predictions a batch (results.md: what the
    loss that sees the ball costs an epoch)."""
    from common import dynamics_training_step, rate

    plain = rate(dynamics_training_step(32, 16, frames_per_step=4), 32, seconds)
    decoded = rate(dynamics_training_step(32, 16, frames_per_step=4, decoded_samples=8), 32, seconds)
    return {"plain": plain, "decoded": decoded}


def trainer_rates(params_path: Path, stage: str) -> dict:
    """The real trainer: samples/s of its training loop in the last epoch (data gathering,
    stacking, per-step bookkeeping included; the trainer measures it itself), and of the whole
    command (loading, MLflow, validation, checkpoints included)."""
    from arcadedreamer.config import load_params

    params = load_params(params_path)
    start = time.perf_counter()
    if stage == "vae":
        from arcadedreamer.training.vae_trainer import train_vae

        summary = train_vae(params, progress=False)
        samples, epochs = summary["train_stacks"], params.vae.epochs
    else:
        from arcadedreamer.training.dynamics_trainer import train_dynamics

        summary = train_dynamics(params, progress=False)
        samples, epochs = summary["train_sequences"], params.dynamics.epochs
    whole = samples * epochs / (time.perf_counter() - start)
    return {"epoch": summary["train_samples_per_s"], "whole": whole}


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


def training_peak_rss_mib(
    params_path: Path, settle_seconds: float = 5.0, limit_seconds: float = 300.0
) -> float:
    """Peak RSS (VmHWM) of `arcadedreamer train --stage vae` once its training loop is running.

    Memory does not grow after the first steps (frames are loaded once, batches are fixed
    size), so the run is stopped `settle_seconds` after its progress bar shows steps: a whole
    epoch on a large N would take many minutes on a CPU.
    """
    command = [sys.executable, "-m", "arcadedreamer", "train", "--stage", "vae", "--params", str(params_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started, deadline = threading.Event(), time.monotonic() + limit_seconds

    def watch() -> None:  # tqdm's bar: "vae epoch 1/1:  3%|...| 384/11996"
        for chunk in iter(lambda: process.stderr.read(256), ""):
            if re.search(r"vae epoch \d+/\d+:\s+\d+%.*\| *[1-9]\d*/", chunk):
                started.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not started.wait(limit_seconds):
            raise RuntimeError(f"VAE training did not start within {limit_seconds:.0f} s")
        time.sleep(max(0.0, min(settle_seconds, deadline - time.monotonic())))
        if process.poll() is not None:
            raise RuntimeError("VAE training ended before its peak memory could be read")
        status = Path(f"/proc/{process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    finally:
        process.terminate()
        process.wait()


def memory_slope(root: Path, small: int, large: int) -> dict:
    """Peak RSS at two dataset sizes: the slope is the memory each raw frame byte costs, the
    intercept the fixed overhead (interpreter, torch, MLflow, model, optimizer, batches)."""
    points = []
    for frames in (small, large):
        params = make_project(root / f"mem{frames}", frames, training={"val_fraction": 0.1})
        raw_mib = frames * 64 * 64 / 2**20
        points.append((raw_mib, training_peak_rss_mib(params)))
    (raw1, rss1), (raw2, rss2) = points
    slope = (rss2 - rss1) / (raw2 - raw1)
    return {"points": points, "slope": slope, "fixed_mib": rss1 - slope * raw1}


def main(frames: int = 6000, epochs: int = 3) -> dict:
    """Each bare loop runs before and after its trainer (the mean is the reference): the
    machine is shared and its speed drifts by ±15% over minutes."""
    sys.path.insert(0, str(Path(__file__).parent))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = {"batch_size": 128, "val_fraction": 0.1}
        params = make_project(
            root, frames, training=settings, vae={"epochs": epochs}, dynamics={"epochs": epochs}
        )
        for stage, unit, bare_rate in (
            ("vae", "stacks/s", lambda: bare_vae_rate(128, 8.0)),
            ("dynamics", "seq/s", lambda: bare_dynamics_rate(128, 32, 8.0)),
        ):
            before = bare_rate()
            ours = trainer_rates(params, stage)
            bare = (before + bare_rate()) / 2
            results[stage] = {"trainer": ours["epoch"], "whole": ours["whole"], "bare": bare}
            print(
                f"{stage} training: trainer loop {ours['epoch']:,.0f} {unit} (epoch {epochs} of {epochs}), "
                f"bare loop {bare:,.0f} ({ours['epoch'] / bare:.2f}x); whole command {ours['whole']:,.0f} "
                f"{unit} ({ours['whole'] / bare:.2f}x: start-up, validation, checkpoints)",
                flush=True,
            )
        cost = results["decoded_loss"] = decoded_loss_cost(8.0)
        print(
            f"dynamics at make quickstart-long's shape (batch 32, 16 steps of 4 frames): {cost['plain']:,.0f} seq/s; "
            f"with the decoded loss on 8 predictions a batch {cost['decoded']:,.0f} "
            f"({cost['plain'] / cost['decoded']:.2f}x the time a batch)",
            flush=True,
        )
        flops = vae_flops(128)
        achieved = flops * results["vae"]["bare"] / 128
        peak = matmul_peak()
        results["flops"] = {"per_step": flops, "achieved": achieved, "matmul_peak": peak}
        print(
            f"VAE step: {flops / 1e9:.1f} GFLOP per batch of 128, {achieved / 1e9:.1f} GFLOP/s achieved, "
            f"{achieved / peak:.0%} of the {peak / 1e9:.0f} GFLOP/s an fp32 2048² matmul reaches",
            flush=True,
        )
        memory = memory_slope(root, 4 * frames, 20 * frames)
        results["memory"] = memory
        (raw1, rss1), (raw2, rss2) = memory["points"]
        print(
            f"memory: VAE training peaks at {rss1:.0f} MiB RSS on {raw1:.0f} MiB of frames and {rss2:.0f} MiB on "
            f"{raw2:.0f} MiB → {memory['slope']:.2f} MiB per MiB of frames + {memory['fixed_mib']:.0f} MiB fixed",
            flush=True,
        )
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
