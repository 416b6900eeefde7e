"""Collect an offline dataset: `python collect.py env=mt10 env.protocol=mtrl episodes_per_task=5 output=data/x.h5`."""

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning on shared cores (README "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mtrl.cli import hydra_main, run_collect  # noqa: E402

if __name__ == "__main__":
    hydra_main("collect", run_collect)
