"""ArcadeDreamer: a VAE + GRU world model of Atari games."""

__version__ = "0.1.0"
