"""`make bench`: every benchmark in one run, then a markdown table of the figures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_collect  # noqa: E402
import bench_compile  # noqa: E402
import bench_dream  # noqa: E402
import bench_play  # noqa: E402
import bench_train  # noqa: E402
from common import machine  # noqa: E402


def main() -> None:
    print(f"# ArcadeDreamer benchmarks\n\nMachine: {machine()}\n", flush=True)
    collect_rows = bench_collect.main()
    train = bench_train.main()
    compiled = bench_compile.main()
    play = bench_play.main()
    dream = bench_dream.main([])
    rows = []
    for row in collect_rows:
        game = row["game"].replace("NoFrameskip-v4", "")
        rows.append(
            (
                f"collect {game} (frames/s)",
                f"{row['collect']:,.0f}",
                f"bare emulator {row['bare']:,.0f}",
                f"{row['collect'] / row['bare']:.2f}x",
                "≥ 0.8x",
            )
        )
        rows.append(
            (
                f"collect {game} without its {row['startup']:.2f} s start-up",
                f"{row['steady']:,.0f}",
                f"bare emulator {row['bare']:,.0f}",
                f"{row['steady'] / row['bare']:.2f}x",
                "report",
            )
        )
        rows.append(
            (
                f"collect {game} vs gymnasium+cv2",
                f"{row['collect']:,.0f}",
                f"single env {row['gym_cv2']:,.0f}",
                f"{row['collect'] / row['gym_cv2']:.2f}x",
                "report",
            )
        )
    for stage, unit in (("vae", "stacks/s"), ("dynamics", "seq/s")):
        r = train[stage]
        rows.append(
            (
                f"{stage} trainer loop ({unit})",
                f"{r['trainer']:,.0f}",
                f"bare loop {r['bare']:,.0f}",
                f"{r['trainer'] / r['bare']:.2f}x",
                "≥ 0.9x",
            )
        )
        rows.append(
            (
                f"{stage} whole train command ({unit})",
                f"{r['whole']:,.0f}",
                f"bare loop {r['bare']:,.0f}",
                f"{r['whole'] / r['bare']:.2f}x",
                "report",
            )
        )
    f = train["flops"]
    rows.append(
        (
            "VAE fp32 GFLOP/s",
            f"{f['achieved'] / 1e9:.1f}",
            f"matmul {f['matmul_peak'] / 1e9:.0f}",
            f"{f['achieved'] / f['matmul_peak']:.2f}",
            "report",
        )
    )
    m = train["memory"]
    rows.append(
        (
            "VAE training peak RSS per MiB of frames",
            f"{m['slope']:.2f} MiB",
            "1 MiB raw",
            f"{m['slope']:.2f}x + {m['fixed_mib']:.0f} MiB fixed",
            "< 1.5x + fixed",
        )
    )
    for stage, r in compiled.items():
        rows.append(
            (
                f"torch.compile {stage} step (samples/s)",
                f"{r['compiled']:,.0f}",
                f"eager {r['eager']:,.0f}",
                f"{r['compiled'] / r['eager']:.2f}x",
                f"on only if > 1x ({r['compile_seconds']:.0f} s compile)",
            )
        )
    for threads in (1, 2):
        p, v = play["play"][threads], play["vae"][threads]
        rows.append((f"play steps/s, {threads} torch thread(s), beside a 1.4-core hog", f"{p['busy']:,.0f}",
                     f"idle {p['idle']:,.0f}", f"{p['busy'] / p['idle']:.2f}x", "≥ play.fps (30)"))  # fmt: skip
        rows.append((f"VAE training stacks/s, {threads} thread(s), beside the hog", f"{v['busy']:,.0f}",
                     f"idle {v['idle']:,.0f}", f"{v['busy'] / v['idle']:.2f}x", "report"))  # fmt: skip
    rows.append(
        ("play --headless --steps 1, command to end (s)", f"{play['start_up']:.2f}", "", "", "report")
    )
    for r in dream:
        rows.append((f"dream steps/s, {r['batch']} dreams at once, observation {r['observation']}", f"{r['dream']:,.0f}",
                     f"one real emulator {r['real']:,.0f} frames/s", f"{r['dream'] / r['real']:.2f}x", "report"))  # fmt: skip
    print("\n| what | ours | reference | ratio | target |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
