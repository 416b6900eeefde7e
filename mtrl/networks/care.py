"""CARE (Sodhani et al., ICML 2021): mixture of encoders attended by task-description context."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .blocks import MLP, ParallelMLP, TaskConditionedNetwork, check_float, check_hidden_sizes, check_int, task_rows

log = logging.getLogger(__name__)

DEFAULT_EMBEDDINGS_FILE = Path(__file__).resolve().parent / "data" / "task_embeddings.npz"
_VERSION_SUFFIX = re.compile(r"-v\d+$")


@functools.lru_cache(maxsize=8)
def _load_table(path: str) -> tuple[dict[str, int], np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["names"]]
        emb = np.asarray(data["embeddings"], dtype=np.float32)
    return {n: i for i, n in enumerate(names)}, emb


def _base(name: str) -> str:
    return _VERSION_SUFFIX.sub("", name.strip().lower())


def lookup_task_embeddings(
    task_names: Sequence[str] | None, num_tasks: int, path: str | Path | None = None
) -> tuple[np.ndarray, list[int]]:
    """Rows of the description-embedding file for ``task_names``.

    Names match exactly, else by their base name without the ``-vN`` suffix (so ``reach-v2``
    finds ``reach-v3``).  Returns ``(table (K, D) with zero rows for misses, missing task ids)``;
    with no file or no names, every task is missing (D then defaults to 384).
    """
    path = Path(path) if path is not None else DEFAULT_EMBEDDINGS_FILE
    try:
        index, emb = _load_table(str(path))
    except (OSError, KeyError, ValueError) as exc:
        log.warning("care: cannot read task embeddings %s (%s); using learned embeddings for all tasks", path, exc)
        index, emb = {}, np.zeros((0, 384), dtype=np.float32)
    by_base = {}
    for n, i in index.items():
        by_base.setdefault(_base(n), i)
    table = np.zeros((num_tasks, emb.shape[1]), dtype=np.float32)
    missing = []
    for t in range(num_tasks):
        name = task_names[t] if task_names is not None else None
        row = None if name is None else index.get(name, by_base.get(_base(name)))
        if row is None:
            missing.append(t)
        else:
            table[t] = emb[row]
    return table, missing


class CARENetwork(TaskConditionedNetwork):
    """Contextual attention-based representation learning.

    - context: the task's description embedding (fixed, from ``data/task_embeddings.npz``) ->
      MLP ``context_hidden`` -> z (``embedding_dim``).
    - k = ``num_experts`` encoders of x, each an MLP with sizes ``expert_sizes`` (linear last);
      attention alpha = softmax(W z / temperature) over the k encoders; h = sum_j alpha_j enc_j(x).
    - head: MLP ``hidden_sizes`` on [h, z] -> out_dim.

    Tasks without a description embedding (unknown name, ``task_names=None``, or no file) get a
    learned embedding vector instead (random unit vector init) and a logged warning.

    Options: num_experts (default 6, the CARE/MT10 value), expert_sizes (default [50, 50]),
    embedding_dim (default 50), context_hidden (default [50]), temperature (> 0, default 1.0),
    embeddings_file (default None = the shipped file).
    """

    name = "care"

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        task_names: Sequence[str] | None = None,
        *,
        num_experts: int = 6,
        expert_sizes: Sequence[int] = (50, 50),
        embedding_dim: int = 50,
        context_hidden: Sequence[int] = (50,),
        temperature: float = 1.0,
        embeddings_file: str | None = None,
    ):
        super().__init__(in_dim, out_dim, num_tasks, hidden_sizes, task_names)
        self.num_experts = check_int("num_experts", num_experts, 1)
        expert_sizes = check_hidden_sizes(expert_sizes, 1, name="expert_sizes")
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 1)
        context_hidden = check_hidden_sizes(context_hidden, 0, name="context_hidden")
        self.temperature = check_float("temperature", temperature, 0.0, low_inclusive=False)

        table, missing = lookup_task_embeddings(self.task_names, self.num_tasks, embeddings_file)
        if missing:
            shown = (
                [self.task_names[t] for t in missing]
                if self.task_names is not None
                else f"all {self.num_tasks} (no task_names given)"
            )
            log.warning("care: no description embedding for task(s) %s; using learned embeddings for them", shown)
        known = [t for t in range(self.num_tasks) if t not in set(missing)]
        text_dim = table.shape[1]
        # row_of_task[t] indexes cat([description rows of known tasks, learned rows of missing]).
        row_of_task = torch.empty(self.num_tasks, dtype=torch.long)
        row_of_task[known] = torch.arange(len(known))
        row_of_task[missing] = torch.arange(len(known), self.num_tasks)
        self.register_buffer("row_of_task", row_of_task)
        self.register_buffer("description_embeddings", torch.from_numpy(table[known]))
        self.missing_tasks = missing
        if missing:
            init = torch.randn(len(missing), text_dim)
            self.learned_embeddings = nn.Parameter(init / init.norm(dim=-1, keepdim=True))
        else:
            self.learned_embeddings = None

        self.context = MLP(text_dim, [*context_hidden, self.embedding_dim])
        self.attention = nn.Linear(self.embedding_dim, self.num_experts)
        self.experts = ParallelMLP(self.num_experts, self.in_dim, expert_sizes)
        self.head = MLP(expert_sizes[-1] + self.embedding_dim, [*self.hidden_sizes, self.out_dim])

    def task_metadata(self) -> torch.Tensor:
        """(K, text_dim) metadata embedding of every task (fixed or learned)."""
        rows = self.description_embeddings
        if self.learned_embeddings is not None:
            rows = torch.cat([rows, self.learned_embeddings], dim=0)
        return rows.index_select(0, self.row_of_task)

    def context_and_attention(self, task_ids: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) or 0-dim -> z (B, embedding_dim), alpha (B, k)."""
        z_all = self.context(self.task_metadata())  # (K, E), cheap
        z = task_rows(z_all, task_ids, batch)
        alpha = torch.softmax(self.attention(z) / self.temperature, dim=-1)
        return z, alpha

    def _forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        z, alpha = self.context_and_attention(task_ids, x.shape[0])
        h = (alpha.unsqueeze(-1) * self.experts(x)).sum(-2)  # (B, d)
        return self.head(torch.cat([h, z], dim=-1))
