"""Offline smoke runs on a tiny real Meta-World dataset: train, checkpoint, resume, evaluate; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtrl.config.parse import parse_collect, parse_evaluate
from mtrl.data.collect import collect
from mtrl.data.dataset import load_dataset
from mtrl.data.offline import RELABEL_CACHE
from mtrl.errors import UserError
from mtrl.eval.evaluate_run import evaluate_from_config
from mtrl.io import checkpoint
from mtrl.train.offline_trainer import OfflineTrainer
from tests.conftest import assert_one_line_error, collect_smoke_data, compose_config, run_cli, smoke_run_config

TASKS = ["reach-v3", "drawer-close-v3"]  # the smoke experiment's tasks


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    """Expert reach-v3 data, poor drawer-close-v3 data, 20-step episodes, mtrl protocol."""
    return collect_smoke_data(
        tmp_path_factory.mktemp("data") / "tiny.h5",
        "per_task={drawer-close-v3:{noise:1.0,random_fraction:0.5,episodes:1}}",
    )


def offline_args(dataset, *extra):
    return ["mode=offline", f"dataset={dataset}", "env.horizon=20", "log_every=5", *extra]


def offline_config(run_dir, dataset, *extra):
    return smoke_run_config(run_dir, *offline_args(dataset, *extra))


def test_offline_smoke_trains_checkpoints_resumes_and_evaluates(tmp_path, dataset_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "experiment=smoke",
        f"run_dir={run_dir}",
        "progress=false",
        *offline_args(dataset_path, "sharing=cds", "total_steps=20", "checkpoint_every=10", "eval_every=20"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "mean over tasks" in proc.stdout
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["step_000000000010.pt", "step_000000000020.pt"]
    assert (run_dir / "eval" / "step_000000000020.json").is_file() and (run_dir / RELABEL_CACHE).is_file()
    _, state = checkpoint.load(run_dir)
    assert state["mode"] == "offline" and state["sharing"] == "cds" and state["env"]["tasks"] == TASKS
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for task in TASKS:
        assert {
            f"sharing/fraction/{task}",
            f"sharing/threshold/{task}",
            f"cql/penalty/{task}",
            f"cql/critic_loss/{task}",
            f"eval/success/{task}",
        } <= tags

    resumed = OfflineTrainer(
        offline_config(
            run_dir, dataset_path, "sharing=cds", "total_steps=40", "checkpoint_every=10", f"resume={run_dir}"
        ),
        run_dir,
    )
    assert resumed.step == 20
    for key, value in state["agent"]["actor"].items():
        assert torch.equal(resumed.agent.actor.state_dict()[key], value)
    result = resumed.run()
    assert resumed.step == 40 and [t.task for t in result.tasks] == TASKS
    assert checkpoint.list_checkpoints(run_dir)[-1].name == "step_000000000040.pt"

    # evaluate.py's code reads offline checkpoints like online ones.
    evaluate_from_config(
        parse_evaluate(compose_config("evaluate", [f"checkpoint={run_dir}", "episodes_per_task=1", "device=cpu"]))
    )
    data = json.loads((run_dir / "checkpoints" / "step_000000000040_eval_mtrl.json").read_text())
    assert [t["task"] for t in data["tasks"]] == TASKS

    # A trained checkpoint can collect a dataset too (its deterministic actions, no noise here).
    cfg = compose_config(
        "collect",
        [
            "env.tasks=[drawer-close-v3]",
            "env.protocol=mtrl",
            "env.horizon=5",
            "episodes_per_task=1",
            "noise=0.0",
            f"checkpoint={run_dir}",
            "progress=false",
            f"output={tmp_path / 'from_ckpt.h5'}",
        ],
    )
    collected = load_dataset(collect(parse_collect(cfg)))
    drawer = collected.tasks["drawer-close-v3"]
    assert drawer.source["policy"] == "cql" and collected.collection["checkpoint"].endswith("step_000000000040.pt")
    expected = resumed.agent.act(drawer.obs, np.full(len(drawer), TASKS.index("drawer-close-v3")), deterministic=True)
    np.testing.assert_allclose(drawer.action, expected, atol=1e-6)


@pytest.mark.parametrize("sharing", ["none", "all", "cds_zero"])
def test_every_sharing_mode_trains(tmp_path, dataset_path, sharing):
    run_dir = tmp_path / sharing
    trainer = OfflineTrainer(
        offline_config(
            run_dir,
            dataset_path,
            f"sharing={sharing}",
            "total_steps=6",
            "eval_every=0",
            "checkpoint_every=0",
            "eval_episodes=1",
        ),
        run_dir,
    )
    if sharing == "all":  # shared rows carry task i's relabelled reward
        assert trainer.data.store.has_relabelled_rewards()
    batch = trainer.data.sample(trainer.agent.task_q, trainer.agent.device)
    assert list(batch.counts) == ([16, 16] if sharing == "none" else [32, 32]) or sharing == "cds_zero"
    trainer.run()
    assert trainer.step == 6 and len(checkpoint.list_checkpoints(run_dir)) == 1


def test_offline_runs_are_deterministic(tmp_path, dataset_path):
    params = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        OfflineTrainer(
            offline_config(
                run_dir, dataset_path, "sharing=none", "total_steps=8", "eval_every=0", "checkpoint_every=0"
            ),
            run_dir,
        ).run()
        params.append(checkpoint.load(run_dir)[1]["agent"]["critic"])
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key


def test_bad_offline_configs_are_rejected(tmp_path, dataset_path):
    run_dir = tmp_path / "r"
    cases = [
        (["sharing=cds", "dataset=null"], "mode=offline needs dataset="),
        (["sharing=cds", "offline.cds_percentile=150"], "offline.cds_percentile=150 is not allowed"),
        (["env.tasks=[reach-v3,push-v3]"], "has no data for push-v3"),
        (["env.protocol=metaworld"], "collected under protocol 'mtrl'"),
        (["env.goal_seed=5"], "goals for reach-v3 differ"),
        (["agent.cql_num_actions=0"], "agent.cql_num_actions=0 is not allowed"),
        (["agent=sac"], "agent=sac trains online; mode=offline uses agent=bc, agent=cql"),
        (["agent=bc", "sharing=cds"], "sharing=cds filters with a Q function; agent=bc has none"),
    ]
    for extra, message in cases:
        with pytest.raises(UserError, match=message):
            OfflineTrainer(smoke_run_config(run_dir, *offline_args(dataset_path, "total_steps=4"), *extra), run_dir)
    # Resuming with another sharing mode is refused.
    OfflineTrainer(
        offline_config(run_dir, dataset_path, "sharing=none", "total_steps=2", "eval_every=0"), run_dir
    ).run()
    with pytest.raises(UserError, match="trained with sharing=none"):
        OfflineTrainer(
            offline_config(run_dir, dataset_path, "sharing=all", "total_steps=4", f"resume={run_dir}"), run_dir
        )


def test_cli_errors_are_one_line(tmp_path, dataset_path):
    base = ["experiment=smoke", f"run_dir={tmp_path / 'r'}"]
    with pytest.raises(UserError, match=r"^sharing='cdz' is not allowed; expected one of none, all, cds, cds_zero$"):
        smoke_run_config(tmp_path / "r", *offline_args(dataset_path, "sharing=cdz"))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(dataset_path.read_bytes()[:5000])
    assert_one_line_error(run_cli("train.py", *base, *offline_args(truncated)), str(truncated), "truncated or corrupt")
