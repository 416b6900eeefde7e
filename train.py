"""Train a multi-task agent: `python train.py env=mt10 seed=3 total_steps=200000` (Hydra overrides)."""

from pathlib import Path

from mtrl.cli import hydra_main, run_train

if __name__ == "__main__":
    hydra_main(Path(__file__).parent / "configs", "train", run_train)
