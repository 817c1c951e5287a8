"""torch.compile: is it worth it here? Eager against compiled training steps, same model, batch
and threads, with the compile time reported (it is paid again by every training command).

`training.compile` in params.yaml turns it on in both trainers; it stays off by default
because of what this benchmark measured on CPU (README, Performance).
"""

from __future__ import annotations

import time

import torch


def vae_step_factory(compiled: bool):
    from arcadedreamer.models.vae import VAE, vae_loss

    torch.manual_seed(0)
    model = VAE()
    net = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    frames = torch.rand(128, 4, 64, 64)

    def step():
        losses = vae_loss(frames, *net(frames), beta=1e-4)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()

    return step, 128


def dynamics_step_factory(compiled: bool):
    from arcadedreamer.models.dynamics import Dynamics
    from arcadedreamer.training.dynamics_trainer import SequenceLoss

    torch.manual_seed(0)
    loss = SequenceLoss(Dynamics())
    net = torch.compile(loss) if compiled else loss
    optimizer = torch.optim.Adam(loss.parameters(), lr=3e-4)
    latents, actions = torch.randn(128, 33, 64), torch.randint(0, 18, (128, 32))

    def step():
        losses = net(latents, actions, 0.5, 4, None)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()

    return step, 128


def measure(factory, compiled: bool, seconds: float) -> tuple[float, float]:
    """(samples/s after warm-up, seconds the first two calls took: compilation)."""
    step, batch = factory(compiled)
    start = time.perf_counter()
    step()
    step()
    warmup = time.perf_counter() - start
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        count += batch
    return count / (time.perf_counter() - start), warmup


def main(seconds: float = 10.0) -> dict:
    import torch._inductor.config

    torch._inductor.config.force_disable_caches = True  # a cold compile, as a fresh machine pays it
    results = {}
    for name, factory in (("vae", vae_step_factory), ("dynamics", dynamics_step_factory)):
        eager, _ = measure(factory, False, seconds)
        compiled, compile_seconds = measure(factory, True, seconds)
        results[name] = {"eager": eager, "compiled": compiled, "compile_seconds": compile_seconds}
        print(f"torch.compile {name} step: eager {eager:,.0f} samples/s, compiled {compiled:,.0f} "
              f"({compiled / eager:.2f}x), compile time {compile_seconds:.0f} s", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
