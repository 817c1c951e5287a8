"""`make bench`: every benchmark in one run, then a markdown table of the figures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_collect  # noqa: E402
import bench_train  # noqa: E402
from common import machine  # noqa: E402


def main() -> None:
    print(f"# ArcadeDreamer benchmarks\n\nMachine: {machine()}\n", flush=True)
    collect_rows = bench_collect.main()
    train = bench_train.main()
    print("\n| what | ours | reference | ratio | target |\n|---|---|---|---|---|")
    for row in collect_rows:
        print(f"| collect {row['game']} (frames/s) | {row['collect']:,.0f} | bare emulator {row['bare']:,.0f} | "
              f"{row['collect'] / row['bare']:.2f}x | ≥ 0.8x |")  # fmt: skip
        print(f"| collect {row['game']} vs gymnasium+cv2 | {row['collect']:,.0f} | single env {row['gym_cv2']:,.0f} | "
              f"{row['collect'] / row['gym_cv2']:.2f}x | report |")  # fmt: skip
    for stage, unit in (("vae", "stacks/s"), ("dynamics", "seq/s")):
        r = train[stage]
        print(f"| {stage} trainer ({unit}) | {r['trainer']:,.0f} | bare loop {r['bare']:,.0f} | "
              f"{r['trainer'] / r['bare']:.2f}x | ≥ 0.9x |")  # fmt: skip
    f = train["flops"]
    print(f"| VAE fp32 GFLOP/s | {f['achieved'] / 1e9:.1f} | matmul {f['matmul_peak'] / 1e9:.0f} | "
          f"{f['achieved'] / f['matmul_peak']:.2f} | report |")  # fmt: skip
    m = train["memory"]
    print(f"| VAE training peak RSS (MiB) | {m['peak_rss_mib']:.0f} | imports {m['import_rss_mib']:.0f} + frames "
          f"{m['raw_frames_mib']:.0f} | {(m['peak_rss_mib'] - m['import_rss_mib']) / m['raw_frames_mib']:.2f}x | "
          "< 1.5x + fixed |")  # fmt: skip


if __name__ == "__main__":
    main()
