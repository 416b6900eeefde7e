"""The online trainer under its earlier import path, `mtrl.trainer` (now `mtrl.train.trainer`).

Kept because scripts outside the project import it from here: the side-by-side harness's `mtrl_loop.py`
(`../shared/peer/round.sh`, `extra.sh`) does `from mtrl.trainer import Trainer`.
"""

from mtrl.train.trainer import Trainer, train

__all__ = ["Trainer", "train"]
