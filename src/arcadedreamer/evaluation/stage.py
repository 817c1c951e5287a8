"""The evaluate stage: score, write eval.json / plots / PNG, log to MLflow, promote."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from arcadedreamer import tracking
from arcadedreamer.config import MISS_METRICS, OBJECT_METRICS, Params
from arcadedreamer.evaluation.evaluate import (
    PREDICTORS,
    evaluate_world_model,
    higher_is_better,
    series_rows,
    should_promote,
)
from arcadedreamer.fileio import atomic_open, atomic_write_json, atomic_write_text, replaced_together
from arcadedreamer.models.checkpoints import load_world_model
from arcadedreamer.models.events import format_score as _ratio

PLOT_METRICS = ("psnr", "ssim", "ball_recall")  # ball_recall: games with a RAM map


def write_plots(result: dict, plots_dir: Path) -> list[Path]:
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for game, scores in result["series"].items():
        for metric in (m for m in PLOT_METRICS if m in scores["model"]):
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=["horizon", *PREDICTORS], delimiter="\t")
            writer.writeheader()
            for row in series_rows(scores, metric):
                writer.writerow({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in row.items()})
            path = plots_dir / f"{metric}_{game}.tsv"
            atomic_write_text(path, buffer.getvalue())
            written.append(path)
    series = plots_dir / "series.json"  # every score at every horizon, for reports across experiments
    atomic_write_json(series, result["series"])  # NaN (nothing scored at a horizon) as null
    written.append(series)
    written.append(plot_curves(result, plots_dir / "eval_curves.png"))
    return written


BREAKDOWNS = {  # stacked shares of the model's scored frames, per object (evaluation/objects.py)
    "ball": ("ball_recall", "ball_faded", "ball_misplaced", "ball_absent"),
    "player": ("player_recall", "player_faded", "player_misplaced", "player_absent"),
}


def plot_curves(result: dict, path: Path) -> Path:
    """One column per game: PSNR, SSIM and ball recall of the model and the baselines against
    the horizon, then what the model draws for the ball and the player (hit, faded, misplaced,
    absent) as stacked shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = list(result["series"])
    scored = {metric for g in games for metric in result["series"][g]["model"]}
    rows = [m for m in PLOT_METRICS if m in scored] + [
        k for k, parts in BREAKDOWNS.items() if parts[0] in scored
    ]
    fig, axes = plt.subplots(
        len(rows), len(games), figsize=(4.2 * len(games), 3.2 * len(rows)), squeeze=False
    )
    styles = {"model": "-", "copy_last": "--", "mean_frame": ":", "reconstruction": "-."}
    labels = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ball_recall": "ball recall"}
    for col, game in enumerate(games):
        series = result["series"][game]
        for row, metric in enumerate(rows):
            ax = axes[row][col]
            if metric in BREAKDOWNS and BREAKDOWNS[metric][0] in series["model"]:
                shares = [series["model"][part] for part in BREAKDOWNS[metric]]
                horizons = range(1, len(shares[0]) + 1)
                names = ["hit", "faded", "misplaced", "absent"]
                ax.stackplot(
                    horizons, *shares, labels=names, colors=["#2a9d8f", "#e9c46a", "#f4a261", "#9b2226"]
                )
                ax.set_ylim(0, 1)
                ax.set_title(f"{game.removesuffix('NoFrameskip-v4')}: model's {metric}")
                ax.set_ylabel(f"share of frames ({metric})")
                ax.legend(fontsize=7, loc="lower left")
            elif metric in series["model"]:
                for name in PREDICTORS:
                    values = series[name][metric]
                    ax.plot(range(1, len(values) + 1), values, styles[name], label=name)
                ax.set_title(f"{game.removesuffix('NoFrameskip-v4')}: {metric.upper()}")
                ax.set_ylabel(labels[metric])
                if row == 0:
                    ax.legend(fontsize=8)
            else:
                ax.set_axis_off()
                continue
            ax.set_xlabel("open-loop horizon (frames)")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
    return path


def _db(value: float | None) -> str:
    """A difference in dB, or n/a where there is none (eval.json writes NaN as null)."""
    return f"{value:+.2f} dB" if value is not None and math.isfinite(value) else "n/a"


def _horizons(scores: dict, prefix: str) -> list[int]:
    """The headline horizons of `prefix` keys (`psnr_h10_gain` → 10), in order."""
    found = {int(k.removeprefix(prefix).split("_")[0]) for k in scores if k.startswith(prefix)}
    return sorted(found)


def format_headline(result: dict) -> str:
    """A few lines per game: PSNR gains over copy-last, and the object scores where scored."""
    lines = []
    for game, scores in result["games"].items():
        gains = ", ".join(f"h{h} {_db(scores.get(f'psnr_h{h}_gain'))}" for h in _horizons(scores, "psnr_h"))
        lines.append(
            f"{game}: model PSNR minus copy-last {gains}; reconstruction minus mean frame "
            f"{_db(scores.get('recon_gain_over_mean_frame'))} ({scores['windows']} rollouts)"
        )
        if "recon_ball_recall" in scores:
            recalls = ", ".join(
                f"h{h} {_ratio(scores[f'ball_recall_h{h}_model'])} "
                f"(copy-last {_ratio(scores[f'ball_recall_h{h}_copy_last'])})"
                for h in _horizons(scores, "ball_recall_h")
            )
            lines.append(
                f"{game}: ball recall {recalls}; reconstruction {_ratio(scores['recon_ball_recall'])}, "
                f"its false-ball rate {_ratio(scores['recon_false_ball_rate'])}, "
                f"player error {_ratio(scores['recon_player_error'])} px"
            )
            for thing in BREAKDOWNS:
                misses = "; ".join(
                    f"h{h} "
                    + ", ".join(
                        f"{kind} {_ratio(scores.get(f'{thing}_{kind}_h{h}_model'))}"
                        for kind in ("faded", "misplaced", "absent")
                    )
                    for h in _horizons(scores, f"{thing}_faded_h")
                )
                if misses:
                    lines.append(f"{game}: the dream's {thing} misses: {misses}")
        if "reward_events" in scores:
            lines.append(
                f"{game}: reward head AUC {_ratio(scores.get('reward_auc'))}, recall "
                f"{_ratio(scores['reward_recall'])}, precision "
                f"{_ratio(scores['reward_precision'])} on {scores['reward_events']} rewarded steps "
                f"(accuracy {_ratio(scores['reward_accuracy'], 3)}, always-none "
                f"{_ratio(scores['reward_majority_accuracy'], 3)}); game-over head accuracy "
                f"{_ratio(scores['game_over_accuracy'], 3)} (majority "
                f"{_ratio(scores['game_over_majority_accuracy'], 3)}) on {scores['game_over_events']} game overs"
            )
    return "\n".join(lines)


def run_evaluate(params: Params, checkpoint_path: str | Path) -> dict:
    model, checkpoint = load_world_model(checkpoint_path, params)
    result = evaluate_world_model(model, checkpoint, params)
    cfg = params.evaluation
    metrics_file, plots_dir = Path(cfg.metrics_file), Path(cfg.plots_dir)
    report = {"summary": result["summary"], "games": result["games"], "settings": result["settings"]}
    with replaced_together(metrics_file, plots_dir) as (staged_metrics, staged_plots):
        atomic_write_json(staged_metrics, report)
        written = [plots_dir / path.name for path in write_plots(result, staged_plots)]
    print(format_headline(result))

    scored = checkpoint.get("mlflow_run_id")
    description = (
        f"Evaluation of dynamics checkpoint {Path(checkpoint_path).name} (epoch {checkpoint['epoch']}) on the "
        f"pinned held-out episodes of {', '.join(result['games'])}: {cfg.context} real steps, then "
        f"{cfg.horizons} imagined"
    )
    with tracking.stage_run("evaluate", params, description=description):
        scored_uri = tracking.model_uri_for_run(tracking.DYNAMICS_MODEL, scored)
        tracking.set_tags(
            {"scored.checkpoint": str(checkpoint_path)}
            | ({"scored.run_id": scored} if scored else {})
            | ({"scored.model_uri": scored_uri} if scored_uri else {})
        )
        tracking.log_datasets(
            params.heldout.out_dir, list(result["games"]), result["content_hashes"], "evaluation"
        )
        if len(result["games"]) > 1:  # with one game the summary is that game's scores again
            tracking.log_metrics({f"summary/{k}": v for k, v in result["summary"].items()})
        for game, scores in result["games"].items():
            tracking.log_metrics({f"{game}/{k}": v for k, v in scores.items()})
        tracking.log_series(  # per horizon: step = the horizon in frames
            {
                f"{game}/{metric}_{name}": series[name][metric]
                for game, series in result["series"].items()
                for name in PREDICTORS
                for metric in SERIES_METRICS
                if metric in series[name] and (name == "model" or metric in BASELINE_SERIES)
            }
        )
        tracking.log_artifact(metrics_file)
        for path in written:
            tracking.log_artifact(path, "plots")
        if params.tracking.register_models:
            report["promotion"] = promote(params, checkpoint, result["summary"])
            tracking.set_tags(
                {f"promotion.{k}": str(v) for k, v in report["promotion"].items() if k in PROMOTION_TAGS}
            )
    return report


# Curves MLflow keeps per horizon: the model's every score, the baselines' headline ones
SERIES_METRICS = ("psnr", "ssim", "latent_mse", *OBJECT_METRICS, *MISS_METRICS)
BASELINE_SERIES = ("psnr", "ssim", *OBJECT_METRICS)
PROMOTION_TAGS = ("promoted", "version", "reason")


def promote(params: Params, checkpoint: dict, summary: dict) -> dict:
    tracking.setup(params)
    name, key = tracking.DYNAMICS_MODEL, params.evaluation.promote_on
    version = tracking.version_for_run(name, checkpoint.get("mlflow_run_id"))
    if version is None:
        message = "this checkpoint has no registered version; nothing to promote"
        print(f"promotion: {message}")
        return {"promoted": False, "reason": message}
    score = summary.get(key, math.nan)  # an object score of games without a RAM map: none
    tracking.set_version_tag(name, version, f"eval.{key}", f"{score:.6g}")  # what it is ranked by
    if run := tracking.active_run_id():
        tracking.set_version_tag(name, version, "eval.run_id", run)
    champion = tracking.alias_version(name, "champion")
    if champion and champion["version"] == version:
        message = f"version {version} is already champion"
        print(f"promotion: {message}")
        return {"promoted": False, "reason": message, "version": version}
    champion_score = None
    if champion:
        tag = champion["tags"].get(f"eval.{key}")
        champion_score = float(tag) if tag is not None else (-math.inf if higher_is_better(key) else math.inf)
    promoted, reason = should_promote(score, champion_score, higher_is_better(key))
    if promoted:
        tracking.set_alias(name, "champion", version)
        print(f"promotion: {name} version {version} is now @champion ({key}: {reason})")
    else:
        print(f"promotion: @champion stays version {champion['version']} ({key}: {reason})")
    return {"promoted": promoted, "reason": reason, "version": version}
