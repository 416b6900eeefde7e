"""Evaluate a checkpoint or the scripted experts: `python evaluate.py checkpoint=<run dir>`."""

from pathlib import Path

from mtrl.cli import hydra_main, run_evaluate

if __name__ == "__main__":
    hydra_main(Path(__file__).parent / "configs", "evaluate", run_evaluate)
