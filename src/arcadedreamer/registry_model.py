"""MLflow "model from code" for registered ArcadeDreamer versions.

MLflow runs this file when a version is loaded (`mlflow.pyfunc.load_model`, `mlflow models
serve`). It unpickles nothing: the checkpoint artifact is read with
`torch.load(weights_only=True)`, and the package's code travels with the artifact.

- `arcadedreamer-vae`: input `(B, 4, 64, 64)` float32 frame stacks in [0, 1] → their
  reconstructions, same shape.
- `arcadedreamer-dynamics` (the world model): input `(B, C, 4, 64, 64)` float32 context
  stacks, param `actions`: C-1 full-action ids taken between the context stacks, then one per
  step to imagine → `(B, T, 64, 64)` imagined frames in [0, 1].
- `arcadedreamer-controller`: input `(B, T, 4, 64, 64)` float32, the frame stacks of B episodes
  from their first frame → `(B, T)` the ALE action id the controller takes from each.
- `arcadedreamer-agent`: the same, for the actor-critic trained in the dream.
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from arcadedreamer.config import MAX_DREAM_STEPS

# What one request may ask for: the CLI's bound on a dream's steps, and a total the server can
# hold and send (each imagined or reconstructed frame is 16 KiB as float32, ~10x that as JSON).
MAX_STEPS = MAX_DREAM_STEPS  # imagined steps of one dream, as on the command line
MAX_FRAMES = 2_048  # frames answered per request: batch × steps (VAE: batch × 4)
MAX_CONTEXT = 64  # context stacks per dream


class BadRequest(MlflowException):
    """A one-line HTTP 400 answer sent as it is.

    MLflow's server rewrites an MlflowException's message into "Failed to predict data
    '<the whole input>'. Error: …", echoing a request of megabytes back; this message keeps
    the first value it is given, so the client reads the problem alone.
    """

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


def bad_request(message: str) -> BadRequest:
    return BadRequest(message)


def checked_frames(model_input, shape: str, dims: int) -> torch.Tensor:
    """The request's frames as float32 (…, 4, 64, 64) of `dims` dimensions, finite, in [0, 1]."""
    try:
        frames = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
    except (TypeError, ValueError):
        raise bad_request(f"inputs: expected numbers shaped {shape}") from None
    if frames.dim() != dims or tuple(frames.shape[-3:]) != (4, 64, 64):
        raise bad_request(f"inputs: expected {shape}, got {tuple(frames.shape)}")
    if frames.numel() and not torch.isfinite(frames).all():
        raise bad_request("inputs: every pixel must be a finite number in [0, 1] (found NaN or infinity)")
    if frames.numel() and (frames.min() < 0 or frames.max() > 1):
        raise bad_request("inputs: every pixel must lie in [0, 1] (gray levels / 255)")
    return frames


class ArcadeDreamerModel(PythonModel):
    def load_context(self, context):
        from arcadedreamer.models.checkpoints import (
            load_checkpoint,
            vae_from_checkpoint,
            world_model_from_checkpoint,
        )

        checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        self.stage = checkpoint["stage"]
        if self.stage in ("controller", "agent"):
            from arcadedreamer.models.checkpoints import load_player

            self.agent, _ = load_player(context.artifacts["checkpoint"])
            return
        self.vae = vae_from_checkpoint(checkpoint).eval()
        self.world = world_model_from_checkpoint(checkpoint) if self.stage == "dynamics" else None

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        if self.stage in ("controller", "agent"):
            return self._act(checked_frames(model_input, "episodes of frame stacks (B, T, 4, 64, 64)", 5))
        if self.world is None:
            frames = checked_frames(model_input, "frame stacks (B, 4, 64, 64)", 4)
            if len(frames) * 4 > MAX_FRAMES:
                raise bad_request(f"inputs: at most {MAX_FRAMES // 4} stacks a request, got {len(frames)}")
            with torch.no_grad():
                return self.vae.decode(self.vae.encode(frames)).numpy()
        frames = checked_frames(model_input, "context stacks (B, C, 4, 64, 64)", 5)
        return self._imagine(frames, (params or {}).get("actions"))

    def _act(self, stacks: torch.Tensor) -> np.ndarray:
        if stacks.shape[0] * stacks.shape[1] > MAX_FRAMES:
            raise bad_request(
                f"inputs: at most {MAX_FRAMES} frame stacks a request (batch × steps), got "
                f"{stacks.shape[0]} × {stacks.shape[1]}"
            )
        self.agent.reset()
        actions = [self.agent.act(stacks[:, t]) for t in range(stacks.shape[1])]
        return torch.stack(actions, dim=1).numpy()

    def _imagine(self, stacks: torch.Tensor, actions) -> np.ndarray:
        batch, context = stacks.shape[:2]
        if not 0 < context <= MAX_CONTEXT or batch == 0:
            raise bad_request(f"inputs: give 1…{MAX_CONTEXT} context stacks for at least one dream")
        actions = checked_actions(actions)
        steps = len(actions) - (context - 1)
        if steps < 1:
            raise bad_request(
                f"params.actions: give {context - 1} ALE action ids between the {context} context "
                f"stacks, then one per step to imagine; got {len(actions)} in all"
            )
        if steps > MAX_STEPS or batch * steps > MAX_FRAMES:
            raise bad_request(
                f"at most {MAX_STEPS} steps a dream and {MAX_FRAMES} imagined frames a request "
                f"(batch × steps); got {batch} × {steps}: split it into several requests"
            )
        all_actions = torch.from_numpy(actions)[None].expand(batch, -1)
        with torch.no_grad():
            latents = self.world.encode(stacks.reshape(batch * context, 4, 64, 64)).reshape(
                batch, context, -1
            )
            frames, _ = self.world.imagine_frames(
                latents, all_actions[:, : context - 1], all_actions[:, context - 1 :]
            )  # (B, steps, 64, 64): one frame an action, whatever the model's frames a step
        return frames.numpy()


def checked_actions(actions) -> np.ndarray:
    """params.actions as int64 ALE action ids, each a whole number in 0…17."""
    values = np.asarray(actions if actions is not None else [], dtype=object).reshape(-1)
    ids = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 17:
            raise bad_request(
                f"params.actions: each action is an ALE action id, a whole number in 0…17; got {str(value)[:20]!r}"
            )
        ids.append(int(value))
    if len(ids) > MAX_STEPS + MAX_CONTEXT:
        raise bad_request(f"params.actions: at most {MAX_STEPS + MAX_CONTEXT} actions, got {len(ids)}")
    return np.asarray(ids, dtype=np.int64)


mlflow.models.set_model(ArcadeDreamerModel())
