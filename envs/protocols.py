"""The two evaluation/training protocols: Meta-World+ (`metaworld`) and facebookresearch/mtrl (`mtrl`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mtrl.errors import UserError


@dataclass(frozen=True)
class Protocol:
    """How goals are drawn, how long an episode lasts and how many evaluation episodes a task gets."""

    name: str
    horizon: int  # steps per episode; reaching it is truncation, never termination
    goals_per_task: int  # how many of Meta-World's generated goals a task uses
    train_goals: str  # "random": a random goal each episode; "fixed": always goal 0
    eval_goals: str  # "cycle": episode k uses goal k mod goals_per_task; "fixed": goal 0
    eval_episodes: int  # default evaluation episodes per task
    reward_normalization: bool  # default of env.reward_normalization (training rewards / running std)

    def to_dict(self) -> dict:
        return asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    # Meta-World+: 50 training goals per task, one evaluation episode per goal, 500-step horizon.
    "metaworld": Protocol("metaworld", 500, 50, "random", "cycle", 50, False),
    # mtrl (CAGrad/FAMO/FairGrad MT10 tables): one fixed goal per task, 150-step episodes, training rewards
    # normalised by their running std (facebookresearch/mtrl's env builder).
    "mtrl": Protocol("mtrl", 150, 1, "fixed", "fixed", 1, True),
}


def get_protocol(name: str, horizon: int | None = None) -> Protocol:
    """Look a protocol up by name, optionally overriding its horizon (1..500)."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol '{name}'; choose one of: {', '.join(PROTOCOLS)}")
    proto = PROTOCOLS[name]
    if horizon is None:
        return proto
    if not 1 <= int(horizon) <= 500:
        raise UserError(f"env.horizon={horizon} is out of range; Meta-World episodes last 1..500 steps")
    return Protocol(**{**proto.to_dict(), "horizon": int(horizon)})
