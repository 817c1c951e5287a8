"""Mutation testing of the pure modules: plant one small bug at a time, run the tests that cover
the module, and count the bugs they catch (`make mutate`).

    python tools/mutate.py [--module NAME ...] [--limit N] [--out results/mutation.json]
    python tools/mutate.py --classify [--out results/mutation.json]   # after EQUIVALENT is edited

A mutant changes one operator or constant of the module (a comparison flipped, + for -, * for
/, `and` for `or`, a `not` dropped, a number nudged). The module is rewritten from its syntax
tree into a copy of `src/` and the tests run against that copy (PYTHONPATH first), so the
working tree is never touched. A mutant is *killed* when the tests fail, *survives* when they
pass. The kill rate is killed / (killed + survived); mutants whose tests time out count as
killed (a hang is a failure a user would notice).
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# module → (test files, the -k expression selecting the fast tests that cover it: each mutant runs
# them, so the end-to-end checks that train a model are left to `make test`). -k applies to every
# file given (node ids too) and matches markers as well ("parametrize" holds "ram"), so each
# expression names the tests it takes.
TARGETS = {
    "data/preprocessing.py": (["tests/test_data.py", "tests/test_control.py"],
                              "preprocess_matches or stacks_never_cross or preprocessing_helpers or game_overs_are_episode_ends"),
    "evaluation/objects.py": (["tests/test_objects.py"],
                              "not (the_ram_ or box_maps_onto or read_from_true_frames)"),  # all but the emulator's
    "evaluation/metrics.py": (["tests/test_evaluation.py"], "psnr_hand or ssim_bounds or moving_mask or matches_the_reference"),
    "models/events.py": (["tests/test_control.py"], "event_scores or edge_cases or calibrated or confidence or rare_classes"),
    "models/agent.py": (["tests/test_agent.py"], "not (agent_stage or lost_life)"),  # the λ-returns, the losses: no world model
}  # fmt: skip

# Survivors that cannot change a result the project computes, by module and line, and why (a run
# lists them apart; a line that moves must be updated here)
EQUIVALENT = {
    "evaluation/objects.py": {
        100: "<= for < on float positions (RAM box centre, centroid) that are never exactly 2.0 apart",
        190: "the margin's far side and its floor at 0 lie outside the open court in all three games "
        "(its near side is tested: the margin beside the track in Breakout and Pong)",
        228: "> for >= on a float brightness sum that is never exactly NO_PLAYER",
    },
    "evaluation/metrics.py": {
        44: "-2 and 2 name the same dimension of the 4-D SSIM map",
        49: "pixel differences are multiples of 1/255: any threshold strictly between 0 and 1/255 "
        "(or > for >=) gives the same mask",
    },
    "models/events.py": {
        44: "a missing class gives NaN either way (0/0)",
        59: "an AUC does not change when every score is shifted by the same amount",
    },
}
SWAPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.And: ast.Or, ast.Or: ast.And, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip


def mutation_sites(tree: ast.Module) -> list[tuple[int, str]]:
    """(index of the node in ast.walk order, what the mutation does) for every site."""
    sites = []
    for index, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in SWAPS:
            sites.append(
                (
                    index,
                    f"line {node.lineno}: {type(node.ops[0]).__name__} → {SWAPS[type(node.ops[0])].__name__}",
                )
            )
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAPS:
            sites.append(
                (index, f"line {node.lineno}: {type(node.op).__name__} → {SWAPS[type(node.op)].__name__}")
            )
        elif isinstance(node, ast.BoolOp):
            sites.append(
                (index, f"line {node.lineno}: {type(node.op).__name__} → {SWAPS[type(node.op)].__name__}")
            )
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            sites.append((index, f"line {node.lineno}: drop {type(node.op).__name__}"))
        elif (
            isinstance(node, ast.Constant)
            and type(node.value) in (int, float)
            and not isinstance(node.value, bool)
            and hasattr(node, "lineno")
        ):
            sites.append((index, f"line {node.lineno}: {node.value!r} → {nudged(node.value)!r}"))
    return sites


def nudged(value: int | float) -> int | float:
    return value + 1 if isinstance(value, int) else (value * 1.5 if value else 0.5)


def mutate(tree: ast.Module, site: int) -> ast.Module:
    """A copy of `tree` with the mutation at node `site` (ast.walk order) applied."""
    mutant = copy.deepcopy(tree)
    for index, node in enumerate(ast.walk(mutant)):
        if index != site:
            continue
        if isinstance(node, ast.Compare):
            node.ops[0] = SWAPS[type(node.ops[0])]()
        elif isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)):
            node.op = SWAPS[type(node.op)]()
        elif isinstance(node, ast.UnaryOp):
            node.op = ast.UAdd()
        elif isinstance(node, ast.Constant):
            node.value = nudged(node.value)
        return mutant
    raise IndexError(site)


def line_of(what: str) -> int:
    """The line number of a mutation's description ("line 84: GtE → Gt")."""
    return int(what.split(":")[0].split()[1])


def row(name: str, mutants: int, killed: int, equivalent: int) -> list:
    rate = lambda k, n: f"{k / n:.0%}" if n else "n/a"  # noqa: E731
    return [name, mutants, killed, rate(killed, mutants), equivalent, rate(killed, mutants - equivalent)]


def run_tests(src: Path, tests: list[str], timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "passed" if done.returncode == 0 else "failed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=list(TARGETS), help="default: all")
    parser.add_argument("--limit", type=int, default=0, help="at most this many mutants a module (0: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "results/mutation.json")
    parser.add_argument(
        "--classify",
        action="store_true",
        help="run nothing: class the survivors of --out again by EQUIVALENT (after reading them)",
    )
    args = parser.parse_args()
    if args.classify:
        write(classified(json.loads(args.out.read_text())), args.out)
        return
    from arcadedreamer import provenance

    commit = provenance.git_state(ROOT)  # the code the mutants come from (later commits don't count)
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        src = Path(scratch) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for module in args.module or list(TARGETS):
            module_start = time.monotonic()
            path = src / "arcadedreamer" / module
            original = path.read_text()
            tree = ast.parse(original)
            files, keywords = TARGETS[module]
            tests = [*files, "-k", keywords]
            path.write_text(ast.unparse(tree))  # the baseline: the same module as rewritten
            baseline_start = time.monotonic()
            if run_tests(src, tests, 600) != "passed":
                raise SystemExit(f"{module}: its tests fail without any mutation; fix them first")
            timeout = 3 * (time.monotonic() - baseline_start) + 30
            sites = mutation_sites(tree)
            if args.limit:
                sites = sites[:: max(1, len(sites) // args.limit)][: args.limit]
            survivors, killed = [], 0
            for number, (site, what) in enumerate(sites, start=1):
                try:
                    mutant = ast.unparse(mutate(tree, site))
                except (IndexError, ValueError):
                    continue
                path.write_text(mutant)
                outcome = run_tests(src, tests, timeout)
                if outcome == "passed":
                    survivors.append(what)
                else:
                    killed += 1
                print(
                    f"{module} {number}/{len(sites)} {what}: {'survived' if outcome == 'passed' else 'killed'}",
                    flush=True,
                )
            path.write_text(original)
            total = killed + len(survivors)
            minutes = (time.monotonic() - module_start) / 60
            report[module] = {"mutants": total, "killed": killed, "kill_rate": killed / total if total else None,
                              "survivors": survivors, "tests": tests, "commit": commit,
                              "measured": dt.datetime.now(dt.timezone.utc).date().isoformat(),
                              "wall_minutes": round(minutes, 1)}  # fmt: skip
    # a run of some modules (--module) replaces their entries and keeps the others, each with its commit
    earlier = json.loads(args.out.read_text())["modules"] if args.module and args.out.exists() else {}
    report = {m: report.get(m) or earlier[m] for m in TARGETS if m in report or m in earlier}
    commits = sorted({entry["commit"]["commit"][:7] for entry in report.values()})  # provenance.git_state's
    result = {
        "title": "Mutation testing of the pure modules: bugs planted one at a time, caught by the tests",
        "measured": max(entry["measured"] for entry in report.values()),
        "commit": commit if len(commits) == 1 else "; ".join(commits),
        "machine": provenance.machine(),
        "command": "python tools/mutate.py" + (f" --limit {args.limit}" if args.limit else ""),
        "note": (f"An evenly spaced sample of at most {args.limit} mutants a module. " if args.limit else "")
        + ("" if len(commits) == 1 else provenance_by_module(report)),
        "wall_time": f"{sum(entry['wall_minutes'] or 0 for entry in report.values()):.0f} minutes"
        + ("" if all(entry["wall_minutes"] for entry in report.values()) else " (this run)"),
        "modules": report,
    }
    write(classified(result), args.out)


def provenance_by_module(report: dict) -> str:
    """Which commit each module's mutants came from, and how long they took, in one sentence."""
    parts = []
    for module, entry in report.items():
        minutes = entry["wall_minutes"]
        took = (
            f"{minutes:.0f} minutes"
            if minutes
            else f"a run of {entry['wall_time_of_its_run']} for the modules run with it"
        )
        parts.append(f"{module} at {entry['commit']['commit'][:7]} ({entry['measured']}, {took})")
    return "Modules run at different commits: " + "; ".join(parts) + "."


def classified(result: dict) -> dict:
    """`result` with each module's survivors classed by EQUIVALENT, and the table of kill rates."""
    report = result["modules"]
    for module, entry in report.items():
        reasons = EQUIVALENT.get(module, {})
        entry["equivalent"] = [
            [what, reasons[line_of(what)]] for what in entry["survivors"] if line_of(what) in reasons
        ]
    killed = sum(r["killed"] for r in report.values())
    total = sum(r["mutants"] for r in report.values())
    others = total - sum(len(r["equivalent"]) for r in report.values())  # mutants that can change a result
    rows = [row(f"`{m}`", r["mutants"], r["killed"], len(r["equivalent"])) for m, r in report.items()]
    return {
        **result,
        "kill_rate": killed / total if total else None,
        "kill_rate_of_the_others": killed / others if others else None,
        "columns": [
            "module",
            "mutants",
            "killed",
            "kill rate",
            "survivors that cannot change a result",
            "kill rate of the others",
        ],
        "rows": rows + [row("all", total, killed, total - others)],
    }


def write(result: dict, out: Path) -> None:
    from arcadedreamer.fileio import atomic_write_json  # the project's strict JSON, as results.py writes

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    killed, total = result["rows"][-1][2], result["rows"][-1][1]
    print(f"kill rate {killed}/{total} = {killed / total:.1%} → {out}")


if __name__ == "__main__":
    main()
