"""Scoring the world model: image metrics, open-loop rollouts, baselines and promotion."""
