"""When does `compile=default` pay on CPU? The eager and the compiled update side by side, per network size.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/compile_cpu.py [--hidden 64,64 256,256 400,400,400]

For each size: the `experiment=mt10_mwplus` agent (one-hot, uniform balancer, grad-norm clip 1, batch 1280) as
train.py builds it, once eager and once compiled, on the same fixed batch; CPU ms per update over `--seconds`
(after 3 untimed calls), the first compiled call's seconds (the compilation) and the update count after which
compiling has paid for itself. Prints JSON. What `compile=auto` chooses on CPU follows these figures
(mtrl/agents/compiled.py `resolve_mode`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from peer_side import machine, time_calls, warmed_agent  # noqa: E402


def measure(hidden: str, mode: str, seconds: float) -> dict:
    torch.manual_seed(0)
    _, agent, batch, first = warmed_agent(hidden, 1, mode)
    cpu = time.process_time()
    times = time_calls(lambda: agent.update(batch), seconds, 10)
    return {
        "first_call_s": round(first, 2),
        "cpu_ms": round(1e3 * (time.process_time() - cpu) / len(times), 2),
        "compiled": agent.plan.compiled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", nargs="+", default=["64,64", "256,256", "400,400,400"])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for hidden in args.hidden:
        eager, compiled = measure(hidden, "none", args.seconds), measure(hidden, "default", args.seconds)
        saved = eager["cpu_ms"] - compiled["cpu_ms"]
        rows.append(
            {
                "hidden": hidden,
                "eager_cpu_ms": eager["cpu_ms"],
                "compiled_cpu_ms": compiled["cpu_ms"],
                "compiled_over_eager": round(compiled["cpu_ms"] / eager["cpu_ms"], 3),
                "compile_s": compiled["first_call_s"],
                "pays_after_updates": int(1e3 * compiled["first_call_s"] / saved) if saved > 0 else None,
            }
        )
    print(
        json.dumps(
            {"what": "benchmarks/compile_cpu.py", "rows": rows, "machine": machine(), "pid": os.getpid()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
