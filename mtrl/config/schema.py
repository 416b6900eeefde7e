"""The typed configuration of a run: one dataclass per config group, each checking its values on construction.

`mtrl.config.parse` builds these from the composed Hydra config (or a checkpoint's saved config); nothing
below the command line sees a `DictConfig`. Every check raises the same one-line `UserError`
(`mtrl.checks`). Agent hyperparameters are the agents' own dataclasses (`mtrl.agents.<name>.Config`).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

from mtrl import checks

MODES = ("online", "offline")
SHARING_MODES = ("none", "all", "cds", "cds_zero")
COMPILE_MODES = ("none", "default", "max", "auto")


def _policy_name(value: Any) -> str | None:
    """`agent` (a checkpoint's policy; `sac` is the older name) or `scripted` (Meta-World's experts)."""
    if value is None:
        return None
    return "agent" if value == "sac" else checks.choice("policy", value, ("agent", "scripted"))


def _optional_int(key: str, value: Any, low: int) -> int | None:
    return None if value is None else checks.integer(key, value, low)


@dataclass
class EnvConfig:
    """Which tasks and how they are run (the `env` group); resolved into an `envs.EnvSpec` by the trainer."""

    tasks: str | list[str] = "mt10"
    protocol: str = "metaworld"
    horizon: int | None = None
    goal_seed: int | None = None
    vectorization: str = "auto"
    workers: int | str = "auto"
    envs_per_task: int = 1
    slots: int | None = None
    reward_normalization: bool | None = None
    reward_version: str = "v2"  # Meta-World's reward functions: v2, or v1 (the -v1 tasks the mtrl tables ran)
    fixed_goal: str = "first"  # env.protocol=mtrl: goal 0, or seeded (one drawn per task from the goal seed, mtenv)

    def __post_init__(self) -> None:
        if self.tasks is None:
            raise checks.fail("env.tasks", None, "mt10, mt25, mt50, mt1-<task> or a list of task names")
        if not isinstance(self.tasks, str):
            self.tasks = [str(t) for t in self.tasks]
        self.protocol = checks.choice("env.protocol", self.protocol, ("metaworld", "mtrl"))
        self.horizon = None if self.horizon is None else checks.integer("env.horizon", self.horizon, 1, 500)
        self.goal_seed = _optional_int("env.goal_seed", self.goal_seed, 0)
        self.vectorization = checks.choice("env.vectorization", self.vectorization, ("auto", "sync", "async"))
        if self.workers != "auto":
            self.workers = checks.integer("env.workers", self.workers, 1)
        self.envs_per_task = checks.integer("env.envs_per_task", self.envs_per_task, 1)
        self.slots = _optional_int("env.slots", self.slots, 1)
        if self.reward_normalization is not None:
            checks.flag("env.reward_normalization", self.reward_normalization)
        self.reward_version = checks.choice("env.reward_version", self.reward_version, ("v2", "v1"))
        self.fixed_goal = checks.choice("env.fixed_goal", self.fixed_goal, ("first", "seeded"))


@dataclass
class EncoderConfig:
    """A task-conditioned network family and its options (`encoder`, or `actor.encoder` / `critic.encoder`)."""

    name: str = "onehot"
    options: dict[str, Any] = field(default_factory=dict)
    key: str = field(default="encoder", compare=False)  # where its options are set: encoder or <net>.encoder_options

    def __post_init__(self) -> None:
        from mtrl import networks

        self.name = checks.choice(self.key.replace("_options", ""), self.name, networks.available())
        checks.unknown_keys(f"{self.key}.", list(self.options), list(networks.options_of(self.name)))


@dataclass
class BalancerConfig:
    """How per-task losses combine (`balancer` group): a method, its options, and the networks it balances."""

    name: str = "uniform"
    apply_to: list[str] | None = None  # None: the method's own default (mtrl.balancers.Balancer.default_apply_to)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from mtrl import balancers

        self.name = checks.choice("balancer", self.name, balancers.available())
        if self.apply_to is None:  # the method's default; a composition takes its loss weighting's when narrower
            weighting = balancers.registry.REGISTRY.get(str(self.options.get("loss_weighting")))
            owners = [balancers.registry.REGISTRY[self.name], *([weighting] if weighting else [])]
            self.apply_to = list(min((cls.default_apply_to for cls in owners), key=len))
        if isinstance(self.apply_to, str):
            self.apply_to = [self.apply_to]
        self.apply_to = [
            checks.choice("balancer.apply_to", part, ("critic", "actor", "alpha")) for part in self.apply_to
        ]
        checks.unknown_keys("balancer.", list(self.options), balancers.options(self.name))


@dataclass
class CurriculumConfig:
    """Which tasks to train on and collect (`curriculum` group)."""

    name: str = "none"
    drives: str | None = None  # None: the curriculum's own default (mtrl.curriculum.Curriculum.default_drives)
    source: str = "train"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from mtrl import curriculum

        self.name = checks.choice("curriculum", self.name, ["none", *curriculum.available()])
        if self.drives is None:
            self.drives = "replay" if self.name == "none" else curriculum.registry.REGISTRY[self.name].default_drives
        self.drives = checks.choice("curriculum.drives", self.drives, ("replay", "env", "both"))
        self.source = checks.choice("curriculum.source", self.source, ("train", "eval"))
        if self.name == "none" and self.options:
            raise checks.fail("curriculum", "none", f"no options with curriculum=none (got {', '.join(self.options)})")
        if self.name != "none":
            checks.unknown_keys("curriculum.", list(self.options), curriculum.registry.options_of(self.name))


@dataclass
class OfflineConfig:
    """Offline training data (`mode=offline`): the dataset and how tasks share it."""

    dataset: str | None = None
    sharing: str = "none"
    cds_percentile: float = 50.0
    shared_per_task: int | None = None  # None: batch_size_per_task
    normalize_obs: bool = True  # standardise observations with the dataset's mean and std (mtrl/agents/obs_norm.py)

    def __post_init__(self) -> None:
        self.sharing = checks.choice("sharing", self.sharing, SHARING_MODES)
        self.normalize_obs = checks.flag("offline.normalize_obs", self.normalize_obs)
        self.cds_percentile = checks.number("offline.cds_percentile", self.cds_percentile, 0, 100)
        self.shared_per_task = _optional_int("offline.shared_per_task", self.shared_per_task, 0)


@dataclass
class DiagnosticsConfig:
    """Optional measurements during training (cost extra compute)."""

    affinity_every: int = 0  # updates between inter-task affinity measurements (0 = off)
    conflict_every: int = 50_000  # steps (log_every's unit) between per-task gradient-conflict measurements (0 = off)

    def __post_init__(self) -> None:
        self.affinity_every = checks.integer("diagnostics.affinity_every", self.affinity_every, 0)
        self.conflict_every = checks.integer("diagnostics.conflict_every", self.conflict_every, 0)


#: How a batch's rows are drawn: `per_task` rows of every task, or uniformly from all tasks' stored transitions.
BATCH_SAMPLING = ("per_task", "uniform")


@dataclass
class TrainConfig:
    """Everything `train.py` runs with. Step counts are env steps over all tasks online, updates offline."""

    env: EnvConfig
    agent: Any  # the agent's own config dataclass (e.g. mtrl.agents.sac.SACConfig); `agent.name` picks it
    actor_encoder: EncoderConfig
    critic_encoder: EncoderConfig
    balancer: BalancerConfig
    curriculum: CurriculumConfig
    offline: OfflineConfig
    diagnostics: DiagnosticsConfig
    seed: int = 1
    mode: str = "online"
    device: str = "auto"
    torch_threads: int = 0
    compile: str = "auto"
    total_steps: int = 200_000
    warmup_steps: int = 15_000
    updates_per_step: float = 1.0
    batch_size_per_task: int = 128
    batch_sampling: str = "per_task"  # per_task: batch_size_per_task rows of every task; uniform: rows of the pool
    batch_size: int | None = None  # rows per batch with batch_sampling=uniform; None: batch_size_per_task x tasks
    warmup_burst_updates: int = 0  # updates run at once when learning starts (facebookresearch/mtrl: 1500)
    horizon_next_obs: str = "final"  # stored next observation at the time limit: final, or reset (mtrl's)
    replay_capacity: int = 1_000_000
    replay_device: str = "auto"
    eval_every: int = 50_000
    eval_episodes: int | None = None
    eval_returns: bool | None = None  # None: full episodes with returns under mtrl, stop at success under metaworld
    log_every: int = 5_000
    checkpoint_every: int = 50_000
    keep_checkpoints: int = 3
    save_replay: bool = False
    resume: str | None = None
    run_dir: str | None = None
    overwrite: bool = False
    progress: bool = True
    logger: str = "tensorboard"  # where scalars go: tensorboard, wandb (the wandb extra) or both
    note: str | None = None  # a preset's word to the user before the run starts (what to expect of it)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the resolved config as composed (saved)

    def __post_init__(self) -> None:
        self.seed = checks.integer("seed", self.seed, 0)
        self.mode = checks.choice("mode", self.mode, MODES)
        self.torch_threads = checks.integer("torch_threads", self.torch_threads, 0)
        self.compile = checks.choice("compile", self.compile, COMPILE_MODES)
        if not isinstance(self.replay_device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.replay_device):
            raise checks.fail("replay_device", self.replay_device, "auto, cpu, cuda or cuda:<index>")
        self.total_steps = checks.integer("total_steps", self.total_steps, 1)
        self.warmup_steps = checks.integer("warmup_steps", self.warmup_steps, 0)
        self.updates_per_step = checks.number("updates_per_step", self.updates_per_step, 0)
        self.batch_size_per_task = checks.integer("batch_size_per_task", self.batch_size_per_task, 1)
        self.batch_sampling = checks.choice("batch_sampling", self.batch_sampling, BATCH_SAMPLING)
        if self.batch_size is not None:
            if self.batch_sampling != "uniform":
                raise checks.fail("batch_size", self.batch_size, "null unless batch_sampling=uniform")
            self.batch_size = checks.integer("batch_size", self.batch_size, 1)
        sets_rows = self.curriculum.name != "none" and self.curriculum.drives != "env"
        if self.batch_sampling == "uniform" and (self.offline_mode or sets_rows):
            raise checks.fail(
                "batch_sampling", "uniform", "per_task in offline runs and with a curriculum that sets batch rows"
            )
        self.warmup_burst_updates = checks.integer("warmup_burst_updates", self.warmup_burst_updates, 0)
        self.horizon_next_obs = checks.choice("horizon_next_obs", self.horizon_next_obs, ("final", "reset"))
        self.replay_capacity = checks.integer("replay_capacity", self.replay_capacity, 1)
        self.eval_every = checks.integer("eval_every", self.eval_every, 0)
        self.eval_episodes = _optional_int("eval_episodes", self.eval_episodes, 1)
        self.log_every = checks.integer("log_every", self.log_every, 1)
        self.checkpoint_every = checks.integer("checkpoint_every", self.checkpoint_every, 0)
        self.keep_checkpoints = checks.integer("keep_checkpoints", self.keep_checkpoints, 1)
        for key in ("save_replay", "overwrite", "progress"):
            checks.flag(key, getattr(self, key))
        self.logger = checks.choice("logger", self.logger, ("tensorboard", "wandb", "both"))
        if self.logger != "tensorboard" and importlib.util.find_spec("wandb") is None:
            raise checks.fail(
                "logger", self.logger, "tensorboard unless wandb is installed (pip install -e '.[wandb]')"
            )
        if self.eval_returns is not None:
            checks.flag("eval_returns", self.eval_returns)

    @property
    def offline_mode(self) -> bool:
        return self.mode == "offline"


@dataclass
class VideoConfig:
    """Evaluation videos (`record=true`): one file per task of its first `episodes` episodes."""

    record: bool = False
    directory: str | None = None  # None: <output stem>_videos beside the evaluation JSON
    episodes: int = 1
    format: str = "mp4"
    fps: int = 30

    def __post_init__(self) -> None:
        checks.flag("record", self.record)
        self.episodes = checks.integer("video_episodes", self.episodes, 1)
        self.format = checks.choice("video_format", self.format, ("mp4", "gif"))
        self.fps = checks.integer("video_fps", self.fps, 1)


@dataclass
class EvaluateConfig:
    """What `evaluate.py` runs: a checkpoint's policy or the scripted experts, on which envs."""

    checkpoint: str | None = None
    which: str = "latest"  # with a run directory: its latest or its best checkpoint
    policy: str | None = None  # None: the checkpoint's agent when a checkpoint is given
    env: EnvConfig | None = None  # None: the checkpoint's tasks
    episodes_per_task: int | None = None
    protocol: str | None = None
    seed: int = 0
    deterministic: bool = True
    returns: bool | None = None  # full-length episodes with returns; None: under mtrl yes, under metaworld no
    output: str | None = None
    device: str = "auto"
    progress: bool = True
    video: VideoConfig = field(default_factory=VideoConfig)

    def __post_init__(self) -> None:
        self.which = checks.choice("which", self.which, ("latest", "best"))
        self.policy = _policy_name(self.policy)
        self.episodes_per_task = _optional_int("episodes_per_task", self.episodes_per_task, 1)
        if self.protocol is not None:
            self.protocol = checks.choice("protocol", self.protocol, ("metaworld", "mtrl"))
        self.seed = checks.integer("seed", self.seed, 0)
        for key in ("deterministic", "progress"):
            checks.flag(key, getattr(self, key))
        if self.returns is not None:
            checks.flag("returns", self.returns)


@dataclass
class CollectConfig:
    """What `collect.py` runs: which policy collects how many episodes of which tasks, with what noise."""

    env: EnvConfig
    output: str | None = None
    overwrite: bool = False
    policy: str | None = None  # scripted or agent; None: agent when a checkpoint is given, else scripted
    checkpoint: str | None = None
    deterministic: bool = True
    episodes_per_task: int = 10
    noise: float = 0.1
    random_fraction: float = 0.0
    per_task: dict[str, dict[str, Any]] | None = None  # None: no per-task changes
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.output:
            raise checks.fail("output", self.output, "the .h5 dataset file to write (output=<path.h5>)")
        self.policy = _policy_name(self.policy)
        self.episodes_per_task = checks.integer("episodes_per_task", self.episodes_per_task, 1)
        self.noise = checks.number("noise", self.noise, 0)
        self.random_fraction = checks.number("random_fraction", self.random_fraction, 0, 1)
        self.seed = checks.integer("seed", self.seed, 0)
        for key in ("overwrite", "deterministic", "progress"):
            checks.flag(key, getattr(self, key))
        self.per_task = {} if self.per_task is None else self.per_task
        if not isinstance(self.per_task, dict):
            raise checks.fail("per_task", self.per_task, "a mapping such as per_task={reach-v3:{noise:1.0,episodes:3}}")


__all__ = [
    "EnvConfig",
    "EncoderConfig",
    "BalancerConfig",
    "CurriculumConfig",
    "OfflineConfig",
    "DiagnosticsConfig",
    "TrainConfig",
    "VideoConfig",
    "EvaluateConfig",
    "CollectConfig",
]
