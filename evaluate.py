"""Evaluate a checkpoint or the scripted experts: `python evaluate.py checkpoint=<run dir>`."""

from mtrl.cli import hydra_main, run_evaluate

if __name__ == "__main__":
    hydra_main("evaluate", run_evaluate)
