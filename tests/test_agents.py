"""Agents chosen by config: behaviour cloning learns expert data, online and offline checkpoints stay apart,
and the typed configs reject bad values with one line."""

from __future__ import annotations

import pytest

from mtrl.agents.registry import AGENTS
from mtrl.config.parse import parse_collect, parse_train
from mtrl.data.collect import collect
from mtrl.errors import UserError
from mtrl.io import checkpoint
from mtrl.train.offline_trainer import OfflineTrainer
from mtrl.train.trainer import Trainer
from tests.conftest import assert_one_line_error, compose_config, run_cli, smoke_run_config

EASY = "[reach-v3,drawer-close-v3]"  # the smoke experiment's tasks


@pytest.fixture(scope="module")
def expert_dataset(tmp_path_factory):
    """Ten scripted-expert episodes (noise 0.1) of two easy tasks under the mtrl protocol."""
    output = tmp_path_factory.mktemp("data") / "easy.h5"
    return collect(
        parse_collect(
            compose_config(
                "collect",
                [
                    f"env.tasks={EASY}",
                    "env.protocol=mtrl",
                    "episodes_per_task=10",
                    "noise=0.1",
                    "progress=false",
                    f"output={output}",
                ],
            )
        )
    )


def test_every_agent_is_registered_with_its_mode():
    assert {name: cls.mode for name, cls in AGENTS.items()} == {"sac": "online", "cql": "offline", "bc": "offline"}


def test_behaviour_cloning_learns_expert_data_of_two_easy_tasks(tmp_path, expert_dataset):
    run_dir = tmp_path / "bc"
    config = smoke_run_config(
        run_dir,
        "mode=offline",
        "agent=bc",
        f"dataset={expert_dataset}",
        "total_steps=1500",
        "eval_every=0",
        "checkpoint_every=0",
        "agent.hidden_sizes=[64,64]",
        "batch_size_per_task=64",
    )
    result = OfflineTrainer(config, run_dir).run()
    assert {t.task: t.success_rate for t in result.tasks} == {"reach-v3": 1.0, "drawer-close-v3": 1.0}
    _, state = checkpoint.load(run_dir)
    assert state["mode"] == "offline" and state["config"]["agent"]["name"] == "bc"


def test_online_and_offline_checkpoints_reject_each_other(tmp_path, expert_dataset):
    online, offline = tmp_path / "online", tmp_path / "offline"
    Trainer(smoke_run_config(online, "total_steps=300", "eval_every=0"), online).run()
    OfflineTrainer(
        smoke_run_config(offline, "mode=offline", f"dataset={expert_dataset}", "total_steps=4", "eval_every=0"), offline
    ).run()
    with pytest.raises(UserError, match="is from an online run; mode=offline resumes offline runs only"):
        OfflineTrainer(
            smoke_run_config(online, "mode=offline", f"dataset={expert_dataset}", "total_steps=8", f"resume={online}"),
            online,
        )
    with pytest.raises(UserError, match="is from an offline run; mode=online resumes online runs only"):
        Trainer(smoke_run_config(offline, "total_steps=600", f"resume={offline}"), offline)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["agent.init=he"], "agent.init='he' is not allowed; expected one of default, xavier"),
        (["agent.log_std_bounds=sigmoid"], "agent.log_std_bounds='sigmoid'"),
        (["agent.adam_betas=[0.9]"], "agent.adam_betas=[0.9] is not allowed"),
        (["agent.critic_target_every=0"], "agent.critic_target_every=0 is not allowed; expected an integer >= 1"),
        (["env.envs_per_task=0"], "env.envs_per_task=0 is not allowed"),
        (["compile=fast"], "compile='fast' is not allowed; expected one of none, default, max"),
        (["mode=offline", "agent=bc", "agent.loss=l1", "dataset=x.h5"], "agent.loss='l1' is not allowed"),
        (["mode=offline", "agent.cql_alpha=-1", "dataset=x.h5"], "agent.cql_alpha=-1 is not allowed"),
        (["+agent.gama=0.9"], "unknown option agent.gama (did you mean agent.gamma?)"),
        (["+balancer.cc=0.4", "balancer=cagrad"], "unknown option balancer.cc (did you mean balancer.c?)"),
    ],
)
def test_typed_config_errors_are_one_line(tmp_path, overrides, message):
    with pytest.raises(UserError, match=None) as err:
        parse_train(compose_config("train", ["experiment=smoke", f"run_dir={tmp_path}", *overrides]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_typed_config_errors_reach_the_command_line_as_one_line(tmp_path):
    assert_one_line_error(
        run_cli("train.py", "experiment=smoke", f"run_dir={tmp_path / 'r'}", "agent.init=he"),
        "agent.init='he'",
        "default, xavier",
    )
    assert_one_line_error(
        run_cli("train.py", "experiment=smoke", f"run_dir={tmp_path / 'r'}", "total_step=5"),
        "total_step",
        "did you mean total_steps?",
    )
