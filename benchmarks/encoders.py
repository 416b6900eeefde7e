"""Parameter count and full SAC update time of each encoder at MT10 sizes, as ratios to `onehot`.

    python benchmarks/encoders.py [--tasks 10] [--rounds 5]

3 x 400 networks (actor + twin critics), batch 128 per task, uniform balancer, timed in interleaved
rounds in one process. Target: task_bottom, film and multihead cost <= 1.3x onehot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ACT_DIM, OBS_DIM, filled_replay, interleaved_medians, machine  # noqa: E402

from envs.tasks import MT50_TASKS  # noqa: E402
from mtrl.agents import SACAgent, SACConfig  # noqa: E402
from mtrl.networks import available  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = list(MT50_TASKS[: args.tasks])
    replay = filled_replay(args.tasks, per_task=256)
    counts = np.full(args.tasks, 128)
    agents, params = {}, {}
    for encoder in available():
        torch.manual_seed(0)
        agent = SACAgent(OBS_DIM, ACT_DIM, names, SACConfig(), {"name": encoder}, device)
        agents[encoder] = agent
        params[encoder] = sum(p.numel() for m in (agent.actor, agent.critic) for p in m.parameters())
    seconds = interleaved_medians(
        {e: (lambda a=a: a.update(replay.sample(counts))) for e, a in agents.items()}, args.rounds
    )
    base_s, base_p = seconds["onehot"], params["onehot"]
    print(
        json.dumps(
            {
                "machine": machine(),
                "tasks": args.tasks,
                "batch_per_task": 128,
                "hidden": [400, 400, 400],
                "results": {
                    e: {
                        "parameters": params[e],
                        "parameters_ratio": round(params[e] / base_p, 3),
                        "update_ms": round(seconds[e] * 1e3, 1),
                        "update_ratio": round(seconds[e] / base_s, 3),
                    }
                    for e in agents
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
