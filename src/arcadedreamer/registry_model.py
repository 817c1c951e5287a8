"""MLflow "model from code" for registered ArcadeDreamer versions.

MLflow runs this file when a version is loaded with `mlflow.pyfunc.load_model`. It unpickles
nothing: the checkpoint artifact is read with `torch.load(weights_only=True)`.
`predict` takes frame stacks (B, 4, 64, 64) in [0, 1] and returns their reconstructions
through the version's VAE. The project itself loads versions with
`arcadedreamer.training.checkpoints.load_world_model` on the downloaded checkpoint.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class ArcadeDreamerModel(PythonModel):
    def load_context(self, context):
        from arcadedreamer.training.checkpoints import load_checkpoint, vae_from_checkpoint

        checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        self.vae = vae_from_checkpoint(checkpoint).eval()

    def predict(self, context, model_input, params=None):
        stacks = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.vae.decode(self.vae.encode(stacks)).numpy()


mlflow.models.set_model(ArcadeDreamerModel())
