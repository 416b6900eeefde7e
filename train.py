"""Train a multi-task agent: `python train.py env=mt10 seed=3 total_steps=200000` (Hydra overrides)."""

from mtrl.cli import hydra_main, run_train

if __name__ == "__main__":
    hydra_main("train", run_train)
