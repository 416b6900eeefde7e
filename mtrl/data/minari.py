"""Minari interop: export an mtrl dataset as one Minari dataset per task, and read such a namespace back.

    python -m mtrl.data.minari export DATA.h5 --namespace NS [--overwrite]
    python train.py mode=offline dataset=minari:NS ...          # train from the namespace

Each task becomes `NS/<task>-v0` (the task name without its `-v3` suffix) in Minari's local store
(`MINARI_DATASETS_PATH`, default `~/.minari/datasets`): its episodes with observations (one more than
actions: the last next observation closes the episode), actions, rewards, terminations and truncations; the
per-step success flag, step index, goal index and MuJoCo state (what relabelling needs) as infos; and the
dataset's and the task's provenance (how it was collected, goals, protocol, software, the HDF5 dataset's id)
as JSON in the Minari metadata under `mtrl`. Reading the namespace rebuilds exactly the dataset the HDF5 file
holds, so training from either is the same run. HDF5 stays mtrl's native format.
"""

from __future__ import annotations

import argparse
import base64
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtrl.data.dataset import Dataset, TaskData, check_task_set, load_dataset
from mtrl.errors import UserError

PREFIX = "minari:"
META_KEY = "mtrl"
STEP_INFOS = ("success", "step", "goal_index", "qpos", "qvel", "mocap_pos", "mocap_quat")


def _minari():
    try:
        import minari
    except ImportError:
        raise UserError("Minari datasets need the minari extra: pip install -e '.[minari]'") from None
    return minari


def dataset_name(namespace: str, task: str) -> str:
    """`NS/<task>-v0`: Minari's `namespace/name-version` id of one task (reach-v3 -> NS/reach-v0)."""
    return f"{namespace}/{task.removesuffix('-v3')}-v0"


def episodes_of(task: TaskData) -> list[Any]:
    """The task's transitions as Minari episode buffers (in episode order)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = []
    for number in np.unique(task.episode):
        rows = np.flatnonzero(task.episode == number)
        if not np.array_equal(task.next_obs[rows[:-1]], task.obs[rows[1:]]):
            raise UserError(f"task {task.name}, episode {number}: next observations do not chain; cannot export it")
        infos = {key: getattr(task, key)[rows] for key in STEP_INFOS if getattr(task, key) is not None}
        buffers.append(
            EpisodeBuffer(
                id=int(number),
                observations=np.concatenate([task.obs[rows], task.next_obs[rows[-1:]]]),
                actions=task.action[rows],
                rewards=task.reward[rows].tolist(),
                terminations=task.terminated[rows].tolist(),
                truncations=task.truncated[rows].tolist(),
                infos=infos,
            )
        )
    return buffers


def provenance(dataset: Dataset, task: TaskData) -> dict[str, Any]:
    """What the Minari metadata keeps of the HDF5 dataset and of one task (JSON-serialisable)."""
    return {
        "dataset_id": dataset.dataset_id,
        "created": dataset.created,
        "benchmark": dataset.benchmark,
        "task_names": dataset.task_names,
        "protocol": dataset.protocol,
        "goal_seed": dataset.goal_seed,
        "obs_dim": dataset.obs_dim,
        "act_dim": dataset.act_dim,
        "collection": dataset.collection,
        "software": dataset.software,
        "task": task.name,
        "source": task.source,
        "goals": [base64.b64encode(goal).decode() for goal in task.goals],
        "arm_qpos_index": task.arm_qpos_index.tolist(),
        "arm_qvel_index": task.arm_qvel_index.tolist(),
    }


def export(path: str | Path, namespace: str, overwrite: bool = False) -> list[str]:
    """Write one Minari dataset per task of the HDF5 dataset at `path`; returns their ids."""
    import gymnasium as gym

    minari = _minari()
    dataset = load_dataset(path)
    existing = set(minari.list_local_datasets(prefix=namespace))
    ids = [dataset_name(namespace, task) for task in dataset.task_names]
    taken = [name for name in ids if name in existing]
    if taken and not overwrite:
        raise UserError(f"Minari dataset {taken[0]} already exists; choose another --namespace or add --overwrite")
    obs_space = gym.spaces.Box(-np.inf, np.inf, (dataset.obs_dim,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (dataset.act_dim,), np.float32)
    for name, task in zip(ids, dataset.tasks.values()):
        if name in existing:
            minari.delete_dataset(name)
        with warnings.catch_warnings():  # Minari asks for authors and env specs an exported dataset has none of
            warnings.simplefilter("ignore", UserWarning)
            created = minari.create_dataset_from_buffers(
                dataset_id=name,
                buffer=episodes_of(task),
                observation_space=obs_space,
                action_space=act_space,
                algorithm_name=str(task.source.get("policy", "unknown")),
                description=f"mtrl dataset {dataset.dataset_id}, task {task.name} ({path})",
                data_format="hdf5",
            )
        created.storage.update_metadata({META_KEY: json.dumps(provenance(dataset, task))})
    return ids


def load_namespace(namespace: str, tasks: Sequence[str] | None = None, with_state: bool = True) -> Dataset:
    """The mtrl Dataset a namespace written by `export` holds (`tasks` restricts and orders it)."""
    minari = _minari()
    found = sorted(minari.list_local_datasets(prefix=f"{namespace}/"))
    if not found:
        raise UserError(
            f"no Minari datasets under namespace '{namespace}'; export one with "
            f"python -m mtrl.data.minari export <data.h5> --namespace {namespace}"
        )
    loaded: dict[str, TaskData] = {}
    meta: dict[str, Any] = {}
    for name in found:
        data = minari.load_dataset(name)
        raw = data.storage.metadata.get(META_KEY)
        if raw is None:
            raise UserError(f"Minari dataset {name} was not written by mtrl (no '{META_KEY}' metadata)")
        info = json.loads(raw)
        meta = meta or info
        loaded[info["task"]] = task_from_episodes(info, list(data.iterate_episodes()), with_state)
    dataset = Dataset(
        path=Path(PREFIX + namespace),
        dataset_id=meta["dataset_id"],
        created=meta["created"],
        benchmark=meta["benchmark"],
        task_names=[t for t in meta["task_names"] if t in loaded],
        protocol=meta["protocol"],
        goal_seed=int(meta["goal_seed"]),
        obs_dim=int(meta["obs_dim"]),
        act_dim=int(meta["act_dim"]),
        collection=meta["collection"],
        software=meta["software"],
        tasks={t: loaded[t] for t in meta["task_names"] if t in loaded},
    )
    if tasks is None:
        return dataset
    check_task_set(dataset, tasks)
    return dataset.select(tasks)


def task_from_episodes(info: dict[str, Any], episodes: list[Any], with_state: bool) -> TaskData:
    """One task's TaskData from its Minari episodes and its provenance."""

    def joined(values: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(values).astype(dtype, copy=False)

    def step_info(key: str, dtype: Any) -> np.ndarray:
        return joined([np.asarray(ep.infos[key]) for ep in episodes], dtype)

    state = {key: step_info(key, np.float64) for key in STEP_INFOS[3:]} if with_state else {}
    return TaskData(
        name=info["task"],
        obs=joined([ep.observations[:-1] for ep in episodes], np.float32),
        action=joined([ep.actions for ep in episodes], np.float32),
        reward=joined([ep.rewards for ep in episodes], np.float32),
        next_obs=joined([ep.observations[1:] for ep in episodes], np.float32),
        terminated=joined([ep.terminations for ep in episodes], np.bool_),
        truncated=joined([ep.truncations for ep in episodes], np.bool_),
        success=step_info("success", np.bool_),
        episode=joined([np.full(len(ep.actions), ep.id) for ep in episodes], np.int32),
        step=step_info("step", np.int32),
        goal_index=step_info("goal_index", np.int32),
        **state,
        arm_qpos_index=np.asarray(info["arm_qpos_index"], np.int64),
        arm_qvel_index=np.asarray(info["arm_qvel_index"], np.int64),
        goals=[base64.b64decode(goal) for goal in info["goals"]],
        source=info["source"],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mtrl.data.minari", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    out = sub.add_parser("export", help="write one Minari dataset per task of an mtrl HDF5 dataset")
    out.add_argument("dataset", help="the mtrl .h5 dataset")
    out.add_argument("--namespace", required=True, help="Minari namespace: tasks become NS/<task>-v0")
    out.add_argument("--overwrite", action="store_true", help="replace datasets of the namespace that exist")
    args = parser.parse_args(argv)
    try:
        ids = export(args.dataset, args.namespace, args.overwrite)
    except UserError as err:
        parser.exit(2, f"error: {err}\n")
    for name in ids:
        print(f"wrote Minari dataset {name}")
    print(f"train from them with: python train.py mode=offline dataset={PREFIX}{args.namespace} ...")


if __name__ == "__main__":
    main()
