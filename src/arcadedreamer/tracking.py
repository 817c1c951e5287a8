"""Every MLflow call of the project lives here, so the rest stays testable without a server.

Runs: one per stage, in experiment `tracking.experiment`, tagged with the stage, the git
commit and a pipeline id shared by the stages of one pipeline run. Models: each training
stage registers a version (`arcadedreamer-vae`, `arcadedreamer-dynamics`; a dynamics version
holds the VAE it was trained on, so it is the whole world model). The version's artifact is
the project's own checkpoint, loaded with `torch.load(weights_only=True)` — no pickled code —
and wrapped as a pyfunc "model from code" so the MLflow UI and `mlflow.pyfunc` see it too.
`models:/NAME@latest` resolves to the newest version (MLflow reserves that alias name);
evaluation sets `@champion`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from arcadedreamer import interrupts, provenance
from arcadedreamer.config import Params
from arcadedreamer.errors import UserError

T = TypeVar("T")
VAE_MODEL = "arcadedreamer-vae"
DYNAMICS_MODEL = "arcadedreamer-dynamics"
CONTROLLER_MODEL = "arcadedreamer-controller"
AGENT_MODEL = "arcadedreamer-agent"
ARTIFACT_NAMES = {
    VAE_MODEL: "vae",
    DYNAMICS_MODEL: "world_model",
    CONTROLLER_MODEL: "controller",
    AGENT_MODEL: "agent",
}
_REGISTRY_CODE = Path(__file__).with_name("registry_model.py")


def _mlflow():
    warnings.filterwarnings("ignore", module="mlflow")
    import mlflow

    # system metrics are logged to each run; their start/stop INFO lines are not news
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables"
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


# mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ, so the user's override
# is read once, before any of our calls can have set it.
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(params: Params) -> str:
    return _USER_TRACKING_URI or params.tracking.uri


HTTP_TIMEOUT_S = "10"  # per request to a tracking server, unless the user set MLflow's own variable
HTTP_RETRIES = "2"
_CURRENT_URI: str | None = None


class TrackingError(UserError):
    """The tracking store failed; the stage's own files (checkpoints, GIFs, metrics) are kept."""


def redact(uri: str | None) -> str:
    """A URI without the user:password part, for messages and logged params."""
    if not uri:
        return str(uri)
    return re.sub(r"(?<=://)[^/@]*@", "***@", uri)


def _tracking_failure(exc: Exception) -> TrackingError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if "UNAUTHENTICATED" in first or "401" in first:
        return TrackingError(
            f"the MLflow server at {redact(_CURRENT_URI)} refused the credentials; set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD to your account's (never in the URI)"
        )
    if "PERMISSION_DENIED" in first or "403" in first:
        return TrackingError(
            f"the MLflow server at {redact(_CURRENT_URI)} denied this to your account ({redact(first)}); "
            "ask an admin for the permission"
        )
    return TrackingError(
        f"MLflow tracking at {redact(_CURRENT_URI)} failed ({redact(first)}); the stage's own output files are "
        "kept; fix the store (or point MLFLOW_TRACKING_URI elsewhere) and run again"
    )


def with_retry(fn: Callable[[], T], attempts: int = 8, delay: float = 0.25) -> T:
    """SQLite answers "database is locked" while another stage writes; wait and try again.
    Any other failure of the store becomes one line (TrackingError), not a traceback."""
    for attempt in range(attempts):
        try:
            with interrupts.deferred():
                return fn()
        except UserError:
            raise
        except Exception as exc:  # mlflow wraps sqlalchemy's OperationalError in its own types
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise _tracking_failure(exc) from None
            time.sleep(delay * (2**attempt))
    raise AssertionError("unreachable")


def check_store(uri: str) -> None:
    """Fail fast, in one line, on a store MLflow would retry for minutes or trace back on."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if path.is_dir():
            raise UserError(f"tracking: {path} is a directory, not an MLflow SQLite database; move it away")
        if path.exists():
            with open(path, "rb") as handle:
                header = handle.read(16)
            if header and header != b"SQLite format 3\x00":
                raise UserError(
                    f"tracking: {path} is not an SQLite database (damaged or another file); "
                    "move it away to start a new one, or restore it"
                )
    elif uri.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        if urlsplit(uri).username:
            raise UserError(
                f"tracking: {redact(uri)} carries credentials; put them in MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD instead (a URI ends up in logs)"
            )
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
        parts = urlsplit(uri)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=5).close()
        except OSError as exc:
            raise UserError(
                f"tracking: the MLflow server {parts.scheme}://{parts.hostname}:{port} does not answer "
                f"({exc.strerror or exc}); start it (make server) or point MLFLOW_TRACKING_URI elsewhere"
            ) from None


def connect(params: Params) -> str:
    """Point MLflow at the configured store (checked first); enough to read the registry."""
    global _CURRENT_URI
    uri = tracking_uri(params)
    check_store(uri)
    _CURRENT_URI = uri
    _mlflow().set_tracking_uri(uri)
    return uri


def setup(params: Params) -> str:
    """Point MLflow at the configured store and make sure the experiment exists."""
    mlflow = _mlflow()
    uri = connect(params)
    name = params.tracking.experiment
    location = None
    if uri.startswith("sqlite:///"):
        # Artifacts beside the database (not in whatever folder a command ran from).
        db_dir = Path(uri.removeprefix("sqlite:///")).resolve().parent
        db_dir.mkdir(parents=True, exist_ok=True)
        location = (db_dir / "mlruns").as_uri()
    if with_retry(lambda: mlflow.get_experiment_by_name(name)) is None:
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except Exception as exc:  # created meanwhile by a stage running beside this one
            if not any(word in str(exc).lower() for word in ("already exists", "locked")):
                raise _tracking_failure(exc) from None
    experiment = with_retry(lambda: mlflow.set_experiment(name))
    if uri.startswith("sqlite:///"):
        check_artifacts_beside(experiment.artifact_location, db_dir)
    wanted = {
        # the UI opens this experiment on its training runs, not on its GenAI traces page
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": EXPERIMENT_DESCRIPTION,
    }
    client = mlflow.MlflowClient()
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            with_retry(lambda k=key, v=value: client.set_experiment_tag(experiment.experiment_id, k, v))
    return uri


EXPERIMENT_DESCRIPTION = (
    "ArcadeDreamer: a VAE + GRU world model of Atari games. Each pipeline run (dvc repro, make "
    "quickstart, a DVC experiment) is a parent run named after it; its stages (vae, dynamics, "
    "evaluate, dream, controller) are its children. Registered models: arcadedreamer-vae, "
    "arcadedreamer-dynamics (@champion: the best by evaluation.promote_on), arcadedreamer-controller."
)


def check_artifacts_beside(artifact_location: str, db_dir: Path) -> None:
    """The embedded store keeps its artifacts in mlruns/ beside mlflow.db. A project folder
    copied or moved keeps the old absolute location in its database, and its runs would write
    into (or read from) the other folder: refused, with both places named."""
    if not artifact_location.startswith("file://"):
        return
    location = Path(artifact_location.removeprefix("file://")).resolve()
    if location != (db_dir / "mlruns").resolve():
        raise UserError(
            f"tracking: {db_dir / 'mlflow.db'} keeps its artifacts in {location}, not beside it in "
            f"{db_dir / 'mlruns'}: this project folder was copied or moved; keep using the original, or "
            "move mlflow.db and mlruns/ aside to start a fresh store here"
        )


def git_commit() -> str:
    return str(provenance.git_state()["commit"])


def pipeline_id(params: Params) -> str:
    """`ARCADEDREAMER_PIPELINE_ID` when set (make repro sets one per run), else commit + params."""
    if env := os.environ.get("ARCADEDREAMER_PIPELINE_ID"):
        return env
    text = git_commit() + params.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ui_address(params: Params, host: str, port: int) -> tuple[str, str]:
    """(the store's URI, the UI's address of the experiment's runs in the model-training view):
    MLflow opens an experiment on its GenAI pages unless the address asks for the runs."""
    uri = setup(params)
    experiment = with_retry(lambda: _mlflow().get_experiment_by_name(params.tracking.experiment))
    try:
        address = ipaddress.ip_address(host)
        shown = "127.0.0.1" if address.is_unspecified else f"[{host}]" if address.version == 6 else host
    except ValueError:  # a host name
        shown = host
    return (
        uri,
        f"http://{shown}:{port}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning",
    )


def pipeline_name(params: Params) -> str:
    """What a pipeline run is called: its DVC experiment's name when DVC runs one, else its id."""
    return os.environ.get("DVC_EXP_NAME") or pipeline_id(params)


def provenance_tags() -> dict[str, str]:
    """The commit (as MLflow's own tag, so the UI's Source column shows it), whether the tree
    was dirty, the machine and the versions that decide the numbers."""
    git = provenance.git_state()
    dirty = {True: "true", False: "false"}.get(git["dirty"], "unknown")
    tags = {"mlflow.source.git.commit": str(git["commit"]), "git_dirty": dirty}
    tags |= {f"machine.{k}": str(v) for k, v in provenance.machine().items()}
    tags |= {f"version.{k}": v for k, v in provenance.versions().items()}
    return tags


def pipeline_parent(params: Params, experiment_id: str) -> str:
    """The parent run of this pipeline (one per pipeline id), created on its first stage."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    pid = pipeline_id(params).replace("'", "")
    found = with_retry(
        lambda: client.search_runs([experiment_id], f"tags.pipeline_id = '{pid}' and tags.kind = 'pipeline'")
    )
    if found:
        return found[0].info.run_id
    name = pipeline_name(params)
    tags = {
        "kind": "pipeline",
        "pipeline_id": pid,
        "mlflow.note.content": f"Pipeline run {name}: its stages are the runs nested under it.",
        **({"dvc.experiment": os.environ["DVC_EXP_NAME"]} if os.environ.get("DVC_EXP_NAME") else {}),
        **provenance_tags(),
    }
    run = with_retry(lambda: client.create_run(experiment_id, run_name=name, tags=tags))
    with_retry(lambda: client.set_terminated(run.info.run_id, status="FINISHED"))
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, params: Params, run_id: str | None = None, description: str = "") -> Iterator[str]:
    """One MLflow run for one stage, nested under its pipeline's run, with where it came from;
    FAILED on error, KILLED on Ctrl-C / SIGTERM."""
    mlflow = _mlflow()
    setup(params)
    close_abandoned_runs(params)
    experiment = with_retry(lambda: mlflow.get_experiment_by_name(params.tracking.experiment))
    tags = {
        "stage": stage,
        "pipeline_id": pipeline_id(params),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        **provenance_tags(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    if description:
        tags["mlflow.note.content"] = description
    if run_id is None:
        tags["mlflow.parentRunId"] = pipeline_parent(params, experiment.experiment_id)
    run = with_retry(
        lambda: mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else f"{stage} · {pipeline_name(params)}",
            tags=tags,
            log_system_metrics=True,
        )
    )
    if run_id is not None:
        set_tags({k: v for k, v in tags.items() if k != "stage"})  # a resumed run: this process's
    try:
        if run_id is None:
            flat = {k: str(v) for k, v in params.flat().items()}
            flat["tracking.uri"] = redact(flat["tracking.uri"])
            items = list(flat.items())
            for start in range(0, len(items), 90):
                with_retry(lambda chunk=dict(items[start : start + 90]): mlflow.log_params(chunk))
        yield run.info.run_id
    except KeyboardInterrupt:
        _end_run(run.info.run_id, "KILLED")
        raise
    except BaseException:
        _end_run(run.info.run_id, "FAILED")
        raise
    else:
        _end_run(run.info.run_id, "FINISHED")


def _end_run(run_id: str, status: str) -> None:
    """Why not retry `mlflow.end_run` alone: it takes the run off its stack before it writes the
    status, so a retry after "database is locked" writes nothing and the run stays RUNNING. The
    status is written by id (retried), then end_run closes the run and its system-metrics monitor."""
    mlflow = _mlflow()
    with interrupts.deferred():  # both, or a Ctrl-C between them leaves the run on MLflow's stack
        with_retry(lambda: mlflow.MlflowClient().set_terminated(run_id, status))
        with_retry(lambda: mlflow.end_run(status=status))


def log_datasets(directory: str | Path, games: list[str], hashes: dict[str, str], context: str) -> None:
    """Each game's recording as an MLflow dataset input of this run: its folder as the source,
    its content hash (the manifest's) as the digest, so the UI's Dataset column names the data."""
    mlflow = _mlflow()
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for game in games:
        source = resolve_dataset_source((Path(directory).resolve() / game).as_uri())
        dataset = MetaDataset(source, name=f"{game} ({context})", digest=hashes[game][:32])
        with_retry(lambda d=dataset: mlflow.log_input(d, context=context))


def model_uri_for_run(name: str, run_id: str | None) -> str | None:
    """`models:/NAME/N`: the version of `name` that run `run_id` registered, or None."""
    version = version_for_run(name, run_id)
    return f"models:/{name}/{version}" if version else None


def close_abandoned_runs(params: Params) -> list[str]:
    """Runs of this machine left RUNNING by a process that is gone (killed with SIGKILL, or by
    the machine's OOM killer: nothing could end them) are ended as KILLED; returns their ids."""
    mlflow = _mlflow()
    experiment = with_retry(lambda: mlflow.get_experiment_by_name(params.tracking.experiment))
    if experiment is None:
        return []
    host = socket.gethostname().replace("'", "")
    runs = with_retry(
        lambda: mlflow.MlflowClient().search_runs(
            [experiment.experiment_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'"
        )
    )
    closed = []
    for run in runs:
        pid = run.data.tags.get("pid", "")
        if pid.isdecimal() and not _alive(int(pid)):
            with_retry(lambda r=run: mlflow.MlflowClient().set_terminated(r.info.run_id, status="KILLED"))
            closed.append(run.info.run_id)
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow = _mlflow()
    clean = {k: float(v) for k, v in metrics.items() if np.isfinite(float(v))}
    with_retry(lambda: mlflow.log_metrics(clean, step=step))


def log_image(image: np.ndarray, key: str, step: int) -> None:
    """An image per step under one key: the UI shows them with a step slider."""
    with_retry(lambda: _mlflow().log_image(image, key=key, step=step))


def log_series(series: dict[str, list[float]]) -> None:
    """Curves over the open-loop horizon: each value logged at step = its horizon (1, 2, …),
    so MLflow's charts draw them against the horizon; NaN (nothing scored there) left out."""
    mlflow = _mlflow()
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(v), now, h)
        for key, values in series.items()
        for h, v in enumerate(values, start=1)
        if v is not None and np.isfinite(float(v))
    ]
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        with_retry(lambda chunk=metrics[start : start + 1000]: client.log_batch(run_id, metrics=chunk))


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    with_retry(lambda: _mlflow().log_artifact(str(path), artifact_path=artifact_path))


def log_dict(data: dict, artifact_file: str) -> None:
    with_retry(lambda: _mlflow().log_dict(data, artifact_file))


def active_run_id() -> str | None:
    run = _mlflow().active_run()
    return run.info.run_id if run else None


def set_tags(tags: dict[str, str]) -> None:
    with_retry(lambda: _mlflow().set_tags(tags))


def model_signature(name: str, context: int = 4):
    """What a registered version takes and returns (registry_model.py), with an input example."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    if name == VAE_MODEL:
        stacks = TensorSpec(np.dtype(np.float32), (-1, 4, 64, 64))
        signature = ModelSignature(inputs=Schema([stacks]), outputs=Schema([stacks]))
        return signature, np.zeros((1, 4, 64, 64), dtype=np.float32), None
    if name in (CONTROLLER_MODEL, AGENT_MODEL):  # an episode's frame stacks → the action taken from each
        stacks = TensorSpec(np.dtype(np.float32), (-1, -1, 4, 64, 64))
        actions = TensorSpec(np.dtype(np.int64), (-1, -1))
        signature = ModelSignature(inputs=Schema([stacks]), outputs=Schema([actions]))
        return signature, np.zeros((1, 3, 4, 64, 64), dtype=np.float32), None
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, 4, 64, 64))])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, 64, 64))])
    actions = [0] * (context - 1) + [1, 3, 3, 4]  # NOOPs between the context stacks; FIRE, RIGHT ×2, LEFT
    params = ParamSchema([ParamSpec("actions", "long", actions, (-1,))])
    example = np.zeros((1, context, 4, 64, 64), dtype=np.float32)
    return ModelSignature(inputs=inputs, outputs=outputs, params=params), example, {"actions": actions}


MODEL_DESCRIPTIONS = {
    VAE_MODEL: "The VAE: 4 stacked 64x64 grayscale frames <-> a 64-d latent. Input (B, 4, 64, 64) "
    "float32 in [0, 1]; output their reconstructions.",
    DYNAMICS_MODEL: "The world model (VAE + GRU dynamics): context frame stacks and actions -> imagined "
    "frames. @champion is the version evaluation ranks best (evaluation.promote_on).",
    CONTROLLER_MODEL: "The World Models controller trained in the dream: episodes of frame stacks -> "
    "the action it takes from each.",
    AGENT_MODEL: "The actor-critic trained in the dream (agent stage): episodes of frame stacks -> "
    "the action it takes from each.",
}


def register_checkpoint(
    name: str, checkpoint: str | Path, tags: dict[str, str], description: str = ""
) -> str:
    """Log `checkpoint` as this run's model and register it as a new version of `name`, with
    `tags` (lineage: pipeline, commit, data, the versions it was built from) and `description`.

    The artifact carries the package's code (`code_paths`), so it loads and serves wherever
    mlflow, torch and numpy are installed."""
    mlflow = _mlflow()
    import torch

    import arcadedreamer

    signature, example, example_params = model_signature(name)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        info = with_retry(
            lambda: mlflow.pyfunc.log_model(
                name=ARTIFACT_NAMES[name],
                python_model=str(_REGISTRY_CODE),
                artifacts={"checkpoint": str(checkpoint)},
                code_paths=[str(Path(arcadedreamer.__file__).parent)],
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    "numpy",
                    f"mlflow=={mlflow.__version__}",
                ],
                signature=signature,
                input_example=(example, example_params) if example_params else example,
            )
        )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        version = with_retry(lambda: mlflow.register_model(info.model_uri, name))
    client = mlflow.MlflowClient()
    run = mlflow.active_run()
    lineage = {
        "pipeline_id": run.data.tags.get("pipeline_id", "") if run else "",
        "git_commit": run.data.tags.get("mlflow.source.git.commit", "") if run else "",
        **tags,
    }
    for key, value in lineage.items():
        with_retry(lambda k=key, v=value: client.set_model_version_tag(name, version.version, k, str(v)))
    if description:
        with_retry(lambda: client.update_model_version(name, version.version, description=description))
    registered = with_retry(lambda: client.get_registered_model(name))
    if not registered.description:
        with_retry(lambda: client.update_registered_model(name, description=MODEL_DESCRIPTIONS[name]))
    return str(version.version)


def resolve_model_checkpoint(model_uri: str, params: Params) -> Path:
    """`models:/NAME@alias` (or `models:/NAME/3`) → the local path of its checkpoint file."""
    mlflow = _mlflow()
    connect(params)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except Exception as exc:  # mlflow raises its own exception types for unknown names/aliases
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, TrackingError):
            raise
        if any(word in first for word in ("UNAUTHENTICATED", "PERMISSION_DENIED", "401", "403")):
            raise _tracking_failure(exc) from None
        raise UserError(
            f"cannot load {model_uri} from {redact(tracking_uri(params))}: {redact(first)}; "
            f"{TRAIN_ADVICE.get(_model_name(model_uri), TRAIN_ADVICE[DYNAMICS_MODEL])}"
        ) from None
    found = sorted((local / "artifacts").glob("*.pt")) or sorted(local.rglob("*.pt"))
    if not found:
        raise UserError(f"{model_uri}: the registered version holds no checkpoint file")
    return found[0]


TRAIN_ADVICE = {  # what registers a version of each model
    VAE_MODEL: "train one with `arcadedreamer train --stage vae` (or `make quickstart`)",
    DYNAMICS_MODEL: "train one with `arcadedreamer train --stage dynamics` (or `make quickstart`)",
    CONTROLLER_MODEL: "train one with `arcadedreamer controller` (or `make quickstart`)",
    AGENT_MODEL: "train one with `arcadedreamer agent` (or `make agent`)",
}


def _model_name(model_uri: str) -> str:
    """`models:/NAME@alias` or `models:/NAME/3` → NAME."""
    return re.split(r"[@/]", model_uri.removeprefix("models:/"), maxsplit=1)[0]


def alias_version(name: str, alias: str) -> dict | None:
    """The version behind `alias` as {"version", "tags"}, or None when the alias (or the model)
    does not exist. A store that fails or refuses the request is an error, never "no alias"."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        version = with_retry(lambda: client.get_model_version_by_alias(name, alias))
    except TrackingError as exc:
        if _not_found(exc):
            return None
        raise
    return {"version": str(version.version), "tags": dict(version.tags)}


def _not_found(exc: Exception) -> bool:
    text = str(exc)
    return "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower()


def set_alias(name: str, alias: str, version: str) -> None:
    client = _mlflow().MlflowClient()
    with_retry(lambda: client.set_registered_model_alias(name, alias, version))


def set_version_tag(name: str, version: str, key: str, value: str) -> None:
    client = _mlflow().MlflowClient()
    with_retry(lambda: client.set_model_version_tag(name, version, key, value))


def latest_version(name: str) -> str | None:
    client = _mlflow().MlflowClient()
    try:
        versions = with_retry(lambda: client.search_model_versions(f"name='{name}'"))
    except TrackingError as exc:
        if _not_found(exc):
            return None
        raise
    return max((str(v.version) for v in versions), key=int, default=None)


def version_for_run(name: str, run_id: str | None) -> str | None:
    """The registered version of `name` that run `run_id` logged, if any."""
    if not run_id:
        return None
    client = _mlflow().MlflowClient()
    try:
        versions = with_retry(lambda: client.search_model_versions(f"name='{name}' and run_id='{run_id}'"))
    except TrackingError as exc:
        if _not_found(exc):
            return None
        raise
    return max((str(v.version) for v in versions), key=int, default=None)
