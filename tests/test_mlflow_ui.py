"""The MLflow UI as a user opens it (`make ui`, in a real headless Chromium driven by Playwright),
the lineage from the @champion back to its data and commit through MLflow's API alone, and a
copied project folder that must not write into the original's store."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from arcadedreamer import provenance, tracking
from conftest import CLI, free_port, run_cli, tiny_params_dict, write_params

GAME = "BreakoutNoFrameskip-v4"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make test` installs it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def project(trained, tmp_path_factory):
    """A project of its own (own MLflow store) on the trained fixture's recordings: the VAE, the
    dynamics and the evaluation run through the CLI, as `dvc repro` runs them, in one pipeline."""
    root = tmp_path_factory.mktemp("ui-project")
    raw = tiny_params_dict(root, [GAME])
    raw["data"]["out_dir"] = str(trained.root / "data/collected")
    raw["heldout"]["out_dir"] = str(trained.root / "data/heldout")
    params = write_params(root, raw)
    env = {"ARCADEDREAMER_PIPELINE_ID": "ui-test-pipeline"}
    for command in (["train", "--stage", "vae"], ["train", "--stage", "dynamics"], ["evaluate"]):
        done = run_cli(*command, "--params", str(params), cwd=root, env=env)
        assert done.returncode == 0, done.stderr
    return root, params


def client(root: Path) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.MlflowClient()


def test_the_champion_leads_back_to_its_data_commit_and_pipeline_through_mlflow_alone(project):
    root, _ = project
    mlflow_client = client(root)
    champion = mlflow_client.get_model_version_by_alias(tracking.DYNAMICS_MODEL, "champion")
    assert champion.description.startswith("Dynamics (GRU 32), 1 epochs on the latents of VAE")
    commit = provenance.git_state()["commit"]
    assert champion.tags["git_commit"] == commit and champion.tags["pipeline_id"] == "ui-test-pipeline"
    data_hash = champion.tags["data_hash"]
    # the run that trained it: MLflow's own commit tag, its data as a dataset input, its parent
    run = mlflow_client.get_run(champion.run_id)
    assert run.data.tags["mlflow.source.git.commit"] == commit
    # and the machine, down to what makes two hosts of one CPU name give other numbers
    assert run.data.tags["machine.torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert re.fullmatch(r"family \d+ model \d+ stepping \d+", run.data.tags["machine.cpu_id"])
    manifest = yaml.safe_load((Path(run.data.params["data.out_dir"]) / GAME / "manifest.json").read_text())
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [manifest["content_hash"][:32]]
    parent = mlflow_client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["kind"] == "pipeline" and parent.info.run_name == "ui-test-pipeline"
    # the VAE it was built on, by its registered version
    vae_uri = run.data.tags["vae.model_uri"]
    vae_version = mlflow_client.get_model_version(tracking.VAE_MODEL, vae_uri.rsplit("/", 1)[1])
    assert vae_version.tags["data_hash"] == data_hash
    vae_run = mlflow_client.get_run(vae_version.run_id)
    assert vae_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # the evaluation that promoted it names what it scored and what it did
    evaluation = mlflow_client.get_run(champion.tags["eval.run_id"])
    assert evaluation.data.tags["scored.model_uri"] == f"models:/{tracking.DYNAMICS_MODEL}/{champion.version}"
    assert evaluation.data.tags["promotion.promoted"] == "True"
    assert {d.dataset.name for d in evaluation.inputs.dataset_inputs} == {f"{GAME} (evaluation)"}
    # version tags say where it came from; the scores stay metrics of the runs
    assert not any(key.startswith(("val_", "train_", "lr")) for key in champion.tags)


@pytest.fixture(scope="module")
def ui(project):
    """`arcadedreamer ui`, as `make ui` starts it, on a free port: its printed address."""
    root, params = project
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [*CLI, "ui", "--port", str(port), "--params", str(params)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    address = proc.stdout.readline().removeprefix("MLflow UI: ").strip()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            assert proc.poll() is None, "the UI stopped"
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the MLflow UI did not answer within 120 s")
    yield address
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), "Chromium is missing: `make test` installs Debian's chromium package"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def test_the_ui_opens_on_the_training_runs(ui, browser):
    assert ui.endswith("/runs?workflowType=machine_learning")
    page = browser.new_page()
    page.goto(ui)
    page.get_by_text("ui-test-pipeline").first.wait_for(timeout=90_000)  # the pipeline's parent run
    text = page.inner_text("body")
    assert "matching runs" in text
    assert "Model training" in text  # the mode the address asks for
    page.close()


def test_a_runs_reconstruction_image_shows(project, ui, browser):
    root, _ = project
    vae_run = client(root).search_runs(["1"], "tags.stage = 'vae'")[0]
    page = browser.new_page()
    page.goto(ui.split("/runs?")[0] + f"/runs/{vae_run.info.run_id}/artifacts")
    page.get_by_text("images", exact=True).click()
    page.locator("text=/^reconstructions.*step\\+1.*\\.png$/").first.click()
    image = page.locator("img[src^='blob:']").first
    image.wait_for(timeout=60_000)
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0, "the grid was loaded and decoded"
    page.close()


def test_a_registered_version_shows_its_champion_alias_and_signature(ui, browser):
    page = browser.new_page()
    page.goto(ui.split("#")[0] + f"#/models/{tracking.DYNAMICS_MODEL}/versions/1")
    page.get_by_text("champion").first.wait_for(timeout=60_000)
    page.get_by_text("Inputs (1)").first.click()
    page.get_by_text("shape: [-1,-1,4,64,64]").wait_for(timeout=30_000)
    assert "Dynamics (GRU 32)" in page.inner_text("body"), "its description"
    page.close()


def test_a_copied_project_never_writes_into_the_original(project, tmp_path):
    """`cp -a` of a project keeps the original's absolute artifact location in its mlflow.db:
    the copy refuses, in one line naming both places, before any run starts."""
    root, _ = project
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    raw = yaml.safe_load((copy / "params.yaml").read_text())
    raw["tracking"]["uri"] = f"sqlite:///{copy / 'mlflow.db'}"
    raw["training"]["checkpoint_dir"] = str(copy / "checkpoints")
    raw["dream"]["out_dir"] = str(copy / "outputs")
    params = write_params(copy, raw)
    before = sorted(p.relative_to(root) for p in (root / "mlruns").rglob("*"))
    model = copy / "checkpoints/dynamics/dynamics_epoch_1.pt"
    result = run_cli("dream", "--model", str(model), "--steps", "3", "--params", str(params), cwd=copy)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert line.count("\n") == 0 and "this project folder was copied or moved" in line
    assert str(root / "mlruns") in line and str(copy / "mlruns") in line
    assert sorted(p.relative_to(root) for p in (root / "mlruns").rglob("*")) == before
