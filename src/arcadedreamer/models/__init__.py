"""The world model: a VAE over frame stacks and a GRU over its latents."""
