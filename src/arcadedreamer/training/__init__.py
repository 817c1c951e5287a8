"""Training loops for the VAE and the dynamics model, and their checkpoints."""
