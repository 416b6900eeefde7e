"""Evaluate a checkpoint or the scripted experts: `python evaluate.py checkpoint=<run dir>`."""

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning on shared cores (README "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mtrl.cli import hydra_main, run_evaluate  # noqa: E402

if __name__ == "__main__":
    hydra_main("evaluate", run_evaluate)
