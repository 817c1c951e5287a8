"""Convolutional VAE over stacks of 4 grayscale 64×64 frames, with the original's layer list.

Beyond the layers: a mean-frame prior at the decoder, LeakyReLUs, a small initial posterior σ,
and standardised input; the measurements behind each are in docs/design.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arcadedreamer.data.dataset import gather_stacks
from arcadedreamer.data.preprocessing import stack_start_indices

INITIAL_LOGVAR = -6.0  # posterior σ 0.05 at the start
SCALE_FLOOR = 0.02  # added to each pixel's std before dividing by it (5 gray levels)
MAX_SURPRISE = 20.0  # a pixel's surprise (deviation in its own stds) counts up to this
# the posterior's log-variance is capped here: a frame far outside the training spread (standardised
# input up to 1 / SCALE_FLOOR = 50 on pixels that never moved) once pushed it to ~60 and the KL's
# exp(logvar) overflowed the gradient (Pong). exp(20) is finite and far above any σ a trained
# posterior uses (Breakout's lie in [-15.8, -0.3]); a tighter range [-20, 4] cost Breakout's ball
MAX_LOGVAR = 20.0


class Encoder(nn.Module):
    def __init__(self, in_channels: int = 4, latent_dim: int = 64):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),  # 32×32
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),  # 16×16
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),  # 8×8
            nn.Conv2d(128, 256, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),  # 4×4
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(256 * 4 * 4, 512), nn.LeakyReLU(0.01))
        self.fc_mu = nn.Linear(512, latent_dim)
        self.fc_logvar = nn.Linear(512, latent_dim)
        nn.init.constant_(self.fc_logvar.bias, INITIAL_LOGVAR)
        # input standardisation (identity until set): each pixel minus its training mean, over its std
        self.register_buffer("input_shift", torch.zeros(1, 64, 64))
        self.register_buffer("input_scale", torch.ones(1, 64, 64))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames: (B, 4, 64, 64) in [0, 1] → mu, logvar: (B, latent_dim)."""
        hidden = self.fc(self.convs((frames - self.input_shift) / self.input_scale))
        return self.fc_mu(hidden), self.fc_logvar(hidden).clamp(max=MAX_LOGVAR)


class Decoder(nn.Module):
    def __init__(self, out_channels: int = 4, latent_dim: int = 64):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 512), nn.LeakyReLU(0.01), nn.Linear(512, 256 * 4 * 4), nn.LeakyReLU(0.01)
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),  # 8×8
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),  # 16×16
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),  # 32×32
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),  # 64×64
        )
        nn.init.zeros_(self.deconvs[-1].bias)
        # logit of the training set's mean frame, added before the sigmoid (0 → 0.5 gray until set)
        self.register_buffer("mean_frame_logit", torch.zeros(out_channels, 64, 64))

    def logits(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (B, latent_dim) → pixel logits: (B, 4, 64, 64)."""
        hidden = self.fc(latents).view(-1, 256, 4, 4)
        return self.deconvs(hidden) + self.mean_frame_logit

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (B, latent_dim) → frames: (B, 4, 64, 64) in [0, 1]."""
        return torch.sigmoid(self.logits(latents))


class VAE(nn.Module):
    def __init__(self, stack_size: int = 4, latent_dim: int = 64):
        super().__init__()
        self.stack_size, self.latent_dim = stack_size, latent_dim
        self.encoder = Encoder(stack_size, latent_dim)
        self.decoder = Decoder(stack_size, latent_dim)
        # each pixel's training mean and spread (std + SCALE_FLOOR): what "surprising" means
        self.register_buffer("pixel_mean", torch.zeros(1, 64, 64))
        self.register_buffer("pixel_scale", torch.ones(1, 64, 64))

    def forward(self, frames: torch.Tensor, generator: torch.Generator | None = None):
        """frames: (B, 4, 64, 64) → reconstruction logits (B, 4, 64, 64), mu, logvar (B, latent_dim)."""
        mu, logvar = self.encoder(frames)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        latents = mu + noise * torch.exp(0.5 * logvar)
        return self.decoder.logits(latents), mu, logvar

    @torch.no_grad()
    def set_frame_statistics(
        self, mean_frame: torch.Tensor, std_frame: torch.Tensor | None = None, standardise_input: bool = False
    ) -> None:
        """The training frames' mean and std, (64, 64) each in [0, 1]: the decoder's prior is the
        mean frame; with `standardise_input` the encoder sees every pixel as its deviation from
        the mean in units of its own spread, so a one-pixel ball on a court it rarely crosses
        stands out."""
        logit = torch.logit(mean_frame.float().clamp(1e-3, 1 - 1e-3))
        self.decoder.mean_frame_logit.copy_(logit.expand_as(self.decoder.mean_frame_logit))
        std_frame = torch.zeros_like(mean_frame) if std_frame is None else std_frame
        self.pixel_mean.copy_(mean_frame.float()[None])
        self.pixel_scale.copy_(std_frame.float()[None] + SCALE_FLOOR)
        if standardise_input:
            self.encoder.input_shift.copy_(self.pixel_mean)
            self.encoder.input_scale.copy_(self.pixel_scale)

    def surprise_weights(self, frames: torch.Tensor, strength: float) -> torch.Tensor | None:
        """Per-pixel loss weights 1 + strength × (the pixel's deviation from its training mean, in
        its own stds): the ball, rare on any pixel of the court, weighs most. None for strength 0."""
        if strength == 0:
            return None
        surprise = ((frames - self.pixel_mean).abs() / self.pixel_scale).clamp(max=MAX_SURPRISE)
        return 1 + strength * surprise

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the deterministic latent the dynamics model works on."""
        return self.encoder(frames)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    @torch.no_grad()
    def encode_recording(
        self, frames: torch.Tensor, episode_ends: np.ndarray, batch_size: int = 512
    ) -> torch.Tensor:
        """frames (N, 64, 64) uint8 of recorded episodes → latents (N, D): the posterior mean of
        the stack ending at each frame, 0 where no full stack ends (an episode's first frames).

        Why here: training, the dream's contexts and the event scores all start from it.
        """
        latents = torch.zeros(len(frames), self.latent_dim, device=frames.device)
        valid = torch.from_numpy(stack_start_indices(np.asarray(episode_ends), self.stack_size))
        for index in valid.to(frames.device).split(batch_size):
            latents[index] = self.encode(gather_stacks(frames, index, self.stack_size)).float()
        return latents

    def compute_loss(
        self,
        frames: torch.Tensor,
        beta: float,
        loss: str = "sse",
        surprise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        weights = self.surprise_weights(frames, surprise)
        return vae_loss(frames, *self(frames, generator), beta=beta, loss=loss, weights=weights)


def vae_loss(
    frames: torch.Tensor,
    logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float,
    loss: str = "sse",
    weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """ELBO with both terms summed per sample: the reconstruction term over all pixels +
    beta·KL over latent dims. frames (B, 4, 64, 64) in [0, 1], logits the decoder's.

    `sse` (the original's): squared error of sigmoid(logits), a Gaussian log-likelihood.
    `bce`: binary cross-entropy on the logits, a Bernoulli (continuous) log-likelihood. Why
    it keeps the ball: on a black court the sigmoid sits at ~0.001, where its slope is 0.001,
    so under `sse` a missing ball's error reaches the logits 1000x weakened and is never
    learned; the cross-entropy's gradient on the logits is (output - target), unweakened.
    Why summed, not averaged: Atari frames are nearly static, so a pixel-*mean* loss is tiny
    next to beta·KL summed over 64 dims, and the VAE collapses to the mean frame. `weights`
    (per pixel, e.g. `VAE.surprise_weights`) scale each pixel's term. `mse` (per pixel,
    unweighted) is reported for logging and PSNR.
    """
    batch = frames.shape[0]
    recon = reconstruction_loss(frames, logits, loss, weights).sum() / batch
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / batch
    return {
        "loss": recon + beta * kl,
        "loss_recon": recon,
        "loss_kl": kl,
        "mse": (torch.sigmoid(logits.float()) - frames.float()).pow(2).mean(),
    }


def reconstruction_loss(
    frames: torch.Tensor, logits: torch.Tensor, loss: str = "sse", weights: torch.Tensor | None = None
) -> torch.Tensor:
    """frames (B, …) in [0, 1], the decoder's logits for them → (B,) each sample's reconstruction
    term summed over its pixels (`vae_loss` says why bce, why summed), each pixel × `weights`."""
    logits, frames = logits.float(), frames.float()
    if loss == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, frames, reduction="none")
    else:
        per_pixel = (torch.sigmoid(logits) - frames).pow(2)
    if weights is not None:
        per_pixel = per_pixel * weights
    return per_pixel.flatten(1).sum(dim=1)
