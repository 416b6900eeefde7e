"""Train a multi-task agent: `python train.py env=mt10 seed=3 total_steps=200000` (Hydra overrides)."""

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning on shared cores (README "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mtrl.cli import hydra_main, run_train  # noqa: E402

if __name__ == "__main__":
    hydra_main("train", run_train)
