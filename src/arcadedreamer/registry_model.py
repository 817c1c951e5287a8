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
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


def bad_request(message: str) -> MlflowException:
    """A one-line HTTP 400 answer (MlflowException carries no stack trace to the client)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class ArcadeDreamerModel(PythonModel):
    def load_context(self, context):
        from arcadedreamer.models.checkpoints import (
            load_checkpoint,
            vae_from_checkpoint,
            world_model_from_checkpoint,
        )

        checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        self.stage = checkpoint["stage"]
        if self.stage == "controller":
            from arcadedreamer.models.checkpoints import load_controller
            from arcadedreamer.models.controller import Agent

            controller, world_model, checkpoint = load_controller(context.artifacts["checkpoint"])
            self.agent = Agent.from_checkpoint(controller, world_model, checkpoint)
            return
        self.vae = vae_from_checkpoint(checkpoint).eval()
        self.world = world_model_from_checkpoint(checkpoint) if self.stage == "dynamics" else None

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        frames = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        if self.stage == "controller":
            return self._act(frames)
        if self.world is None:
            if frames.dim() != 4 or tuple(frames.shape[1:]) != (4, 64, 64):
                raise bad_request(f"expected frame stacks of shape (B, 4, 64, 64), got {tuple(frames.shape)}")
            with torch.no_grad():
                return self.vae.decode(self.vae.encode(frames)).numpy()
        return self._imagine(frames, (params or {}).get("actions"))

    def _act(self, stacks: torch.Tensor) -> np.ndarray:
        if stacks.dim() != 5 or tuple(stacks.shape[2:]) != (4, 64, 64):
            raise bad_request(
                f"expected episodes of frame stacks (B, T, 4, 64, 64), got {tuple(stacks.shape)}"
            )
        self.agent.reset()
        actions = [self.agent.act(stacks[:, t]) for t in range(stacks.shape[1])]
        return torch.stack(actions, dim=1).numpy()

    def _imagine(self, stacks: torch.Tensor, actions) -> np.ndarray:
        if stacks.dim() != 5 or tuple(stacks.shape[2:]) != (4, 64, 64):
            raise bad_request(
                f"expected context stacks of shape (B, C, 4, 64, 64), got {tuple(stacks.shape)}"
            )
        context = stacks.shape[1]
        actions = np.asarray(actions if actions is not None else [], dtype=np.int64).reshape(-1)
        steps = len(actions) - (context - 1)
        if steps < 1 or actions.min() < 0 or actions.max() > 17:
            raise bad_request(
                f"params.actions: give {context - 1} ALE action ids (0-17) between the {context} context "
                f"stacks, then one per step to imagine; got {len(actions)}"
            )
        batch = stacks.shape[0]
        all_actions = torch.from_numpy(actions)[None].expand(batch, -1)
        with torch.no_grad():
            latents = self.world.encode(stacks.reshape(batch * context, 4, 64, 64)).reshape(
                batch, context, -1
            )
            imagined = self.world.imagine(
                latents, all_actions[:, : context - 1], all_actions[:, context - 1 :]
            )
            frames = self.world.decode(imagined.reshape(batch * steps, -1))[:, -1]
        return frames.reshape(batch, steps, 64, 64).numpy()


mlflow.models.set_model(ArcadeDreamerModel())
