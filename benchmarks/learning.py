"""A short, documented learning run: MT-SAC on three easy Meta-World tasks, success vs env steps as JSON.

    python benchmarks/learning.py [run_dir=...] [any train.py override]

Defaults: reach-v3, drawer-close-v3, button-press-topdown-v3 under the mtrl protocol (150-step
episodes, one fixed goal), 3 x 256 networks, 90k env steps (30k per task), evaluation every 9k
steps. About 15 minutes on 2 CPU cores. Not part of CI.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from mtrl.config.parse import parse_train
from mtrl.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = [
    "env.tasks=[reach-v3,drawer-close-v3,button-press-topdown-v3]",
    "env.protocol=mtrl",
    "agent.hidden_sizes=[256,256,256]",
    "total_steps=90000",
    "warmup_steps=4500",
    "eval_every=9000",
    "eval_episodes=1",
    "checkpoint_every=45000",
    "log_every=3000",
    "seed=1",
]


def main(overrides: list[str]) -> dict:
    keys = {o.split("=", 1)[0] for o in overrides}
    chosen = [o for o in DEFAULTS if o.split("=", 1)[0] not in keys] + overrides
    if "run_dir" not in keys:
        chosen.append(f"run_dir=runs/learning_{time.strftime('%Y%m%d_%H%M%S')}")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=chosen)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON
        Trainer(parse_train(cfg), Path(cfg.run_dir)).run()
    curve = []
    for path in sorted((Path(cfg.run_dir) / "eval").glob("step_*.json")):
        data = json.loads(path.read_text())
        curve.append(
            {
                "env_steps": int(path.stem.split("_")[1]),
                "mean_success": data["mean_success"],
                "success": {t["task"]: t["success_rate"] for t in data["tasks"]},
            }
        )
    report = {"overrides": chosen, "wall_clock_s": round(time.perf_counter() - start, 1), "curve": curve}
    (Path(cfg.run_dir) / "learning.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
