"""The dry build: every component of a training run constructed from its config before anything is touched.

`train.py` (and every job of a sweep) runs it before Hydra creates the run directory, so a bad value of any
component (encoder, networks, balancer, curriculum, replay, env spec, dataset) ends the command with one line
and leaves an existing run untouched, `overwrite=true` included. The networks are built on the CPU whatever
the device: their construction is what checks their options, and it takes milliseconds.
"""

from __future__ import annotations

import dataclasses

import torch

from envs import EnvSpec, build_env_spec
from envs.tasks import ACT_DIM, OBS_DIM, resolve_tasks
from mtrl import balancers
from mtrl.agents.factory import construct_agent
from mtrl.config.schema import TrainConfig
from mtrl.curriculum.driver import CurriculumDriver
from mtrl.runtime import pick_device
from mtrl.train.replay import replay_device


def dry_build(config: TrainConfig) -> EnvSpec:
    """Construct each component of the run `config` describes (raising its one-line UserError); writes nothing.

    Returns the env spec (tasks, goals) the run will use.
    """
    pick_device(config.device)
    num_tasks = len(resolve_tasks(config.env.tasks)[1])
    balancers.make(config.balancer.name, num_tasks, **config.balancer.options)  # cheap checks first: a refused
    CurriculumDriver.from_config(config.curriculum, num_tasks)  # value ends the command before the slow parts
    if config.offline_mode:
        from mtrl.data.offline import dataset_env_spec

        spec, dataset = dataset_env_spec(config, with_state=False)
        dims = (dataset.obs_dim, dataset.act_dim)
    else:
        from mtrl.train.trainer import check_can_learn

        spec = build_env_spec(dataclasses.asdict(config.env), config.seed)
        check_can_learn(config, spec)
        replay_device(config, torch.device("cpu"), 0)
        dims = (OBS_DIM, ACT_DIM)
    construct_agent(config, spec.task_names, *dims, torch.device("cpu"))
    return spec


__all__ = ["dry_build"]
