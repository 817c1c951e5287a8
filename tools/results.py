"""Results as data: record a finished experiment into a file under results/, and report it.

    python tools/results.py record results/ablation-dynamics.json --row NAME --seed N \
        --seconds S --experiment EXP --command "make ablation-dynamics"
    python tools/results.py report results/ablation-dynamics.json [--figure docs/ablation_dynamics.png]

`record` reads what the last `dvc exp run` left in the workspace (params.yaml with the
experiment's values, metrics/eval.json, plots/series.json) and keeps it with where it came
from (date, commit, machine, versions, command, wall time); a run of the same row and seed
replaces the earlier one. `report` prints one line per row: the mean ± standard deviation over
its seeds (one run is not a result).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from arcadedreamer import provenance  # noqa: E402
from arcadedreamer.fileio import atomic_open, atomic_write_json  # noqa: E402

# The columns of an ablation table: (eval.json key, heading, digits)
COLUMNS = (
    ("ball_recall_h1_model", "ball recall h1", 2),
    ("ball_recall_h10_model", "h10", 2),
    ("ball_recall_h50_model", "h50", 2),
    ("ball_recall_mean_model", "mean h1–50", 2),
    ("false_ball_rate_h50_model", "false balls h50", 2),
    ("player_error_h50_model", "paddle error h50 (px)", 2),
    ("psnr_h10_gain", "PSNR − copy-last h10 (dB)", 2),
    ("psnr_h50_gain", "h50 (dB)", 2),
)


def record(path: Path, row: str, seed: int, seconds: float, experiment: str, command: str) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    evaluation = json.loads((ROOT / params["evaluation"]["metrics_file"]).read_text())
    series = json.loads((ROOT / params["evaluation"]["plots_dir"] / Path("series.json")).read_text())
    game = params["data"]["games"][0]
    model = series[game]["model"]
    run = {
        "row": row,
        "seed": seed,
        "experiment": experiment,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "game": game,
        "wall_seconds": round(seconds, 1),
        "settings": {"dynamics": params["dynamics"], "training": params["training"]},
        "scores": evaluation["games"][game],
        "by_horizon": {k: model[k] for k in model if k.startswith(("ball_", "player_", "psnr"))},
        "copy_last_ball_recall": series[game]["copy_last"].get("ball_recall"),
    }
    results = json.loads(path.read_text()) if path.exists() else {"runs": []}
    results.update(
        command=command,
        commit=provenance.git_state(ROOT),
        machine=provenance.machine(),
        versions=provenance.versions(),
    )
    results["runs"] = [r for r in results["runs"] if (r["row"], r["seed"]) != (row, seed)] + [run]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, results)
    return run


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else math.nan)


def rows(results: dict) -> dict[str, list[dict]]:
    """The runs grouped by row, in the order rows first appear."""
    grouped: dict[str, list[dict]] = {}
    for run in results["runs"]:
        grouped.setdefault(run["row"], []).append(run)
    return grouped


def table(results: dict) -> str:
    """Markdown: one line per row, each score as mean ± standard deviation over the seeds."""
    head = ["row", "seeds", *(title for _, title, _ in COLUMNS), "minutes a run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in rows(results).items():
        cells = [f"`{name}`", str(len(runs))]
        for key, _, digits in COLUMNS:
            mean, spread = mean_and_spread([r["scores"].get(key) for r in runs])
            cells.append(_format(mean, spread, digits))
        minutes = mean_and_spread([r["wall_seconds"] / 60 for r in runs])
        cells.append(_format(*minutes, 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(mean: float, spread: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if math.isfinite(spread) else "")


def figure(results: dict, path: Path) -> None:
    """Ball recall against the horizon, one curve per row (mean over seeds, band ± 1 sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, runs in rows(results).items():
        curves = np.array(
            [[np.nan if v is None else v for v in r["by_horizon"]["ball_recall"]] for r in runs]
        )
        mean = np.nanmean(curves, axis=0)
        spread = np.nanstd(curves, axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
        horizons = np.arange(1, len(mean) + 1)
        ax.plot(horizons, mean, label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(horizons, mean - spread, mean + spread, alpha=0.2)
    copy_last = next(iter(results["runs"]))["copy_last_ball_recall"]
    if copy_last:
        ax.plot(range(1, len(copy_last) + 1), [np.nan if v is None else v for v in copy_last], "k--",
                label="copy the last real frame")  # fmt: skip
    ax.set_xlabel("open-loop horizon (frames)")
    ax.set_ylabel("dream ball recall (held-out)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("file", type=Path)
    rec.add_argument("--row", required=True)
    rec.add_argument("--seed", type=int, required=True)
    rec.add_argument("--seconds", type=float, required=True)
    rec.add_argument("--experiment", default="")
    rec.add_argument("--command", default="")
    rep = sub.add_parser("report")
    rep.add_argument("file", type=Path)
    rep.add_argument("--figure", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        run = record(args.file, args.row, args.seed, args.seconds, args.experiment, args.command)
        scores = run["scores"]
        print(
            f"recorded {args.row} seed {args.seed} in {args.file}: ball recall h10 "
            f"{scores.get('ball_recall_h10_model', math.nan):.2f}, h50 {scores.get('ball_recall_h50_model', math.nan):.2f}"
        )
    else:
        results = json.loads(args.file.read_text())
        print(table(results))
        if args.figure:
            figure(results, args.figure)
            print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
