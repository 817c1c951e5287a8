"""torch.compile: is it worth it here? Eager against compiled training steps, same model, batch
and threads, with the compile time reported (it is paid again by every training command).

`training.compile` in params.yaml turns it on in both trainers; it stays off by default
because of what this benchmark measured on CPU (README, Performance).
"""

from __future__ import annotations

import time

from common import dynamics_training_step, rate, vae_training_step

BATCH = 128


def measure(make_step, compiled: bool, seconds: float) -> tuple[float, float]:
    """(samples/s after warm-up, seconds the first two calls took: compilation)."""
    step = make_step(compiled)
    start = time.perf_counter()
    step()
    step()
    warmup = time.perf_counter() - start
    return rate(step, BATCH, seconds), warmup


def main(seconds: float = 10.0) -> dict:
    import torch._inductor.config

    torch._inductor.config.force_disable_caches = True  # a cold compile, as a fresh machine pays it
    results = {}
    steps = {
        "vae": lambda compiled: vae_training_step(BATCH, compiled),
        "dynamics": lambda compiled: dynamics_training_step(BATCH, 32, compiled),
    }
    for name, make_step in steps.items():
        eager, _ = measure(make_step, False, seconds)
        compiled, compile_seconds = measure(make_step, True, seconds)
        results[name] = {"eager": eager, "compiled": compiled, "compile_seconds": compile_seconds}
        print(f"torch.compile {name} step: eager {eager:,.0f} samples/s, compiled {compiled:,.0f} "
              f"({compiled / eager:.2f}x), compile time {compile_seconds:.0f} s", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
