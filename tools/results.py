"""Results as data: record a finished experiment into a file under results/, report it, and
write the docs' tables from those files.

    python tools/results.py record results/ablation-dynamics.json --row NAME --seed N \
        --seconds S --experiment EXP --command "make ablation-dynamics"
    python tools/results.py report results/ablation-dynamics.json [--figure docs/ablation_dynamics.png]
    python tools/results.py scorecard results/quickstart-breakout.json --workspace CLONE \
        --seconds S --command "git clone … && make quickstart"
    python tools/results.py tables [--check]

`tables` rewrites every block of README.md and docs/*.md that stands between
`<!-- results: FILE -->` and `<!-- /results -->` with the table FILE holds and the line saying
where it came from; `--check` only says which blocks differ (tests/test_docs.py runs it), so a
number edited by hand in the docs fails the tests.

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
import re
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


def record(
    path: Path,
    row: str,
    seed: int,
    seconds: float | None,
    experiment: str,
    command: str,
    controller: bool = False,
    workspace: Path = ROOT,
    params_file: Path | None = None,
    dynamics_seconds: bool = False,
) -> dict:
    """One run into `path`: what the workspace holds now (its params.yaml, or `params_file`, and the
    eval.json, plots/series.json and with `controller` metrics/controller.json that names), with
    the workspace's commit. With `dynamics_seconds`, its seconds are the dynamics stage's own
    clock (`train_seconds` of its metrics JSON), not `seconds`: a seed's cost without the stages
    DVC ran before it."""
    params = yaml.safe_load((params_file or workspace / "params.yaml").read_text())
    if dynamics_seconds:
        summary = json.loads((workspace / params["training"]["metrics_dir"] / "dynamics.json").read_text())
        seconds = summary.get("train_seconds")
    evaluation = json.loads((workspace / params["evaluation"]["metrics_file"]).read_text())
    series = json.loads((workspace / params["evaluation"]["plots_dir"] / Path("series.json")).read_text())
    game = params["data"]["games"][0]
    model = series[game]["model"]
    run = {
        "row": row,
        "seed": seed,
        "experiment": experiment,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "game": game,
        "wall_seconds": None if seconds is None else round(seconds, 1),
        **({"timed": "dynamics training (train_seconds)"} if dynamics_seconds else {}),
        "settings": {"dynamics": params["dynamics"], "training": params["training"]},
        "scores": evaluation["games"][game],
        "by_horizon": {k: model[k] for k in model if k.startswith(("ball_", "player_", "psnr"))},
        "copy_last_ball_recall": series[game]["copy_last"].get("ball_recall"),
    }
    if controller:
        run["controller"] = json.loads((workspace / params["controller"]["metrics_file"]).read_text())
    state = {"commit": provenance.git_state(workspace), "machine": provenance.machine()}
    results = json.loads(path.read_text()) if path.exists() else {"runs": [], **state}
    if any(short_provenance(results, key) != short_provenance(state, key) for key in state):
        run.update(state)  # measured elsewhere than the file's other runs: the run says where
    results.update(command=command, versions=provenance.versions())
    results["runs"] = [r for r in results["runs"] if (r["row"], r["seed"]) != (row, seed)] + [run]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, results)
    return run


def scorecard(path: Path, workspace: Path, seconds: float, command: str) -> dict:
    """The quickstart's headline table into `path`, from what a finished `make quickstart` left in
    `workspace` (metrics/eval.json, metrics/controller.json), with that checkout's commit."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    games = json.loads((workspace / params["evaluation"]["metrics_file"]).read_text())["games"]
    if len(games) != 1:
        raise SystemExit(f"error: the quickstart scores one game; this evaluation has {sorted(games)}")
    ((game, scores),) = games.items()
    controller = json.loads((workspace / params["controller"]["metrics_file"]).read_text())
    horizons = (1, 10, 50)

    def line(title: str, key: str, fmt: str = "{:.2f}") -> list[str]:
        return [title] + [fmt.format(scores[key.format(h=h)]).replace("-", "−") for h in horizons]

    minutes, rest = divmod(round(seconds), 60)
    target = command.split("&&")[-1].strip() or "make quickstart"  # e.g. "make quickstart-long"
    results = {
        "title": f"{target} from a clean clone: held-out {game}, {scores['windows']} open-loop rollouts",
        "measured": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "commit": provenance.git_state(workspace),
        "machine": provenance.machine(),
        "versions": provenance.versions(),
        "command": command,
        "wall_time": f"{minutes} min {rest} s wall, install included, the machine otherwise idle",
        "columns": ["", "h = 1", "h = 10", "h = 50"],
        "rows": [
            line("dream ball recall", "ball_recall_h{h}_model"),
            line("ball recall: copy the last real frame", "ball_recall_h{h}_copy_last"),
            line("false-ball rate: dream", "false_ball_rate_h{h}_model"),
            line("paddle error (frame pixels): dream", "player_error_h{h}_model"),
            line("paddle error: copy-last", "player_error_h{h}_copy_last"),
            line("PSNR, dream minus copy-last (dB)", "psnr_h{h}_gain", "{:+.2f}"),
            [f"VAE alone: ball recall {scores['recon_ball_recall']:.2f}, paddle error "
             f"{scores['recon_player_error']:.2f} px", "", "", ""],
            [f"controller in {controller['eval_episodes']} real games: {controller['real_return_mean']:+.2f} ± "
             f"{controller['real_return_ci95']:.2f} (random {controller['random_return_mean']:+.2f} ± "
             f"{controller['random_return_ci95']:.2f})", "", "", ""],
        ],
    }  # fmt: skip
    atomic_write_json(path, results)
    return results


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


# With a controller: its real score and random's, ± their 95% intervals (the first run's)
CONTROLLER_COLUMNS = (
    ("real_return_mean", "real_return_ci95", "controller, real game"),
    ("random_return_mean", "random_return_ci95", "random"),
)


def table(results: dict) -> str:
    """Markdown: one line per row, each score as mean ± standard deviation over the seeds."""
    with_controller = any("controller" in r for r in results["runs"])
    columns = [c for c in COLUMNS if any(c[0] in r["scores"] for r in results["runs"])]  # those it has
    head = ["row", "seeds", *(title for _, title, _ in columns)]
    head += [title for *_, title in CONTROLLER_COLUMNS] if with_controller else []
    head.append("minutes a run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in rows(results).items():
        cells = [f"`{name}`", str(len(runs))]
        for key, _, digits in columns:
            mean, spread = mean_and_spread([r["scores"].get(key) for r in runs])
            cells.append(_format(mean, spread, digits))
        if with_controller:
            scores = runs[0].get("controller", {})
            cells += [
                f"{scores[mean]:+.2f} ± {scores[ci]:.2f}" if mean in scores else "n/a"
                for mean, ci, _ in CONTROLLER_COLUMNS
            ]
        minutes = mean_and_spread([r["wall_seconds"] / 60 for r in runs if r["wall_seconds"] is not None])
        cells.append(_format(*minutes, 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(mean: float, spread: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if math.isfinite(spread) else "")


def save_recall_figure(fig, ax, xlabel: str, path: Path, **legend) -> None:
    """The ball-recall axes the figures share, written atomically as a PNG, then closed."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("dream ball recall (held-out)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, **legend)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


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
    save_recall_figure(fig, ax, "open-loop horizon (frames)", path)


def training_curve(curves: list[tuple[str, dict]], path: Path) -> list[str]:
    """Ball recall 10 and 50 steps on against the minutes of training, one point per row (mean
    over seeds, bar ± 1 sd), a pair of curves per results file: does more training of a recipe
    still move the horizon, and which recipe gets further in the same minutes? Minutes on a log
    axis: the recipes span 1 to 90. Returns the legend's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 5))
    # one pair of lines per results file, and per `curve` of its runs (e.g. each schedule's length)
    lines = [
        (name + (f", {curve}" if curve else ""), [runs for runs in rows(results).values() if runs[0].get("curve") == curve])
        for name, results in curves
        for curve in dict.fromkeys(r.get("curve") for r in results["runs"])
    ]  # fmt: skip
    palette = plt.get_cmap("tab10")
    for index, (name, grouped) in enumerate(lines):
        color = palette(index % palette.N)
        minutes = [mean_and_spread([r["wall_seconds"] / 60 for r in runs])[0] for runs in grouped]
        for key, horizon, style in (("ball_recall_h10_model", 10, "--"), ("ball_recall_h50_model", 50, "-")):
            recall = [mean_and_spread([r["scores"].get(key) for r in runs]) for runs in grouped]
            ax.errorbar(minutes, [m for m, _ in recall], yerr=[s for _, s in recall], color=color,
                        linestyle=style, marker="o", capsize=3, label=f"{name}: {horizon} steps on")  # fmt: skip
    ax.axhline(
        0.5, color="black", linestyle=":", linewidth=1, label="half the windows (the target 50 steps on)"
    )
    ax.set_xscale("log")
    labels = ax.get_legend_handles_labels()[1]
    save_recall_figure(
        fig, ax, "dynamics training (minutes, log scale)", path, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    return labels


BLOCK = re.compile(r"(<!-- results: (?P<file>[^ ]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def short_provenance(record: dict, key: str) -> str | None:
    """A file's or a run's commit ("abc1234 (uncommitted changes)") or machine ("CPU (family F
    model M stepping S), 2 cores")."""
    value = record.get(key)
    if isinstance(value, dict) and key == "commit":
        return value["commit"][:7] + (" (uncommitted changes)" if value.get("dirty") else "")
    if isinstance(value, dict) and key == "machine":
        cpu_id = f" ({value['cpu_id']})" if value.get("cpu_id") else ""  # two hosts can share a name
        return f"{value['cpu']}{cpu_id}, {value['cores']} cores"
    return value


def provenance_line(results: dict) -> str:
    """Where a table's figures come from, in one line under it; runs measured elsewhere than
    the file's others (their own commit or machine) are named after it."""
    commit, machine = short_provenance(results, "commit"), short_provenance(results, "machine")
    elsewhere: dict[str, list[str]] = {}
    for run in results.get("runs", []):
        if "commit" in run or "machine" in run:
            where = f"commit {short_provenance(run, 'commit')}, {short_provenance(run, 'machine')}"
            elsewhere.setdefault(where, []).append(f"{run['row']} seed {run['seed']}")
    dates = sorted({run["date"][:10] for run in results.get("runs", [])}) or [results.get("measured", "?")]
    parts = [
        f"measured {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else ""),
        f"commit {commit}" if commit else None,
        machine,
        f"`{results['command']}`" if results.get("command") else None,
        results.get("wall_time"),
    ]
    parts += [f"{', '.join(runs)}: {where}" for where, runs in elsewhere.items()]
    line = "Source: " + "; ".join(p for p in parts if p) + "."
    if results.get("note"):
        line += " " + results["note"]
    return line


DURATION = re.compile(r"(?:(\d+) min)? ?(?:(\d+) s)")


def _seconds(text: str) -> list[int]:
    return [int(m or 0) * 60 + int(s) for m, s in DURATION.findall(text)]


def _duration(seconds: int) -> str:
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def summary_rows(summary: dict, root: Path) -> list[list[str]]:
    """Each command's range of wall times, from the timed runs it names: those at or after the
    commit `since` whose command cell is a key of `timed` (its value: which part of an "A, then
    B" wall time), timed whole ("not …" otherwise) with nothing heavy beside them ("beside"
    otherwise); per machine in brackets."""
    timed = json.loads((root / summary["from"]).read_text())
    columns = timed["columns"]
    commit, command, wall, machine = (
        columns.index(c) for c in ("commit", "command", "wall time", "machine, and what ran beside it")
    )
    table = []
    for spec in summary["commands"]:
        since = [r[commit] for r in timed["rows"]].index(spec.get("since", timed["rows"][0][commit]))
        by_machine: dict[str, list[int]] = {}
        for row in timed["rows"][since:]:
            if row[command] not in spec["timed"] or "beside" in row[machine] or row[wall].startswith("not"):
                continue
            seconds = _seconds(row[wall].split(", then ")[spec["timed"][row[command]]])
            by_machine.setdefault(" ".join(row[machine].split()[:2]).rstrip(","), []).extend(seconds)
        every = sorted(s for runs in by_machine.values() for s in runs)
        if not every:
            raise ValueError(f"{summary['from']}: no timed run of {spec['timed']} since {spec.get('since')}")
        span = _duration(every[0]) + (f" to {_duration(every[-1])}" if len(every) > 1 else "")
        machines = "; ".join(
            f"{name}: " + ", ".join(_duration(s) for s in sorted(runs))
            if len(runs) <= 4
            else f"{name}: {len(runs)} runs, {_duration(min(runs))} to {_duration(max(runs))}"
            for name, runs in by_machine.items()
            if runs
        )
        table.append([spec["command"], span, f"{spec['what']} ({machines})"])
    return table


def target_rows(targets: list[dict], root: Path) -> list[list[str]]:
    """Each target against the row of a results file it names: the mean ± sd over that row's
    seeds of one score, and whether the mean is on the asked side of the bound (`at_least` or
    `at_most`)."""
    table = []
    for target in targets:
        runs = rows(json.loads((root / target["file"]).read_text())).get(target["row"])
        if not runs:
            raise ValueError(f"{target['file']}: no row {target['row']!r}")
        mean, spread = mean_and_spread([r["scores"].get(target["key"]) for r in runs])
        if not math.isfinite(mean):  # a misspelt key would otherwise read as a target not met
            raise ValueError(f"{target['file']}: row {target['row']!r} has no score {target['key']!r}")
        if "at_least" in target:
            bound, met = f"≥ {target['at_least']:g}", mean >= target["at_least"]
        else:
            bound, met = f"≤ {target['at_most']:g}", mean <= target["at_most"]
        table.append([
            target["target"], bound, f"{_format(mean, spread, 2)} ({len(runs)} seeds)",
            "met" if met else "**not met**", f"`{target['row']}` ({target['file']})",
        ])  # fmt: skip
    return table


def render(path: Path, root: Path = ROOT) -> str:
    """The markdown a results file stands for: its table and its provenance line."""
    results = json.loads(path.read_text())
    if "summary" in results:  # a summary of another file's rows, derived here so the two agree
        results = {**results, "rows": summary_rows(results["summary"], root)}
    if "targets" in results:  # the same, for targets against rows of other files
        results = {**results, "rows": target_rows(results["targets"], root)}
    if "runs" in results:
        body = table(results)
    else:
        head = results["columns"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in results["rows"]]
        body = "\n".join(lines)
    return f"{body}\n\n{provenance_line(results)} (`{path.relative_to(root)}`)\n"


PARAMS_BLOCK = re.compile(r"(<!-- params-table -->\n)(?P<body>.*?)(<!-- /params-table -->)", re.S)


def params_table() -> str:
    """Every params.yaml key with its default and what it does, from the pydantic models."""
    from arcadedreamer.config import Params

    lines = ["| key | default | what it does |", "|---|---|---|"]
    for section, field in Params.model_fields.items():
        model = field.default_factory()
        for name, info in type(model).model_fields.items():
            default = json.dumps(getattr(model, name), ensure_ascii=False)
            text = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{section}.{name}` | `{default}` | {text} |")
    return "\n".join(lines) + "\n"


def tables(check: bool, root: Path = ROOT) -> list[str]:
    """Rewrite (or with `check`, compare) every results block of the docs under `root`, and the
    params table; returns the stale ones."""
    stale = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()

        def fill_params(match: re.Match, doc: Path = doc) -> str:
            fresh = params_table()
            if fresh != match["body"]:
                stale.append(f"{doc.relative_to(root)}: the params table")
            return match[1] + fresh + match[3]

        text_before = text
        text = PARAMS_BLOCK.sub(fill_params, text)

        def fill(match: re.Match, doc: Path = doc) -> str:
            if not (root / match["file"]).exists():
                stale.append(f"{doc.relative_to(root)}: {match['file']} does not exist")
                return match[0]
            fresh = render(root / match["file"], root)
            if fresh != match["body"]:
                stale.append(f"{doc.relative_to(root)}: {match['file']}")
            return match[1] + fresh + match[4]

        updated = BLOCK.sub(fill, text)
        if not check and updated != text_before:
            doc.write_text(updated)
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("file", type=Path)
    rec.add_argument("--row", required=True)
    rec.add_argument("--seed", type=int, required=True)
    timing = rec.add_mutually_exclusive_group()  # one clock a run
    timing.add_argument("--seconds", type=float, help="its wall time (none: DVC restored it from its cache)")
    timing.add_argument(
        "--dynamics-seconds", action="store_true", help="its dynamics training's time instead (metrics JSON)"
    )
    rec.add_argument("--experiment", default="")
    rec.add_argument("--command", dest="run_command", default="", help="what produced the run")
    rec.add_argument("--controller", action="store_true", help="also the controller stage's metrics")
    rec.add_argument("--workspace", type=Path, default=ROOT, help="the checkout that ran it")
    rec.add_argument("--params", type=Path, help="the params file it ran with (default: its params.yaml)")
    rep = sub.add_parser("report")
    rep.add_argument("file", type=Path)
    rep.add_argument("--figure", type=Path, help="ball recall against the horizon, a curve per row")
    rep.add_argument("--training-curve", type=Path, help="recall h10 and h50 against each row's minutes")
    rep.add_argument("--compare", type=Path, nargs="*", default=[], help="more results files on that curve")
    card = sub.add_parser("scorecard", help="the quickstart's headline table from a finished quickstart")
    card.add_argument("file", type=Path)
    card.add_argument("--workspace", type=Path, default=ROOT, help="the checkout that ran make quickstart")
    card.add_argument("--seconds", type=float, required=True, help="its wall time")
    card.add_argument("--command", dest="run_command", required=True, help="what produced it")
    tab = sub.add_parser("tables")
    tab.add_argument("--check", action="store_true", help="only say which blocks differ (exit 1)")
    args = parser.parse_args()
    if args.command == "tables":
        stale = tables(args.check)
        for block in stale:
            print(("differs from its file: " if args.check else "rewrote: ") + block)
        sys.exit(1 if args.check and stale else 0)
    if args.command == "scorecard":
        results = scorecard(args.file, args.workspace.resolve(), args.seconds, args.run_command)
        print("\n".join(" | ".join(row) for row in results["rows"]))
        return
    if args.command == "record":
        run = record(
            args.file,
            args.row,
            args.seed,
            args.seconds,
            args.experiment,
            args.run_command,
            args.controller,
            args.workspace.resolve(),
            args.params.resolve() if args.params else None,
            args.dynamics_seconds,
        )
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
        if args.training_curve:
            files = (args.file, *args.compare)
            loaded = [json.loads(f.read_text()) for f in files]
            training_curve([(r.get("label", f.stem), r) for r, f in zip(loaded, files)], args.training_curve)
            print(f"figure: {args.training_curve}")


if __name__ == "__main__":
    main()
