"""The offline dataset format: one HDF5 file, one group per task, written atomically, validated on load.

Layout (format ``mtrl-offline-dataset``, version 1)::

    /                       attrs: format, format_version, complete (True only in a finished file),
                            dataset_id (uuid), created, benchmark, task_names (JSON list), protocol (JSON),
                            goal_seed, obs_dim, act_dim, collection (JSON: how it was made), software (JSON)
    /tasks/<task name>/     attrs: task_index, transitions, episodes, source (JSON: policy, noise,
                            random_fraction, episodes, checkpoint), arm_qpos_index, arm_qvel_index
        obs (N, obs_dim) f4, action (N, act_dim) f4, reward (N,) f4, next_obs (N, obs_dim) f4,
        terminated, truncated, success (N,) bool    per-step flags (success: Meta-World's flag)
        episode, step, goal_index (N,) i4           episode number in the task, step in it, goal used
        qpos (N, nq) f8, qvel (N, nv) f8, mocap_pos (N, m, 3) f8, mocap_quat (N, m, 4) f8
                                                    MuJoCo state after the step (used for relabelling)
        goals (G,) bytes                            Meta-World's pickled goal ("task") data, by goal index

Every array is chunked, gzip-compressed and carries HDF5's Fletcher-32 checksum, so a flipped byte
in the data is detected when it is read. The metadata (every attribute of the root and of the task
groups) carries its own checksum, the root attribute ``metadata_sha256`` written when the file is
completed and verified on load, so a changed byte in the provenance never loads silently. Files written
before that checksum existed load with a one-line warning (their metadata cannot be verified).

A file is written under a temporary name in the target directory (``.<name>.<pid>.<random>.partial``)
and renamed only once it is complete, so an interrupted collection never leaves a file that loads as a
dataset; a collection removes the temporary files of the same output that a killed collection left
behind (those of processes no longer running).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import sys
import tempfile
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mtrl.errors import UserError

try:
    import h5py
except ImportError:  # pragma: no cover - h5py is a dependency of the offline features
    h5py = None

FORMAT = "mtrl-offline-dataset"
VERSION = 1
COLLECT_HINT = "collect it again with python collect.py"
CHECKSUM = "metadata_sha256"  # root attribute: SHA-256 of every other attribute of the file (metadata_digest)

# name -> (numpy dtype, number of dimensions)
ARRAY_FIELDS: dict[str, tuple[Any, int]] = {
    "obs": (np.float32, 2),
    "action": (np.float32, 2),
    "reward": (np.float32, 1),
    "next_obs": (np.float32, 2),
    "terminated": (np.bool_, 1),
    "truncated": (np.bool_, 1),
    "success": (np.bool_, 1),
    "episode": (np.int32, 1),
    "step": (np.int32, 1),
    "goal_index": (np.int32, 1),
    "qpos": (np.float64, 2),
    "qvel": (np.float64, 2),
    "mocap_pos": (np.float64, 3),
    "mocap_quat": (np.float64, 3),
}
TRANSITION_FIELDS = (
    "obs",
    "action",
    "reward",
    "next_obs",
    "terminated",
    "truncated",
    "success",
    "episode",
    "step",
    "goal_index",
)
STATE_FIELDS = ("qpos", "qvel", "mocap_pos", "mocap_quat")


def _require_h5py() -> None:
    if h5py is None:
        raise UserError("offline datasets need the h5py package; install it with pip install h5py")


@dataclass
class TaskData:
    """All transitions of one task, in episode order, plus how they were made."""

    name: str
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    goal_index: np.ndarray
    qpos: np.ndarray | None = None
    qvel: np.ndarray | None = None
    mocap_pos: np.ndarray | None = None
    mocap_quat: np.ndarray | None = None
    arm_qpos_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    arm_qvel_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    goals: list[bytes] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(np.unique(self.episode).size)

    @property
    def has_state(self) -> bool:
        return all(getattr(self, name) is not None for name in STATE_FIELDS)

    def episode_stats(self) -> dict[str, np.ndarray]:
        """Per episode: return, success (the flag was 1 at some step) and length."""
        _, inverse = np.unique(self.episode, return_inverse=True)
        count = int(inverse.max()) + 1 if len(inverse) else 0
        returns = np.bincount(inverse, weights=self.reward.astype(np.float64), minlength=count)
        success = np.zeros(count, bool)
        np.logical_or.at(success, inverse, self.success)
        lengths = np.bincount(inverse, minlength=count)
        return {"returns": returns, "success": success, "lengths": lengths}


@dataclass
class Dataset:
    """A loaded multi-task dataset: metadata plus one TaskData per task (in `task_names` order)."""

    path: Path
    dataset_id: str
    created: str
    benchmark: str
    task_names: list[str]
    protocol: dict[str, Any]
    goal_seed: int
    obs_dim: int
    act_dim: int
    collection: dict[str, Any]
    software: dict[str, Any]
    tasks: dict[str, TaskData]

    @property
    def num_transitions(self) -> int:
        return sum(len(t) for t in self.tasks.values())

    def select(self, task_names: Sequence[str]) -> "Dataset":
        """The same dataset restricted to (and ordered as) `task_names`; every name must be present."""
        check_task_set(self, task_names)
        return Dataset(
            **{
                **{f.name: getattr(self, f.name) for f in fields(self)},
                "task_names": list(task_names),
                "tasks": {t: self.tasks[t] for t in task_names},
            }
        )


def check_task_set(dataset: "Dataset", task_names: Sequence[str]) -> None:
    """UserError unless every task of the config is in the dataset."""
    missing = [t for t in task_names if t not in dataset.tasks]
    if missing:
        raise UserError(
            f"dataset '{dataset.path}' has no data for {', '.join(missing)}; it holds "
            f"{', '.join(dataset.task_names)} (collect those tasks or change env.tasks)"
        )


# ----------------------------------------------------------------------------------------- writing
class DatasetWriter:
    """Write a dataset task by task into a temporary file; `commit()` marks it complete and renames it.

    Used as a context manager, leaving the block without `commit()` (an error, Ctrl-C) deletes the
    temporary file, so the target path never holds a partial dataset.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        benchmark: str,
        task_names: Sequence[str],
        protocol: dict[str, Any],
        goal_seed: int,
        obs_dim: int,
        act_dim: int,
        collection: dict[str, Any],
        overwrite: bool = False,
        software: dict[str, Any] | None = None,
    ):
        _require_h5py()
        self.path = Path(path).expanduser()
        if self.path.suffix not in (".h5", ".hdf5"):
            raise UserError(f"output='{path}' is not allowed; give a file name ending in .h5 (an HDF5 file)")
        if self.path.exists() and not overwrite:
            raise UserError(f"output '{self.path}' already exists; choose another path or add overwrite=true")
        if self.path.is_dir():
            raise UserError(f"output '{self.path}' is a directory; give a file name ending in .h5")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.path)
        self.task_names = list(task_names)
        self.written: list[str] = []
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.{os.getpid()}.", suffix=".partial", dir=self.path.parent)
        os.close(fd)
        self.tmp_path = Path(tmp)
        self.file = h5py.File(self.tmp_path, "w")
        attrs = self.file.attrs
        attrs["format"] = FORMAT
        attrs["format_version"] = VERSION
        attrs["complete"] = False
        attrs["dataset_id"] = uuid.uuid4().hex
        attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        attrs["benchmark"] = benchmark
        attrs["task_names"] = json.dumps(self.task_names)
        attrs["protocol"] = json.dumps(protocol)
        attrs["goal_seed"] = int(goal_seed)
        attrs["obs_dim"] = int(obs_dim)
        attrs["act_dim"] = int(act_dim)
        attrs["collection"] = json.dumps(collection)
        attrs["software"] = json.dumps(software or _software_versions())
        self.file.create_group("tasks")
        self.committed = False

    @property
    def dataset_id(self) -> str:
        return str(self.file.attrs["dataset_id"])

    def add_task(self, data: TaskData) -> None:
        """Write one task's group (tasks may be added in any order, each once)."""
        if data.name not in self.task_names or data.name in self.written:
            raise ValueError(f"task {data.name!r} is not expected or already written")
        if len(data) == 0:
            raise UserError(f"task {data.name} has no transitions; collect at least one episode per task")
        group = self.file["tasks"].create_group(data.name)
        for name, (dtype, _ndim) in ARRAY_FIELDS.items():
            value = getattr(data, name)
            if value is None:
                raise ValueError(f"task {data.name}: field {name} is missing")
            group.create_dataset(
                name,
                data=np.asarray(value, dtype=dtype),
                chunks=True,
                compression="gzip",
                compression_opts=4,
                shuffle=True,
                fletcher32=True,
            )
        goals = group.create_dataset("goals", (len(data.goals),), dtype=h5py.vlen_dtype(np.dtype(np.uint8)))
        for index, goal in enumerate(data.goals):
            goals[index] = np.frombuffer(goal, dtype=np.uint8)
        group.attrs["task_index"] = self.task_names.index(data.name)
        group.attrs["transitions"] = len(data)
        group.attrs["episodes"] = data.num_episodes
        group.attrs["source"] = json.dumps(data.source)
        group.attrs["arm_qpos_index"] = np.asarray(data.arm_qpos_index, np.int64)
        group.attrs["arm_qvel_index"] = np.asarray(data.arm_qvel_index, np.int64)
        self.file.flush()
        self.written.append(data.name)

    def commit(self) -> Path:
        """Mark the file complete, flush it to disk and rename it to the target path."""
        missing = [t for t in self.task_names if t not in self.written]
        if missing:
            raise ValueError(f"cannot commit: tasks {missing} were not written")
        self.file.attrs["complete"] = True
        self.file.attrs[CHECKSUM] = metadata_digest(self.file)
        self.file.flush()
        self.file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with open(self.tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.tmp_path, self.path)
        try:  # make the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        self.committed = True
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (the target path is left as it was)."""
        try:
            if self.file.id.valid:
                self.file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete the temporary files (`.<name>.<pid>.*.partial`) that killed collections of `path` left behind.

    A file whose pid is a running process is kept (another collection of the same output may be writing it);
    files named without a pid (older versions) are always stale. Returns what was removed.
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?[^.]+\.partial$")
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.partial"):
        found = pattern.match(candidate.name)
        if found is None or (found.group(1) and _running(int(found.group(1)))):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _running(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def metadata_digest(file) -> str:
    """SHA-256 over every attribute of the root (but the checksum) and of each task group, in a canonical form."""
    groups = [("/", file)]
    if "tasks" in file:
        groups += [(f"tasks/{name}", file["tasks"][name]) for name in sorted(file["tasks"])]
    items = []
    for where, group in groups:
        for key in sorted(group.attrs):
            if where == "/" and key == CHECKSUM:
                continue
            value = group.attrs[key]
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else np.asarray(value).tolist()
            items.append([where, key, value])
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def _software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("mtrl", "metaworld", "mujoco", "gymnasium", "h5py", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def write_dataset(
    path: str | Path, dataset_meta: dict[str, Any], tasks: Iterable[TaskData], overwrite: bool = False
) -> Path:
    """Write a whole dataset at once (metadata keys as DatasetWriter's keyword arguments)."""
    with DatasetWriter(path, overwrite=overwrite, **dataset_meta) as writer:
        for task in tasks:
            writer.add_task(task)
        return writer.commit()


# ----------------------------------------------------------------------------------------- loading
def _attr(file, key: str, path: Path) -> Any:
    if key not in file.attrs:
        raise UserError(
            f"dataset '{path}' lacks the root attribute '{key}' (damaged or not written by mtrl); {COLLECT_HINT}"
        )
    value = file.attrs[key]
    return value.decode() if isinstance(value, bytes) else value


def _json_attr(file, key: str, path: Path) -> Any:
    try:
        return json.loads(_attr(file, key, path))
    except (TypeError, ValueError):
        raise UserError(f"dataset '{path}' has an unreadable '{key}' attribute; {COLLECT_HINT}") from None


def load_dataset(path: str | Path, tasks: Sequence[str] | None = None, with_state: bool = True) -> Dataset:
    """Open, validate and read a dataset; `tasks` restricts (and orders) it, `with_state` reads the MuJoCo state.
    `minari:<namespace>` reads the Minari datasets `python -m mtrl.data.minari export` wrote instead.

    Every problem is a one-line UserError: a missing or non-HDF5 file, a truncated file, another format
    or version, an interrupted collection, missing tasks or fields, inconsistent shapes, data that fails
    its checksum, non-finite values.
    """
    _require_h5py()
    if str(path).startswith("minari:"):  # a namespace of Minari datasets written by mtrl.data.minari
        from mtrl.data.minari import load_namespace

        return load_namespace(str(path).removeprefix("minari:"), tasks, with_state)
    if path is None or str(path) in ("", "None", "null"):
        raise UserError("no dataset given; set dataset=<path to an .h5 file> (create one with python collect.py)")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"dataset '{path}' does not exist; create it with python collect.py output={path}")
    if path.is_dir():
        found = sorted(path.glob("*.h5"))
        if len(found) != 1:
            raise UserError(f"dataset '{path}' is a directory with {len(found)} .h5 files; give the .h5 file itself")
        path = found[0]
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        reason = str(err).split("(", 1)[-1].rstrip(")").split(",")[0].strip() or type(err).__name__
        raise UserError(
            f"dataset '{path}' is not a readable HDF5 file ({reason}): truncated or corrupt; {COLLECT_HINT}"
        ) from None
    with file:
        try:
            return _read_file(file, path, tasks, with_state)
        except UserError:
            raise
        except Exception as err:  # damaged object headers surface as several h5py/decoding errors
            raise UserError(
                f"dataset '{path}' is corrupt: its metadata cannot be read ({_short(err)}); {COLLECT_HINT}"
            ) from None


def _read_file(file, path: Path, tasks: Sequence[str] | None, with_state: bool) -> Dataset:
    """load_dataset on an open file: the root checks, the tasks, then the metadata checksum."""
    fmt = file.attrs.get("format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != FORMAT:
        raise UserError(f"'{path}' is not an mtrl offline dataset (format attribute {fmt!r}; expected '{FORMAT}')")
    version = _attr(file, "format_version", path)
    if int(version) != VERSION:
        raise UserError(f"dataset '{path}' has format version {version}; this mtrl reads version {VERSION}")
    if not bool(_attr(file, "complete", path)):
        raise UserError(f"dataset '{path}' is incomplete (its collection was interrupted); {COLLECT_HINT}")
    task_names = _json_attr(file, "task_names", path)
    protocol = _json_attr(file, "protocol", path)
    collection = _json_attr(file, "collection", path)
    software = _json_attr(file, "software", path)
    obs_dim, act_dim = int(_attr(file, "obs_dim", path)), int(_attr(file, "act_dim", path))
    if not isinstance(task_names, list) or not task_names or not all(isinstance(t, str) for t in task_names):
        raise UserError(f"dataset '{path}' has an invalid task list {task_names!r}; {COLLECT_HINT}")
    meta = dict(
        path=path,
        dataset_id=str(_attr(file, "dataset_id", path)),
        created=str(_attr(file, "created", path)),
        benchmark=str(_attr(file, "benchmark", path)),
        task_names=list(task_names),
        protocol=protocol,
        goal_seed=int(_attr(file, "goal_seed", path)),
        obs_dim=obs_dim,
        act_dim=act_dim,
        collection=collection,
        software=software,
    )
    wanted = list(task_names) if tasks is None else list(tasks)
    probe = Dataset(**meta, tasks={t: None for t in task_names})  # type: ignore[arg-type]
    check_task_set(probe, wanted)
    read = TRANSITION_FIELDS + (STATE_FIELDS if with_state else ())
    loaded = {name: _read_task(file, path, name, obs_dim, act_dim, read) for name in wanted}
    _verify_metadata(file, path)
    return Dataset(**{**meta, "task_names": wanted}, tasks=loaded)


def _verify_metadata(file, path: Path) -> None:
    """Compare the metadata with its checksum (after the specific checks, which name what is wrong when they can).

    A file without a checksum (written before mtrl wrote one) loads with a warning line on stderr.
    """
    if CHECKSUM not in file.attrs:
        print(
            f"warning: dataset '{path}' has no metadata checksum (written before mtrl checked them); "
            f"its metadata is not verified",
            file=sys.stderr,
        )
        return
    if str(_attr(file, CHECKSUM, path)) != metadata_digest(file):
        raise UserError(
            f"dataset '{path}' fails its metadata checksum (its attributes were changed or damaged "
            f"after it was written, so its provenance cannot be trusted); {COLLECT_HINT}"
        )


def _read_arrays(group, path: Path, where: str, read: Sequence[str]) -> tuple[dict[str, np.ndarray | None], int]:
    """Every field of a task group checked for presence, rank, length and dtype; the `read` ones loaded."""
    n = None
    arrays: dict[str, np.ndarray | None] = {}
    for key, (dtype, ndim) in ARRAY_FIELDS.items():
        if key not in group:
            raise UserError(f"dataset '{path}' is missing '{where}/{key}'; {COLLECT_HINT}")
        dset = group[key]
        if dset.ndim != ndim or (n is not None and dset.shape[0] != n):
            raise UserError(
                f"dataset '{path}': '{where}/{key}' has shape {dset.shape}, inconsistent with the "
                f"other fields ({n} transitions); {COLLECT_HINT}"
            )
        n = dset.shape[0]
        arrays[key] = None
        if key in read:
            try:
                arrays[key] = dset[()]
            except Exception as err:  # fletcher32/gzip failures surface as OSError; damaged metadata as others
                raise UserError(
                    f"dataset '{path}' is corrupt: '{where}/{key}' cannot be read ({_short(err)}); {COLLECT_HINT}"
                ) from None
            if np.dtype(arrays[key].dtype) != np.dtype(dtype):
                raise UserError(
                    f"dataset '{path}': '{where}/{key}' has dtype {arrays[key].dtype}; expected {np.dtype(dtype)}"
                )
    return arrays, int(n)


def _read_task(file, path: Path, name: str, obs_dim: int, act_dim: int, read: Sequence[str]) -> TaskData:
    where = f"tasks/{name}"
    if where not in file:
        raise UserError(f"dataset '{path}' is missing the group '{where}' (damaged or edited file); {COLLECT_HINT}")
    group = file[where]
    arrays, n = _read_arrays(group, path, where, read)
    for key, dim in {"obs": obs_dim, "next_obs": obs_dim, "action": act_dim}.items():
        if group[key].shape[1] != dim:
            raise UserError(
                f"dataset '{path}': '{where}/{key}' has width {group[key].shape[1]}; the dataset declares {dim}"
            )
    declared = int(group.attrs.get("transitions", -1))
    if declared != n:
        raise UserError(f"dataset '{path}': task {name} declares {declared} transitions but holds {n}; {COLLECT_HINT}")
    for key in ("obs", "action", "reward", "next_obs"):
        if not np.isfinite(arrays[key]).all():
            raise UserError(f"dataset '{path}': '{where}/{key}' holds NaN or infinite values; {COLLECT_HINT}")
    try:
        goals = [np.asarray(g, np.uint8).tobytes() for g in group["goals"][()]] if "goals" in group else []
        source = json.loads(group.attrs.get("source", "{}"))
    except Exception as err:
        raise UserError(
            f"dataset '{path}' is corrupt: '{where}' metadata cannot be read ({_short(err)}); {COLLECT_HINT}"
        ) from None
    data = TaskData(
        name=name,
        **arrays,
        goals=goals,
        source=source,  # type: ignore[arg-type]
        arm_qpos_index=np.asarray(group.attrs.get("arm_qpos_index", []), np.int64),
        arm_qvel_index=np.asarray(group.attrs.get("arm_qvel_index", []), np.int64),
    )
    declared_eps = int(group.attrs.get("episodes", -1))
    if declared_eps != data.num_episodes:
        raise UserError(
            f"dataset '{path}': task {name} declares {declared_eps} episodes but holds "
            f"{data.num_episodes}; {COLLECT_HINT}"
        )
    return data


def _short(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."
