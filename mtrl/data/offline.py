"""Offline training data for a run: the dataset checked against the config, relabelled rewards (cached in the
run directory), the sharing store, and the batch sampler that logs how much each task shares."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from envs import EnvSpec, build_env_spec
from envs.tasks import resolve_tasks
from mtrl.agents.obs_norm import ObsNormalizer
from mtrl.batch import Batch
from mtrl.config.schema import TrainConfig
from mtrl.data.dataset import Dataset, load_dataset
from mtrl.data.sharing import RELABELLING_MODES, SharingStats, TransitionStore, make_batch
from mtrl.errors import UserError

RELABEL_CACHE = "relabelled_rewards.npz"
QFunction = Callable[..., Any]


def dataset_env_spec(config: TrainConfig, with_state: bool) -> tuple[EnvSpec, Dataset]:
    """Load the dataset for the config's tasks and build the env spec, checking protocol and goals agree."""
    env = dataclasses.asdict(config.env)
    _, task_names = resolve_tasks(env["tasks"])
    dataset = load_dataset(config.offline.dataset, tasks=task_names, with_state=with_state)
    if dataset.protocol.get("name") != config.env.protocol:
        raise UserError(
            f"dataset '{dataset.path}' was collected under protocol '{dataset.protocol.get('name')}'; "
            f"this config has env.protocol={config.env.protocol} "
            f"(set env.protocol={dataset.protocol.get('name')})"
        )
    if env["goal_seed"] is None:
        env["goal_seed"] = dataset.goal_seed
    spec = build_env_spec(env, config.seed)
    for name in spec.task_names:
        ours = [g.data for g in spec.goals[name][: spec.protocol.goals_per_task]]
        if ours != dataset.tasks[name].goals[: len(ours)]:
            raise UserError(
                f"the dataset's goals for {name} differ from this config's (dataset: benchmark "
                f"'{dataset.benchmark}', goal seed {dataset.goal_seed}; config: benchmark "
                f"'{spec.benchmark}', goal seed {spec.goal_seed}); use the dataset's env.tasks and "
                f"env.goal_seed={dataset.goal_seed}"
            )
    return spec, dataset


def relabel_dataset(dataset: Dataset, progress: bool = True) -> dict[tuple[int, int], np.ndarray]:
    """Task i's Meta-World reward of every other task j's transitions: {(i, j): rewards (N_j,)}."""
    from envs.relabel import RewardRelabeller

    names = dataset.task_names
    total = sum(len(dataset.tasks[j]) for i in names for j in names if i != j)
    out: dict[tuple[int, int], np.ndarray] = {}
    with tqdm(total=total, unit="transition", desc="relabel", disable=not progress, dynamic_ncols=True) as bar:
        for i, target in enumerate(names):
            relabeller = RewardRelabeller(target, dataset.tasks[target].goals)
            try:
                for j, source in enumerate(names):
                    if i != j:
                        out[(i, j)] = relabeller.rewards(dataset.tasks[source], same_task=False, progress=bar.update)
            finally:
                relabeller.close()
    return out


def _cache_key(dataset: Dataset) -> str:
    return json.dumps({"dataset_id": dataset.dataset_id, "tasks": dataset.task_names})


def cached_relabelling(dataset: Dataset, run_dir: Path) -> dict[tuple[int, int], np.ndarray] | None:
    """Relabelled rewards from `<run_dir>/relabelled_rewards.npz` when it matches the dataset, else None."""
    k = len(dataset.task_names)
    cache = Path(run_dir) / RELABEL_CACHE
    if cache.is_file():
        try:
            with np.load(cache) as data:
                if str(data["key"]) == _cache_key(dataset):
                    return {(i, j): data[f"r_{i}_{j}"] for i in range(k) for j in range(k) if i != j}
        except Exception:  # a damaged cache is recomputed
            pass
    return None


def write_relabelling(dataset: Dataset, run_dir: Path, relabelled: dict[tuple[int, int], np.ndarray]) -> None:
    """Cache relabelled rewards in `<run_dir>/relabelled_rewards.npz` (atomically), so a resume skips the work."""
    cache = Path(run_dir) / RELABEL_CACHE
    tmp = cache.with_name(f".{cache.name}.tmp.npz")
    np.savez(tmp, key=np.array(_cache_key(dataset)), **{f"r_{i}_{j}": v for (i, j), v in relabelled.items()})
    tmp.replace(cache)


class OfflineData:
    """The run's transitions and its sampler: own rows per task plus shared rows under the sharing mode."""

    def __init__(self, config: TrainConfig):
        """Load and check the dataset; `build_store` then prepares the transitions (after resume checks)."""
        self.config = config
        self.sharing = config.offline.sharing
        self.spec, self.dataset = dataset_env_spec(config, with_state=self.sharing in RELABELLING_MODES)
        self.num_tasks = len(self.spec.task_names)
        self.store: TransitionStore | None = None
        self.uncached: dict[tuple[int, int], np.ndarray] | None = None  # relabelled rewards not yet in the cache
        self.rng = np.random.default_rng(config.seed)
        shared = config.offline.shared_per_task
        self.shared_per_task = config.batch_size_per_task if shared is None else shared
        self.reset_stats()

    def build_store(self, run_dir: Path) -> None:
        """All tasks' transitions with the relabelled rewards the sharing mode needs (read from `run_dir`'s
        cache when it has them; freshly computed ones wait in `uncached` for `write_cache`)."""
        relabel = self.sharing in RELABELLING_MODES and self.num_tasks > 1
        relabelled = cached_relabelling(self.dataset, run_dir) if relabel else None
        if relabel and relabelled is None:
            relabelled = self.uncached = relabel_dataset(self.dataset, progress=self.config.progress)
        tasks = [self.dataset.tasks[name] for name in self.dataset.task_names]
        self.store = TransitionStore.from_arrays(
            [t.obs for t in tasks],
            [t.action for t in tasks],
            [t.reward for t in tasks],
            [t.next_obs for t in tasks],
            [t.terminated for t in tasks],
            relabelled,
        )
        self.dataset.tasks = {}  # the store holds the transitions now; keep only the metadata

    def write_cache(self, run_dir: Path) -> None:
        """Cache relabelled rewards computed by `build_store` (once the run owns `run_dir`)."""
        if self.uncached is not None:
            write_relabelling(self.dataset, run_dir, self.uncached)
            self.uncached = None

    def obs_normalizer(self, device: Any) -> ObsNormalizer:
        """Per-dimension statistics of the observations of every trained task (call before `build_store`)."""
        return ObsNormalizer.from_arrays([self.dataset.tasks[name].obs for name in self.dataset.task_names], device)

    @property
    def describe(self) -> dict[str, Any]:
        """What identifies the data (recorded in env.json and checkpoints)."""
        return {
            "dataset": {"path": str(self.dataset.path), "dataset_id": self.dataset.dataset_id},
            "sharing": self.sharing,
        }

    def sample(self, task_q: QFunction | None, device: Any) -> Batch:
        """One batch under the sharing mode (CDS filters with `task_q`), with the sharing statistics accumulated."""
        batch, stats = make_batch(
            self.store,
            self.sharing,
            self.rng,
            self.config.batch_size_per_task,
            self.shared_per_task,
            q_fn=task_q,
            percentile=self.config.offline.cds_percentile,
            device=device,
        )
        self.shared += stats.shared
        self.candidates += stats.candidates
        if np.isfinite(stats.threshold).all():
            self.threshold += stats.threshold
            self.threshold_n += 1
        return batch

    def reset_stats(self) -> None:
        k = self.num_tasks
        self.shared, self.candidates, self.threshold, self.threshold_n = np.zeros(k), np.zeros(k), np.zeros(k), 0

    def log(self, log: Any, step: int) -> None:
        """sharing/fraction/<task>: shared / candidate rows since the last log; sharing/threshold (cds); then reset."""
        if self.sharing != "none" and self.candidates.sum() > 0:
            fraction = SharingStats(self.candidates, self.shared, self.threshold).fraction
            log.per_task("sharing/fraction", fraction, step)
            log.show(shared=f"{fraction.mean():.2f}")
            if self.threshold_n:
                log.per_task("sharing/threshold", self.threshold / self.threshold_n, step)
        self.reset_stats()

    def check_resumed(self, saved: dict[str, Any]) -> None:
        """A checkpoint resumes only on the same dataset with the same sharing mode."""
        dataset = saved["dataset"]
        if dataset["dataset_id"] != self.dataset.dataset_id:
            raise UserError(
                f"checkpoint was trained on dataset '{dataset['path']}' (id {dataset['dataset_id']}); "
                f"dataset={self.dataset.path} is a different dataset (id {self.dataset.dataset_id})"
            )
        if saved["sharing"] != self.sharing:
            raise UserError(
                f"checkpoint was trained with sharing={saved['sharing']}; this config has sharing={self.sharing}"
            )
