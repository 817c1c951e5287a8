"""The docs as a newcomer reads them: every table drawn from its file under results/, the README
the front door, no words only the project's history explains, and links that lead somewhere."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import pytest

from conftest import PROJECT_ROOT
from test_dvc_pipeline import sh

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
EXTRA = [PROJECT_ROOT / name for name in ("CHANGELOG.md", "CONTRIBUTING.md")]


def results_tool():
    spec = importlib.util.spec_from_file_location("results_tool", PROJECT_ROOT / "tools/results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_in_the_docs_is_its_results_file():
    assert results_tool().tables(check=True) == []


def copy_of_the_docs(copy):
    """The README, docs/ and results/ under `copy`: what `tables` reads and writes."""
    for folder in ("docs", "results"):
        shutil.copytree(PROJECT_ROOT / folder, copy / folder)
    shutil.copy(PROJECT_ROOT / "README.md", copy / "README.md")
    return copy


def test_a_number_edited_by_hand_in_a_table_is_caught(tmp_path):
    """The check reads the docs, not a cache: change one figure in a copy and it fails."""
    tool = results_tool()
    copy = copy_of_the_docs(tmp_path / "project")
    assert tool.tables(check=True, root=copy) == []
    page = copy / "docs/results.md"
    text = page.read_text()
    edited = re.sub(r"\| 0\.(\d\d) ", lambda m: f"| 0.{(int(m[1]) + 1) % 100:02d} ", text, count=1)
    assert edited != text
    page.write_text(edited)
    assert any(stale.startswith("docs/results.md") for stale in tool.tables(check=True, root=copy))
    # and a results file changed without regenerating the docs
    page.write_text(text)
    data = copy / "results/vae-ablation.json"
    data.write_text(data.read_text().replace("0.910", "0.911"))
    assert tool.tables(check=True, root=copy) == ["docs/results.md: results/vae-ablation.json"]


def test_the_readme_run_times_follow_every_timed_run(tmp_path):
    """The README's ranges are derived from results/timed-runs.json: a new, slower run widens
    them; one with other work beside it, or a command not summarised, leaves them alone."""
    tool = results_tool()
    copy = copy_of_the_docs(tmp_path / "project")
    timed_file = copy / "results/timed-runs.json"
    timed = json.loads(timed_file.read_text())
    quickstart = ["2026-12-04", "abc1234", "`make quickstart`", "59 min 1 s", "", "AMD EPYC, otherwise idle"]
    for row, readme_changes in (
        ([*quickstart[:5], "AMD EPYC, a test run beside it"], False),
        ([*quickstart[:2], "`make dream`", *quickstart[3:]], False),
        (quickstart, True),
    ):
        timed_file.write_text(json.dumps({**timed, "rows": [*timed["rows"], row]}))
        stale = tool.tables(check=True, root=copy)
        assert ("README.md: results/run-times.json" in stale) is readme_changes, row
    tool.tables(check=False, root=copy)
    readme_row = next(
        line
        for line in (copy / "README.md").read_text().splitlines()
        if line.startswith("| `make quickstart` |")
    )
    assert "to 59 min 1 s |" in readme_row and "59 min 1 s; Intel Xeon" in readme_row  # its machine's slowest


def test_every_results_file_says_where_its_figures_come_from():
    for path in sorted((PROJECT_ROOT / "results").glob("*.json")):
        text = path.read_text()
        for field in ('"commit"', '"machine"', '"command"'):
            assert field in text, f"{path.name} has no {field}"
        assert '"measured"' in text or '"date"' in text, f"{path.name} has no date"


def test_a_run_measured_elsewhere_says_where_under_the_table():
    """A row added later on another machine or commit must not borrow the file's provenance."""
    tool = results_tool()
    xeon = {"cpu": "Intel Xeon", "cores": 2}
    results = {
        "commit": {"commit": "321ab2e" + "0" * 33, "dirty": False},
        "machine": xeon,
        "runs": [
            {"row": "original", "seed": 0, "date": "2026-12-02T10:00:00"},
            {"row": "four-frames", "seed": 0, "date": "2026-12-03T02:00:00",
             "commit": {"commit": "d3115a7" + "0" * 33, "dirty": True}, "machine": {"cpu": "AMD EPYC", "cores": 2}},
        ],
    }  # fmt: skip
    line = tool.provenance_line(results)
    assert "commit 321ab2e; Intel Xeon, 2 cores" in line
    assert "four-frames seed 0: commit d3115a7 (uncommitted changes), AMD EPYC, 2 cores" in line
    assert "measured 2026-12-02 to 2026-12-03" in line
    del results["runs"][1]["commit"], results["runs"][1]["machine"]
    assert "AMD" not in tool.provenance_line(results)
    # two hosts of one CPU name: the family and model, when recorded, tell them apart
    results["machine"] = {**xeon, "cpu_id": "family 6 model 143 stepping 8"}
    assert "Intel Xeon (family 6 model 143 stepping 8), 2 cores" in tool.provenance_line(results)


def test_a_dvc_experiments_settings_do_not_read_as_uncommitted_code(tmp_path):
    """A DVC experiment writes its -S values into params.yaml and dvc.lock; only a change to
    anything else makes a result's commit read "(uncommitted changes)"."""
    from arcadedreamer import provenance

    def git(*args):
        sh("git", *args, cwd=tmp_path)

    git("init", "-q")
    (tmp_path / "src").mkdir()
    for name in ("params.yaml", "dvc.lock", "src/model.py"):
        (tmp_path / name).write_text("a: 1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    for name in ("params.yaml", "dvc.lock"):
        (tmp_path / name).write_text("a: 2\n")
    git("add", "params.yaml")  # staged, as dvc exp run leaves it
    state = provenance.git_state(tmp_path / "src")
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "src/model.py").write_text("a: 2\n")
    assert provenance.git_state(tmp_path / "src")["dirty"] is True
    assert provenance.git_state(tmp_path / "nowhere")["commit"] == "unknown"


def test_the_readme_is_the_front_door():
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    first = "\n".join(lines[:60])
    for needed in ("make quickstart", "make test", "results/run-times.json", "make ui", "outputs/dream_"):
        assert needed in first, f"the README's first 60 lines do not show {needed!r}"


@pytest.mark.parametrize("path", DOCS + EXTRA, ids=lambda p: p.name)
def test_no_sentence_needs_the_projects_history(path):
    text = path.read_text()
    for pattern in (
        r"before this change",
        r"\bIssue \d+",
        r"\bsession \d",
        r"\b(review|work|this) round \d",  # the agent's rounds of real play are a concept, not history
        r"cause (was )?not found",
    ):
        assert not re.search(pattern, text, re.I), f"{path.name}: {pattern!r}"


@pytest.mark.parametrize("path", DOCS + EXTRA, ids=lambda p: p.name)
def test_relative_links_lead_to_files(path):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"


def test_a_rows_seeds_are_reported_as_mean_and_standard_deviation():
    """`tools/results.py report`'s table: one line per row, each score the mean ± sample standard
    deviation over its seeds, minutes over the timed seeds only (a cached one has none)."""
    runs = [
        {"row": "recipe", "seed": 0, "scores": {"ball_recall_h50_model": 0.40}, "wall_seconds": None},
        {"row": "recipe", "seed": 1, "scores": {"ball_recall_h50_model": 0.60}, "wall_seconds": 600},
        {"row": "variant", "seed": 0, "scores": {"ball_recall_h50_model": 0.30}, "wall_seconds": 120},
    ]
    head, _, recipe, variant = (
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in results_tool().table({"runs": runs}).splitlines()
    )
    assert recipe[:2] == ["`recipe`", "2"] and variant[:2] == ["`variant`", "1"]
    assert recipe[head.index("h50")] == "0.50 ± 0.14"  # sd of 0.4, 0.6 over n - 1
    assert variant[head.index("h50")] == "0.30"  # one seed: no spread to give
    assert recipe[-1] == "10.0" and variant[-1] == "2.0"


def test_the_training_curve_draws_every_schedule_of_every_file(tmp_path):
    """`report --training-curve`: one pair of lines (10 and 50 steps on) per results file and per
    schedule in it, however many there are; none dropped for want of a colour."""

    def schedule(curve, recall):
        return [
            {"row": f"epoch {epoch}, {curve}", "seed": 0, "curve": curve, "wall_seconds": 60.0 * epoch,
             "scores": {"ball_recall_h10_model": recall + 0.3, "ball_recall_h50_model": recall}}
            for epoch in (1, 2)
        ]  # fmt: skip

    many = {"runs": [run for n in range(7) for run in schedule(f"schedule {n}", 0.1 * n)]}
    one = {"runs": schedule(None, 0.2)}
    figure = tmp_path / "curve.png"
    labels = results_tool().training_curve([("many", many), ("one", one)], figure)
    drawn = [label for label in labels if label.endswith("steps on")]
    assert len(drawn) == 2 * (7 + 1)
    assert "many, schedule 6: 50 steps on" in drawn and "one: 10 steps on" in drawn
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_timed_by_two_clocks_is_refused(tmp_path):
    """`record --seconds S --dynamics-seconds`: which time is the run's? Refused before anything is
    read or written, rather than one silently winning."""
    import subprocess
    import sys

    target = tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools/results.py"), "record", str(target), "--row", "r", "--seed", "0",
         "--seconds", "60", "--dynamics-seconds"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
    assert not target.exists()


def test_a_target_line_follows_the_row_it_names(tmp_path):
    """The targets table is derived from the runs of the row each line names: its mean ± sd over
    the seeds, "met" only when the mean is on the asked side of the bound, and a row that is not
    in its file refused rather than read as nothing."""
    runs = [
        {
            "row": "recipe",
            "seed": seed,
            "scores": {"ball_recall_h50_model": recall, "false_ball_rate_h50_model": false},
        }
        for seed, (recall, false) in enumerate([(0.40, 0.10), (0.60, 0.20), (0.56, 0.12)])
    ]
    (tmp_path / "runs.json").write_text(json.dumps({"runs": runs}))

    def target(key, **bound):
        return {"target": key, "file": "runs.json", "row": "recipe", "key": key, **bound}

    recall, false, strict = results_tool().target_rows(
        [target("ball_recall_h50_model", at_least=0.5), target("false_ball_rate_h50_model", at_most=0.15),
         target("ball_recall_h50_model", at_least=0.53)],
        tmp_path,
    )  # fmt: skip
    assert recall[1:4] == ["≥ 0.5", "0.52 ± 0.11 (3 seeds)", "met"]
    assert false[1:4] == ["≤ 0.15", "0.14 ± 0.05 (3 seeds)", "met"]
    assert strict[3] == "**not met**"  # 0.52 against 0.53
    with pytest.raises(ValueError, match="has no score 'ball_recall_h50'"):
        results_tool().target_rows([target("ball_recall_h50", at_least=0.5)], tmp_path)
    with pytest.raises(ValueError, match="no row 'recipes'"):
        results_tool().target_rows(
            [{**target("ball_recall_h50_model", at_least=0.5), "row": "recipes"}], tmp_path
        )
