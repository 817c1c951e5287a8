"""A probe outside the pipeline: one GRU step per K frames (K one-hot actions in, the next stack
of K new frames out), trained on the quickstart VAE's latents and scored like `evaluate` (ball
recall per horizon on the pinned held-out windows). It asks whether stepping as every Atari world
model in the literature does (SimPLe, IRIS, DreamerV3: one step per 4 frames) keeps the ball
longer than one step per frame, before the pipeline is changed for it.

    python tools/probe_frames_per_step.py K EPOCHS OPEN_LOOP_PROB SEQ_STEPS STRIDE [SEED] [THREADS]

with the quickstart's data and VAE: PROBE_PARAMS names its params file, PROBE_VAE its VAE
checkpoint. PROBE_STOCHASTIC=1: the head also predicts a spread per latent dimension, trained by
the Gaussian negative log-likelihood, and the rollouts sample the next latent with each
temperature of PROBE_TEMPERATURES (default "0 0.5 1"; 0 is the mean): does drawing one future,
instead of the average of the possible ones, keep the ball? PROBE_EVAL_EPOCHS="6 12 24" also
scores the model after those epochs (of the one schedule of EPOCHS): recall against training
minutes. PROBE_CONTEXT: real steps of K frames before the rollout (default 2). Results:
results/frames-per-step-probe.json, results/frames-per-step-seeds.json,
results/frames-per-step-curve.json.
"""

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from arcadedreamer.config import load_params
from arcadedreamer.data.dataset import load_episodes, split_episodes
from arcadedreamer.data.objects import GAMES
from arcadedreamer.data.preprocessing import stack_start_indices
from arcadedreamer.data.storage import load_game_data
from arcadedreamer.evaluation.evaluate import _object_truth, cut_windows, object_scoring
from arcadedreamer.evaluation.objects import object_scores
from arcadedreamer.models import checkpoints as ckpt

K = int(sys.argv[1])
EPOCHS = int(sys.argv[2])
OPEN = float(sys.argv[3])
SEQ = int(sys.argv[4])
STRIDE = int(sys.argv[5])
SEED = int(sys.argv[6]) if len(sys.argv) > 6 else 0
torch.set_num_threads(int(sys.argv[7]) if len(sys.argv) > 7 else 2)
BURN = 2
STOCHASTIC = os.environ.get("PROBE_STOCHASTIC") == "1"
EVAL_EPOCHS = {int(e) for e in os.environ.get("PROBE_EVAL_EPOCHS", "").split()} | {EPOCHS}
CTX = int(os.environ.get("PROBE_CONTEXT", "2"))
TEMPERATURES = (
    [float(t) for t in os.environ.get("PROBE_TEMPERATURES", "0 0.5 1").split()] if STOCHASTIC else [0.0]
)

params = load_params(os.environ["PROBE_PARAMS"])
vae = ckpt.vae_from_checkpoint(ckpt.load_checkpoint(os.environ["PROBE_VAE"])).eval().requires_grad_(False)
ep = load_episodes(params.data.out_dir, params.data.games)
val = split_episodes(ep, 0.1, 0)
lat = vae.encode_recording(ep.frames, ep.episode_ends)
ids = ep.episode_id
valid = np.zeros(len(ep), bool)
valid[stack_start_indices(ep.episode_ends, 4)] = True
span = K * SEQ
starts = np.arange(len(ep) - span - 1)
ok = valid[starts] & (ids[starts + span] == ids[starts]) & ~val[starts] & (starts % STRIDE == 0)
starts = torch.from_numpy(starts[ok])
print("sequences", len(starts), flush=True)


class KDyn(nn.Module):
    def __init__(self, D=64, A=18, H=256):
        super().__init__()
        self.A = A
        self.gru = nn.GRU(D + K * A, H, batch_first=True)
        self.head = nn.Linear(H, 2 * D if STOCHASTIC else D)

    def step(self, z, acts, h=None, temperature=0.0):  # z (B,D), acts (B,K) -> next z, h, log-std
        oh = F.one_hot(acts.long(), self.A).float().flatten(1)
        out, h = self.gru(torch.cat([z, oh], -1)[:, None], h)
        if not STOCHASTIC:
            return z + self.head(out[:, 0]), h, None
        delta, log_std = self.head(out[:, 0]).chunk(2, -1)
        log_std = log_std.clamp(-6, 2)
        mean = z + delta
        return mean + temperature * log_std.exp() * torch.randn_like(mean), h, (mean, log_std)


# evaluation: held-out windows, context CTX steps of K frames, 50 frames on
data = load_game_data(Path(params.heldout.out_dir) / "BreakoutNoFrameskip-v4")
H = 52
cfg = params.evaluation
win = cut_windows(data, 4, 1, K * (CTX - 1) + H, 8)  # stacks of consecutive frames
B, L = win.stacks.shape[:2]
with torch.no_grad():
    flat = win.stacks.reshape(B * L, 4, 64, 64)
    zl = torch.cat([vae.encode(c) for c in flat.split(512)]).reshape(B, L, -1)


def rollout(temperature):
    torch.manual_seed(SEED)
    with torch.no_grad():
        h = None
        for c in range(CTX - 1):
            _, h, _ = model.step(zl[:, c * K], win.actions[:, c * K : c * K + K], h)
        z = zl[:, (CTX - 1) * K]
        frames = []
        for s in range(math.ceil(H / K)):
            a = win.actions[:, base + s * K : base + s * K + K]
            if a.shape[1] < K:
                a = torch.cat([a, a[:, -1:].expand(-1, K - a.shape[1])], 1)
            z, h, _ = model.step(z, a, h, temperature=temperature)
            frames.append(vae.decode(z)[:, -K:])
        return torch.cat(frames, 1)[:, :H]  # (B, H, 64, 64)


base = (CTX - 1) * K
scoring = object_scoring(data, cfg)


def report(epoch: int, train_seconds: float) -> None:
    print(f"after epoch {epoch} ({train_seconds:.0f} s of training)", flush=True)
    for temperature in TEMPERATURES:
        frames = rollout(temperature)
        print(f"temperature {temperature:g}" if STOCHASTIC else "mean prediction")
        res = {}
        for hz in range(1, H + 1):
            tgt = win.stacks[:, base + hz, -1]
            truth = _object_truth(tgt, win.objects, base + hz, scoring)
            sc = object_scores(
                frames[:, hz - 1].numpy(),
                truth,
                GAMES[scoring.game],
                2,
                0.5,
                scoring.typical_mass,
                scoring.player_tolerance,
            )
            res[hz] = (
                sc.ball_recall,
                sc.player_error,
                sc.false_ball_rate,
                sc.ball_absent,
                sc.ball_faded,
                sc.ball_misplaced,
            )
        for hz in (1, 4, 10, 20, 30, 40, 50):
            r = res[hz]
            print(
                f"h{hz}: ball {r[0]:.2f} player err {r[1]:.2f} false {r[2]:.2f} | absent {r[3]:.2f} faded {r[4]:.2f} misplaced {r[5]:.2f}"
            )
        print("mean recall 1..50", np.nanmean([res[h][0] for h in range(1, 51)]), "windows", B)
    model.train()


torch.manual_seed(SEED)
model = KDyn()
opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
total = EPOCHS * math.ceil(len(starts) / 32)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1, (s + 1) / 500) * 0.5 * (1 + math.cos(math.pi * min(1, s / total)))
)
gen = torch.Generator().manual_seed(SEED)
train_seconds = 0.0
acts_all = ep.actions
for epoch in range(EPOCHS):
    t0 = time.time()
    order = starts[torch.randperm(len(starts), generator=gen)]
    tot = n = 0
    for b in order.split(32):
        idx = b[:, None] + K * torch.arange(SEQ + 1)  # (B, T+1)
        z = lat[idx]
        a = acts_all[idx[:, :-1, None] + torch.arange(K)]  # (B, T, K)
        h = None
        prev = z[:, 0]
        preds, nll = [], []
        mask = torch.rand(len(b), SEQ, generator=gen) < OPEN
        mask[:, :BURN] = False
        for t in range(SEQ):
            inp = torch.where(mask[:, t, None], prev, z[:, t])
            prev, h, gauss = model.step(inp, a[:, t], h, temperature=1.0)  # self-fed: a sample
            preds.append(prev if gauss is None else gauss[0])
            if gauss is not None:  # Gaussian NLL per dimension (constant dropped)
                nll.append(gauss[1] + 0.5 * ((z[:, t + 1] - gauss[0]) / gauss[1].exp()) ** 2)
        loss = torch.stack(nll, 1).mean() if nll else F.mse_loss(torch.stack(preds, 1), z[:, 1:])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tot += loss.item() * len(b)
        n += len(b)
    train_seconds += time.time() - t0
    print(f"epoch {epoch + 1}: {tot / n:.4f} ({train_seconds:.0f} s)", flush=True)
    if epoch + 1 in EVAL_EPOCHS:
        model.eval()
        report(epoch + 1, train_seconds)
