"""Everything Meta-World specific: task lists, protocols, multi-task vector envs (sync or worker processes),
reward normalisation, scripted experts."""

from envs.protocols import PROTOCOLS, Protocol, get_protocol
from envs.spec import EnvSpec, build_env_spec
from envs.tasks import resolve_tasks
from envs.vector import EpisodeResult, MultiTaskVectorEnv, StepResult, make_vector_env
from envs.workers import WorkerError

__all__ = [
    "EnvSpec",
    "build_env_spec",
    "PROTOCOLS",
    "Protocol",
    "get_protocol",
    "resolve_tasks",
    "EpisodeResult",
    "MultiTaskVectorEnv",
    "StepResult",
    "make_vector_env",
    "WorkerError",
]
