"""Shapes, overfitting, the loss reduction that avoids posterior collapse, scheduled sampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from arcadedreamer.data.preprocessing import NO_REWARD
from arcadedreamer.models.dynamics import (
    DecodedFrameLoss,
    Dynamics,
    decoded_steps,
    sampling_prob_at,
    scheduled_sampling_mask,
)
from arcadedreamer.models.vae import MAX_LOGVAR, VAE, vae_loss
from arcadedreamer.models.world_model import WorldModel


def squares(n: int, seed: int) -> torch.Tensor:
    """Stacks of 4 frames: a bright 8×8 square moving right on a dark screen, from one of
    28 starting cells (so held-out samples are new draws of states the training set covers)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.full((n, 4, 64, 64), 0.1)
    xs = torch.randint(0, 7, (n,), generator=g) * 8
    ys = torch.randint(0, 4, (n,), generator=g) * 16
    for i in range(n):
        for t in range(4):
            frames[i, t, ys[i] : ys[i] + 8, xs[i] + 2 * t : xs[i] + 2 * t + 8] = 0.9
    return frames


def test_shapes_through_every_module():
    vae, dynamics = VAE(), Dynamics()
    frames = torch.rand(3, 4, 64, 64)
    logits, mu, logvar = vae(frames)
    assert logits.shape == (3, 4, 64, 64) and mu.shape == logvar.shape == (3, 64)
    recon = vae.decode(mu)
    assert recon.shape == (3, 4, 64, 64) and 0 <= recon.min() and recon.max() <= 1
    assert [m.out_channels for m in vae.encoder.convs if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128, 256]
    assert vae.encoder.fc[1].in_features == 4096 and vae.encoder.fc[1].out_features == 512
    assert [m.out_channels for m in vae.decoder.deconvs if hasattr(m, "out_channels")] == [128, 64, 32, 4]
    assert dynamics.gru.input_size == 82 and dynamics.gru.hidden_size == 256
    nxt, hidden = dynamics.step(mu, torch.tensor([0, 5, 17]))
    assert nxt.shape == (3, 64) and hidden.shape == (1, 3, 256)
    assert dynamics(torch.randn(3, 7, 64), torch.randint(0, 18, (3, 7))).shape == (3, 7, 64)
    world = WorldModel(vae, dynamics)
    latents = world.encode(frames)
    imagined = world.imagine(
        latents[:, None].repeat(1, 2, 1),
        torch.zeros(3, 1, dtype=torch.long),
        torch.ones(3, 5, dtype=torch.long),
    )
    assert imagined.shape == (3, 5, 64) and world.decode(imagined[:, -1]).shape == (3, 4, 64, 64)


def test_vae_overfits_one_batch():
    torch.manual_seed(0)
    vae = VAE()
    vae.set_frame_statistics(torch.full((64, 64), 0.1))
    batch = squares(16, seed=0)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    first = vae_loss(batch, vae.decoder.logits(vae.encode(batch)), *vae.encoder(batch), beta=1e-4)[
        "loss_recon"
    ].item()
    for _ in range(80):  # the error falls ~90-fold by step 75 (10-fold asked)
        losses = vae.compute_loss(batch, beta=1e-4)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
    last = vae_loss(batch, vae.decoder.logits(vae.encode(batch)), *vae.encoder(batch), beta=1e-4)[
        "loss_recon"
    ].item()
    assert last < first / 10, f"reconstruction error fell only from {first:.1f} to {last:.1f}"


def test_summed_loss_keeps_the_latent_informative_and_beats_the_mean_frame():
    """Posterior collapse check: after a short run, different inputs decode differently, each
    closer to itself than to the other, and held-out PSNR beats the training mean frame."""
    torch.manual_seed(0)
    train, heldout = squares(256, seed=1), squares(32, seed=2)
    vae = VAE()
    vae.set_frame_statistics(train.mean(dim=(0, 1)))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):  # 96 steps: +17 dB over the mean frame here (5 asked), +6 dB after 64
        for idx in torch.randperm(256, generator=g).split(16):
            losses = vae.compute_loss(train[idx], beta=1e-4)
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
    with torch.no_grad():
        recon = vae.decode(vae.encode(heldout))
    j = next(j for j in range(1, 32) if not torch.equal(heldout[j], heldout[0]))  # another state
    a, b = recon[0], recon[j]
    assert F.mse_loss(a, heldout[0]) < F.mse_loss(a, heldout[j])
    assert F.mse_loss(b, heldout[j]) < F.mse_loss(b, heldout[0])
    assert (a - b).abs().max() > 0.3, "the decoder does not give the same output for every input"
    mean_frame = train.mean(0, keepdim=True)
    psnr_model = -10 * torch.log10(F.mse_loss(recon, heldout))
    psnr_mean = -10 * torch.log10(F.mse_loss(mean_frame.expand_as(heldout), heldout))
    assert psnr_model > psnr_mean + 5, f"{psnr_model:.2f} dB vs mean frame {psnr_mean:.2f} dB"


def test_loss_terms_are_summed_per_sample():
    frames = torch.zeros(2, 4, 64, 64)
    logits = torch.zeros_like(frames)  # sigmoid 0.5 everywhere
    mu, logvar = torch.ones(2, 64), torch.zeros(2, 64)
    losses = vae_loss(frames, logits, mu, logvar, beta=0.5)
    assert torch.isclose(losses["loss_recon"], torch.tensor(0.25 * 4 * 64 * 64))
    assert torch.isclose(losses["loss_kl"], torch.tensor(0.5 * 64))  # 0.5 * sum(mu^2)
    assert torch.isclose(losses["loss"], losses["loss_recon"] + 0.5 * losses["loss_kl"])
    assert torch.isclose(losses["mse"], torch.tensor(0.25))
    bce = vae_loss(frames, logits, mu, logvar, beta=0.5, loss="bce")
    assert torch.isclose(bce["loss_recon"], torch.tensor(math.log(2) * 4 * 64 * 64))  # -log(1 - 0.5) a pixel
    assert torch.isclose(bce["mse"], torch.tensor(0.25))


def test_the_cross_entropy_reaches_a_missing_ball_the_squared_error_does_not():
    """A dim ball pixel (0.17) on a court the decoder draws at sigmoid ~0.001: the gradient on
    its logit under sse is ~1000x smaller than under bce (why `vae.loss` defaults to bce)."""
    frames = torch.zeros(1, 4, 64, 64)
    frames[0, :, 30, 30] = 0.17
    logits = torch.full_like(frames, math.log(0.001 / 0.999)).requires_grad_()
    mu, logvar = torch.zeros(1, 64), torch.zeros(1, 64)
    grads = {}
    for kind in ("sse", "bce"):
        logits.grad = None
        vae_loss(frames, logits, mu, logvar, beta=0.0, loss=kind)["loss"].backward()
        grads[kind] = -logits.grad[0, 0, 30, 30].item()
    assert grads["bce"] == pytest.approx(0.169, abs=1e-3)
    assert grads["bce"] / grads["sse"] > 400


def test_standardised_input_makes_a_rare_pixel_stand_out():
    vae = VAE()
    mean, std = torch.zeros(64, 64), torch.zeros(64, 64)
    std[:, :32] = 0.3  # the left half changes a lot, the right half almost never
    vae.set_frame_statistics(mean, std, standardise_input=True)
    frames = torch.zeros(1, 4, 64, 64)
    frames[..., 10, 10] = frames[..., 10, 50] = 0.17
    standardised = (frames - vae.encoder.input_shift) / vae.encoder.input_scale
    assert standardised[0, 0, 10, 50] / standardised[0, 0, 10, 10] > 10
    weights = vae.surprise_weights(frames, 0.5)
    assert weights[0, 0, 10, 50] == pytest.approx(1 + 0.5 * 0.17 / 0.02)  # 5.25: the rare pixel weighs most
    assert weights[0, 0, 10, 10] == pytest.approx(1 + 0.5 * 0.17 / 0.32)
    assert weights[0, 0, 0, 0] == 1 and vae.surprise_weights(frames, 0.0) is None


def test_a_frame_far_outside_the_training_spread_keeps_the_gradient_finite():
    """Pong's quickstart diverged at step 103: a frame lit where training frames never were
    (standardised input 50) drove the posterior log-variance to ~60 and the KL's exp() to inf."""
    vae = VAE()
    vae.set_frame_statistics(torch.zeros(64, 64), torch.zeros(64, 64), standardise_input=True)
    with torch.no_grad():
        vae.encoder.fc_logvar.bias.fill_(200.0)  # an encoder whose log-variance answers such a frame
    frames = torch.ones(2, 4, 64, 64)  # every pixel 1 / SCALE_FLOOR = 50 stds from its mean
    losses = vae.compute_loss(frames, beta=1e-4, loss="bce", surprise=0.5)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)
    assert vae.encoder(frames)[1].max().item() == MAX_LOGVAR


def no_events(actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward classes and game overs of steps where nothing happens: (B, T) each."""
    return torch.full_like(actions, NO_REWARD), torch.zeros(actions.shape)


def test_dynamics_overfits_one_batch():
    torch.manual_seed(0)
    model = Dynamics(latent_dim=8, hidden_size=64)
    actions = torch.randint(0, 18, (16, 12))
    steps = torch.zeros(18, 8)
    steps[:, 0] = torch.linspace(-0.3, 0.3, 18)  # each action moves the latent by its own amount
    latents = torch.cumsum(torch.cat([torch.zeros(16, 1, 8), steps[actions]], dim=1), dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.compute_loss(latents, actions, *no_events(actions), sampling_prob=0.0, burn_in=1)[
        "latent_loss"
    ].item()
    for _ in range(300):
        losses = model.compute_loss(latents, actions, *no_events(actions), sampling_prob=0.5, burn_in=1)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    last = model.compute_loss(latents, actions, *no_events(actions), sampling_prob=1.0, burn_in=1)[
        "latent_loss"
    ].item()
    assert last < first / 20, f"open-loop loss fell only from {first:.4f} to {last:.4f}"


def test_scheduled_sampling_uses_predictions_at_the_configured_rate():
    g = torch.Generator().manual_seed(0)
    mask = scheduled_sampling_mask(200, 50, 0.3, burn_in=4, generator=g)
    assert not mask[:, :4].any(), "the context is always fed true latents"
    assert abs(mask[:, 4:].float().mean().item() - 0.3) < 0.02
    assert not scheduled_sampling_mask(10, 10, 0.0, 1).any()
    assert scheduled_sampling_mask(10, 10, 1.0, 1)[:, 1:].all()
    model = Dynamics(latent_dim=8, hidden_size=16)
    latents, actions = torch.randn(64, 21, 8), torch.randint(0, 18, (64, 20))
    losses = model.compute_loss(
        latents,
        actions,
        *no_events(actions),
        sampling_prob=0.5,
        burn_in=4,
        generator=torch.Generator().manual_seed(1),
    )
    assert abs(losses["sampled_fraction"].item() - 0.5) < 0.05


def test_teacher_forcing_matches_the_parallel_forward():
    torch.manual_seed(0)
    model = Dynamics(latent_dim=8, hidden_size=16)
    latents, actions = torch.randn(4, 9, 8), torch.randint(0, 18, (4, 8))
    expected = F.mse_loss(model(latents[:, :-1], actions), latents[:, 1:])
    assert torch.isclose(
        model.compute_loss(latents, actions, *no_events(actions), sampling_prob=0.0, burn_in=1)[
            "latent_loss"
        ],
        expected,
        atol=1e-6,
    )


def test_a_recording_is_encoded_once_per_full_stack_at_its_last_frame():
    torch.manual_seed(0)
    vae = VAE().eval()
    frames = torch.randint(0, 256, (11, 64, 64), dtype=torch.uint8)
    episode_ends = torch.zeros(11, dtype=torch.bool).numpy()
    episode_ends[[4, 10]] = True  # episodes of 5 and 6 frames
    latents = vae.encode_recording(frames, episode_ends, batch_size=2)
    # full stacks end at frames 3, 4 (first episode) and 8, 9, 10 (second): the rest stay 0
    encoded = latents.abs().sum(-1) > 0
    assert encoded.tolist() == [False, False, False, True, True, False, False, False, True, True, True]
    with torch.no_grad():
        expected = vae.encode(frames[5:9].float()[None] / 255)[0]
    torch.testing.assert_close(latents[8], expected)


def test_self_feeding_ramps_from_its_start_to_its_final_probability():
    assert [sampling_prob_at(e, 5, 0.5, 1.0, 0.5) for e in range(1, 6)] == [0.5, 0.75, 1.0, 1.0, 1.0]
    assert [sampling_prob_at(e, 3, 0.5, 1.0, 1.0) for e in range(1, 4)] == [0.5, 0.75, 1.0]
    assert sampling_prob_at(1, 10, 0.5, 0.5, 0.0) == 0.5, "the original: constant"
    assert sampling_prob_at(1, 10, 0.2, 1.0, 0.0) == 1.0, "no ramp: the final value throughout"
    assert sampling_prob_at(1, 1, 0.2, 0.9, 0.5) == 0.9, "one epoch: the final value"


def test_decoded_steps_are_distinct_open_loop_predictions():
    g = torch.Generator().manual_seed(0)
    rows, steps = decoded_steps(batch=4, steps=10, burn_in=3, count=12, generator=g)
    assert len(rows) == 12 and rows.min() >= 0 and rows.max() <= 3
    assert steps.min() >= 2 and steps.max() <= 9, "from the burn-in's last step (2) to the last (9)"
    assert len(set(zip(rows.tolist(), steps.tolist()))) == 12, "no pair twice"
    rows, steps = decoded_steps(batch=2, steps=4, burn_in=3, count=100)
    assert len(rows) == 4, "at most every open-loop prediction of the batch"


def test_the_decoded_loss_scores_predictions_in_pixels_and_trains_only_the_dynamics():
    """Decoding the true latent scores better than a wrong one, and the loss's gradient reaches
    the GRU but never the frozen VAE."""
    torch.manual_seed(0)
    vae = VAE().eval().requires_grad_(False)
    frames = (torch.rand(12, 64, 64) * 255).to(torch.uint8)  # a recording of 12 frames
    decoded = DecodedFrameLoss(vae, frames, loss="bce", surprise=0.5, samples=4, weight=1.0)
    with torch.no_grad():
        stacks = frames[torch.arange(4, 8)[:, None] + torch.arange(-3, 1)].float() / 255
        true = vae.encode(stacks)
    right = decoded(true, torch.arange(4, 8))
    wrong = decoded(true.flip(0), torch.arange(4, 8))
    assert right < wrong
    model = Dynamics(latent_dim=64, hidden_size=16)
    latents, actions = torch.randn(2, 6, 64), torch.randint(0, 18, (2, 5))
    losses = model.compute_loss(
        latents,
        actions,
        *no_events(actions),
        torch.tensor([3, 4]),
        sampling_prob=1.0,
        burn_in=2,
        generator=torch.Generator().manual_seed(0),
        decoded=decoded,
    )
    assert losses["frame_loss"] > 0
    losses["loss"].backward()
    assert model.gru.weight_ih_l0.grad.abs().sum() > 0
    assert all(p.grad is None for p in vae.parameters())
    without = model.compute_loss(latents, actions, *no_events(actions), sampling_prob=1.0, burn_in=2)
    assert without["frame_loss"] == 0
