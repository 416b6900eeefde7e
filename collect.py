"""Collect an offline dataset: `python collect.py env=mt10 env.protocol=mtrl episodes_per_task=5 output=data/x.h5`."""

from mtrl.cli import hydra_main, run_collect

if __name__ == "__main__":
    hydra_main("collect", run_collect)
