"""ArcadeDreamer: a VAE + GRU world model of Atari games."""

import os

# MLflow 3 reports usage to mlflow-telemetry.io from every process that imports it, and keeps an
# installation id in ~/.config/mlflow. This project's runs stay on this machine (as .dvc/config
# turns DVC's analytics off); MLFLOW_DISABLE_TELEMETRY=false in the environment opts back in.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
