"""torch.compile: is it worth it here? Eager against compiled training steps, same model, batch
and threads, with the compile time reported (it is paid again by every training command).

`training.compile` in params.yaml turns it on in both trainers; it stays off by default
because of what this benchmark measured on CPU (README, Performance).
"""

from __future__ import annotations

import statistics
import time

from common import dynamics_training_step, rate, vae_training_step

BATCH = 128


def compare(make_step, seconds: float, rounds: int = 5) -> tuple[float, float, float]:
    """(eager samples/s, compiled samples/s, compile seconds): medians of alternating windows,
    so the shared machine's drift hits both alike (one window each way flipped the verdict)."""
    eager_step = make_step(False)
    start = time.perf_counter()
    compiled_step = make_step(True)
    compiled_step()
    compiled_step()  # the first two calls compile (forward, then backward)
    compile_seconds = time.perf_counter() - start
    eager, compiled = [], []
    for _ in range(rounds):
        eager.append(rate(eager_step, BATCH, seconds / rounds))
        compiled.append(rate(compiled_step, BATCH, seconds / rounds))
    return statistics.median(eager), statistics.median(compiled), compile_seconds


def main(seconds: float = 10.0) -> dict:
    import torch._inductor.config

    torch._inductor.config.force_disable_caches = True  # a cold compile, as a fresh machine pays it
    results = {}
    steps = {
        "vae": lambda compiled: vae_training_step(BATCH, compiled),
        "dynamics": lambda compiled: dynamics_training_step(BATCH, 32, compiled),
    }
    for name, make_step in steps.items():
        eager, compiled, compile_seconds = compare(make_step, seconds)
        results[name] = {"eager": eager, "compiled": compiled, "compile_seconds": compile_seconds}
        print(
            f"torch.compile {name} step: eager {eager:,.0f} samples/s, compiled {compiled:,.0f} "
            f"({compiled / eager:.2f}x; medians of alternating windows), compile time "
            f"{compile_seconds:.0f} s",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main()
