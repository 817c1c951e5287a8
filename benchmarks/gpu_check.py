"""Prove and time the GPU path: `make gpu-check` on a machine with a CUDA GPU (or `--smoke` on
the CPU, as the tests run it so it cannot rot between GPUs).

Parts, each well under the 9 minutes a lent machine allows per call (run them one by one with
`--part`, or all at once): `data` collects a realistic slice (3 games × 20 000 frames), `check`
runs both stages on the original's batch of 128 for a fixed number of steps in fp32 and in
bf16 on the same batches (losses must agree within BF16_TOLERANCE, nothing may be NaN),
`speed` measures VAE stacks/s and dynamics sequences/s at batch sizes up to 1024, eager and
compiled, and the share of each step spent gathering its batch, `report` extrapolates the full
defaults (3 games × 50 000 frames, 50 + 100 epochs) and gives a verdict against 30 minutes.
Every part merges its figures into one JSON file (default bench/gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GAMES = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4"]
BF16_TOLERANCE = 0.05  # relative gap between bf16 and fp32 losses after the same steps
FULL = {"frames": 3 * 50_000, "vae_epochs": 50, "dynamics_epochs": 100, "seq_len": 32, "budget_s": 30 * 60}


def settings(smoke: bool) -> dict:
    if smoke:  # seconds on a CPU: the same code paths, tiny sizes
        return {"device": "cpu", "frames": 1200, "games": GAMES[:1], "steps": 3, "batches": [8, 16],
                "batch": 8, "seconds": 0.5, "compile": False}  # fmt: skip
    return {"device": "cuda", "frames": 20_000, "games": GAMES, "steps": 50, "batches": [128, 256, 512, 1024],
            "batch": 128, "seconds": 5.0, "compile": True}  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def part_data(cfg: dict, out: Path) -> dict:
    from arcadedreamer.data.collector import collect_to_disk

    start = time.perf_counter()
    collect_to_disk(cfg["games"], cfg["frames"], out / "data", seed=0, num_envs=8, frame_size=64, hold_min=1,
                    hold_max=8, max_episode_frames=10_000, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    return {"frames": cfg["frames"] * len(cfg["games"]), "collect_s": seconds}


def load(cfg: dict, out: Path, device: torch.device):
    from arcadedreamer.data.dataset import FrameStacks, load_episodes

    episodes = load_episodes(out / "data", cfg["games"])
    episodes.frames = episodes.frames.to(device)  # resident on the GPU as uint8, as the trainer keeps them
    return episodes, FrameStacks(episodes, 4, np.ones(len(episodes), dtype=bool))


def timed_training(
    model, loss, batches, device, precision: str, steps: int, seconds: float | None = None
) -> dict:
    """`steps` optimizer steps (or as many as `seconds` allow) over `batches()`, whose items
    gather one batch each: the losses, samples/s, and the share of time spent gathering. The
    first step (compilation, kernel warm-up) is not timed."""
    from arcadedreamer.training.common import autocast, train_step

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    losses, gather_s, samples, warm = [], 0.0, 0, True
    start = time.perf_counter()
    while True:
        for gather in batches():
            t0 = time.perf_counter()
            batch = gather()
            sync(device)
            gather_s += time.perf_counter() - t0
            with autocast(device, precision):
                result = loss(*batch)
            train_step(model, result, optimizer, 1.0)
            losses.append(result["loss"].item())
            samples += len(batch[0])
            if warm:
                sync(device)
                start, gather_s, samples, warm = time.perf_counter(), 0.0, 0, False
                continue
            elapsed = time.perf_counter() - start
            if (seconds is None and len(losses) > steps) or (seconds is not None and elapsed >= seconds):
                sync(device)
                elapsed = time.perf_counter() - start
                return {"losses": losses, "samples_per_s": samples / elapsed, "data_wait": gather_s / elapsed}


def vae_run(
    stacks, device, batch: int, steps: int, precision: str, compiled: bool = False, seconds=None
) -> dict:
    """The VAE's training step on the trainer's batches (frames resident on the device)."""
    from arcadedreamer.data.dataset import gather_stacks
    from arcadedreamer.models.vae import VAE
    from arcadedreamer.training.common import ComputeLoss

    torch.manual_seed(0)
    model = VAE().to(device)
    loss = ComputeLoss(model, beta=1e-4, loss="bce", surprise=0.5)
    generator = torch.Generator().manual_seed(0)

    def batches():
        order = stacks.indices[torch.randperm(len(stacks), generator=generator)]
        return ((lambda i=i: (gather_stacks(stacks.frames, i.to(device), 4),)) for i in order.split(batch))

    return timed_training(
        model, torch.compile(loss) if compiled else loss, batches, device, precision, steps, seconds
    )


def dynamics_run(latents, actions, starts, device, batch: int, steps: int, precision: str,
                 compiled: bool = False, seconds=None) -> dict:  # fmt: skip
    """The GRU's scheduled-sampling step on latent sequences (resident on the device)."""
    from arcadedreamer.models.dynamics import Dynamics
    from arcadedreamer.training.common import ComputeLoss

    torch.manual_seed(0)
    model = Dynamics().to(device)
    loss = ComputeLoss(model, sampling_prob=0.5, burn_in=4, generator=None)
    generator = torch.Generator().manual_seed(0)
    offsets = torch.arange(FULL["seq_len"] + 1, device=device)

    def gather(chunk):
        index = chunk.to(device)[:, None] + offsets
        steps = index[:, :-1]  # no rewards or game overs here: the heads cost the same either way
        return latents[index], actions[steps], torch.ones_like(steps), torch.zeros(steps.shape, device=device)

    def batches():
        order = starts[torch.randperm(len(starts), generator=generator)]
        return ((lambda c=c: gather(c)) for c in order.split(batch))

    return timed_training(
        model, torch.compile(loss) if compiled else loss, batches, device, precision, steps, seconds
    )


def sequences(episodes, device):
    """Latents of a fresh VAE for every frame (the dynamics stage's input) and valid starts."""
    from arcadedreamer.data.dataset import sequence_starts
    from arcadedreamer.models.vae import VAE

    vae = VAE().to(device).eval()
    latents = vae.encode_recording(episodes.frames, episodes.episode_ends)
    starts = sequence_starts(episodes, 4, FULL["seq_len"], np.ones(len(episodes), dtype=bool))
    return latents, episodes.actions.to(device), torch.from_numpy(starts)


def part_check(cfg: dict, out: Path) -> dict:
    device = torch.device(cfg["device"])
    episodes, stacks = load(cfg, out, device)
    latents, actions, starts = sequences(episodes, device)
    result = {}
    for stage, run in (("vae", lambda p: vae_run(stacks, device, cfg["batch"], cfg["steps"], p)),
                       ("dynamics", lambda p: dynamics_run(latents, actions, starts, device, cfg["batch"],
                                                            cfg["steps"], p))):  # fmt: skip
        fp32, bf16 = run("fp32")["losses"], run("bf16")["losses"]
        finite = all(math.isfinite(v) for v in fp32 + bf16)
        gap = abs(np.mean(bf16[-5:]) - np.mean(fp32[-5:])) / max(abs(np.mean(fp32[-5:])), 1e-12)
        result[stage] = {"fp32_loss": float(np.mean(fp32[-5:])), "bf16_loss": float(np.mean(bf16[-5:])),
                         "relative_gap": float(gap), "finite": finite,
                         "ok": bool(finite and gap <= BF16_TOLERANCE), "steps": cfg["steps"]}  # fmt: skip
        print(f"{stage}: fp32 loss {result[stage]['fp32_loss']:.4g}, bf16 {result[stage]['bf16_loss']:.4g} "
              f"(gap {gap:.1%}, tolerance {BF16_TOLERANCE:.0%}) {'ok' if result[stage]['ok'] else 'FAILED'}",
              flush=True)  # fmt: skip
    return result


def part_speed(cfg: dict, out: Path) -> dict:
    device = torch.device(cfg["device"])
    episodes, stacks = load(cfg, out, device)
    latents, actions, starts = sequences(episodes, device)
    precision = "auto"  # bf16 on the GPU, what training.precision: auto runs
    result = {"vae": {}, "dynamics": {}}
    for compiled in [False, True] if cfg["compile"] else [False]:
        for batch in cfg["batches"]:
            key = f"{batch}{' compiled' if compiled else ''}"
            v = vae_run(stacks, device, batch, 0, precision, compiled, cfg["seconds"])
            d = dynamics_run(latents, actions, starts, device, batch, 0, precision, compiled, cfg["seconds"])
            result["vae"][key] = {"samples_per_s": v["samples_per_s"], "data_wait": v["data_wait"]}
            result["dynamics"][key] = {"samples_per_s": d["samples_per_s"], "data_wait": d["data_wait"]}
            print(f"batch {key}: VAE {v['samples_per_s']:,.0f} stacks/s (data wait {v['data_wait']:.0%}), "
                  f"dynamics {d['samples_per_s']:,.0f} seq/s (data wait {d['data_wait']:.0%})", flush=True)  # fmt: skip
    return result


def part_report(results: dict) -> dict:
    speed = results["speed"]
    best_vae = max(speed["vae"].items(), key=lambda kv: kv[1]["samples_per_s"])
    best_dyn = max(speed["dynamics"].items(), key=lambda kv: kv[1]["samples_per_s"])
    stacks = FULL["frames"] * 0.9  # 10% of the episodes validate
    vae_s = stacks * FULL["vae_epochs"] / best_vae[1]["samples_per_s"]
    dyn_s = stacks * FULL["dynamics_epochs"] / best_dyn[1]["samples_per_s"]
    collect_s = (
        results.get("data", {}).get("collect_s", 0.0)
        * FULL["frames"]
        / max(results.get("data", {}).get("frames", 1), 1)
    )
    total = vae_s + dyn_s + collect_s
    verdict = (f"full defaults ≈ {total / 60:.1f} min on this machine: {'within' if total <= FULL['budget_s'] else 'over'}"
               f" 30 min (VAE {vae_s / 60:.1f} min at batch {best_vae[0]}, dynamics {dyn_s / 60:.1f} min at batch "
               f"{best_dyn[0]}, collection {collect_s / 60:.1f} min)")  # fmt: skip
    print(verdict)
    return {"vae_s": vae_s, "dynamics_s": dyn_s, "collect_s": collect_s, "total_s": total,
            "within_budget": total <= FULL["budget_s"], "verdict": verdict}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (what the tests run)")
    parser.add_argument("--part", choices=["data", "check", "speed", "report", "all"], default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_check.json")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "gpu_check_data")
    args = parser.parse_args(argv)
    cfg = settings(args.smoke)
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible to torch; run with --smoke on a CPU", file=sys.stderr)
        return 2
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = torch.cuda.get_device_name(0) if cfg["device"] == "cuda" else "cpu (smoke)"
    results["torch"] = torch.__version__
    parts = ["data", "check", "speed", "report"] if args.part == "all" else [args.part]
    for name in parts:
        if name == "data" or (name in ("check", "speed") and not (args.work / "data").exists()):
            results["data"] = part_data(cfg, args.work)
        if name == "check":
            results["check"] = part_check(cfg, args.work)
        elif name == "speed":
            results["speed"] = part_speed(cfg, args.work)
        elif name == "report":
            results["report"] = part_report(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    failed = [s for s, r in results.get("check", {}).items() if not r["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
