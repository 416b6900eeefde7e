"""Shared pieces of the offline tests: tiny real Meta-World datasets collected once per module."""

from __future__ import annotations

from pathlib import Path

from mtrl.config import parse_collect
from mtrl.data.collect import collect
from tests.conftest import compose_config


def collect_smoke_data(path: Path, *extra: str) -> Path:
    """Scripted-expert data (noise 0.1) of the smoke tasks reach-v3 and drawer-close-v3: 2 episodes of 20
    steps each under the mtrl protocol, with `extra` collect.py overrides (e.g. a poor task)."""
    cfg = compose_config(
        "collect",
        [
            "env.tasks=[reach-v3,drawer-close-v3]",
            "env.protocol=mtrl",
            "env.horizon=20",
            "episodes_per_task=2",
            "noise=0.1",
            "progress=false",
            *extra,
            f"output={path}",
        ],
    )
    return collect(parse_collect(cfg))
