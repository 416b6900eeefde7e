"""On a CUDA machine: device placement, device replay, sync-free and compiled updates, checkpoints across devices.

Every test here is marked `cuda` and skipped where CUDA is not available (`pytest -m cuda` runs only them;
benchmarks/gpu_check.sh runs them first).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mtrl import balancers
from mtrl.agents import SACAgent, SACConfig
from mtrl.agents.factory import load_agent
from mtrl.io import checkpoint
from mtrl.networks import available as encoders
from mtrl.train.replay import DeviceStorage, MultiTaskReplay, replay_device
from mtrl.train.trainer import Trainer
from tests.conftest import smoke_run_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

K, OBS, ACT = 3, 39, 4
TASKS = ["reach-v3", "push-v3", "drawer-close-v3"]
CUDA = torch.device("cuda")


def _agent(encoder="onehot", balancer="uniform", **config) -> SACAgent:
    torch.manual_seed(0)
    agent = SACAgent(OBS, ACT, TASKS, SACConfig(hidden_sizes=[32, 32], **config), {"name": encoder}, CUDA)
    agent.set_balancers(balancers.make(balancer, K), balancers.make(balancer, K))
    return agent


def _replay(device=CUDA, capacity=64) -> MultiTaskReplay:
    rng = np.random.default_rng(0)
    replay = MultiTaskReplay(K, capacity, OBS, ACT, seed=0, device=device)
    for t in range(capacity + 10):  # wraps around the rings
        obs = np.stack([np.full(OBS, 1000.0 * k + t) for k in range(K)])
        replay.add(np.arange(K), obs, rng.uniform(-1, 1, (K, ACT)), np.full(K, float(t)), obs + 0.5, np.zeros(K))
    return replay


def _on_cuda(tensors) -> bool:
    return all(t.device.type == "cuda" for t in tensors)


def test_agent_networks_and_optimiser_states_live_on_the_device():
    agent = _agent()
    modules = (agent.actor, agent.critic, agent.critic_target)
    assert _on_cuda(p for m in modules for p in m.parameters()) and agent.log_alpha.is_cuda
    for optim in (agent.actor_optim, agent.critic_optim, agent.alpha_optim):
        assert optim.param_groups[0]["fused"] and optim.param_groups[0]["capturable"]
        assert _on_cuda(t for state in optim.state.values() for t in state.values())
    metrics = agent.update(_replay().sample((16, 16, 16)))
    assert _on_cuda(metrics.values())
    actions = agent.act(np.zeros((K, OBS), np.float32), np.arange(K), deterministic=False)
    assert isinstance(actions, np.ndarray) and actions.shape == (K, ACT)


def test_device_replay_stores_and_samples_on_the_device():
    replay = _replay()
    assert isinstance(replay.storage, DeviceStorage)
    batch = replay.sample((5, 9, 2))
    assert batch.counts == (5, 9, 2) and _on_cuda([batch.obs, batch.action, batch.reward, batch.task_ids])
    assert batch.task_ids.tolist() == [0] * 5 + [1] * 9 + [2] * 2
    owner = (batch.obs[:, 0] // 1000).long()
    assert torch.equal(owner, batch.task_ids)
    assert (batch.obs[:, 0] % 1000 >= 10).all()  # the newest `capacity` transitions survive the wrap-around
    assert torch.allclose(batch.next_obs - batch.obs, torch.full_like(batch.obs, 0.5))
    host = MultiTaskReplay(K, 64, OBS, ACT, seed=0)
    host.load_state_dict(replay.state_dict())  # same checkpoint format on either side
    np.testing.assert_array_equal(host.storage.arrays["obs"], replay.storage.export(64)["obs"])
    again = MultiTaskReplay(K, 64, OBS, ACT, seed=5, device=CUDA)
    again.load_state_dict(replay.state_dict())
    assert torch.equal(again.sample((4, 4, 4)).obs, replay.sample((4, 4, 4)).obs)  # the device stream resumes


def test_replay_device_auto_follows_the_agent_and_refuses_what_does_not_fit():
    class Config:
        replay_device = "auto"

    assert replay_device(Config(), CUDA, 1 << 20).type == "cuda"
    assert replay_device(Config(), torch.device("cpu"), 1 << 20).type == "cpu"
    with pytest.warns(UserWarning, match="keeping it on the CPU"):
        assert replay_device(Config(), CUDA, 1 << 60).type == "cpu"
    from mtrl.errors import UserError

    with pytest.raises(UserError, match="replay_device=cuda.*needs .* GiB .* free"):
        MultiTaskReplay(1, 10**12, OBS, ACT, seed=0, device=CUDA)


def test_the_uniform_update_does_not_synchronise_with_the_host():
    agent = _agent(clip_grad_norm=10.0)
    replay = _replay()
    agent.update(replay.sample((16, 16, 16)))  # warm-up: lazily built kernels and caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            agent.update(replay.sample((16, 16, 16)))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_gradient_balancer_costs_at_most_one_host_round_trip_per_network():
    agent = _agent(balancer="pcgrad")
    replay = _replay()
    agent.update(replay.sample((16, 16, 16)))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            agent.update(replay.sample((16, 16, 16)))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert 1 <= len(syncs) <= 2 * len(agent.networks)  # per network: the Gram matrix down, the weights up


@pytest.mark.parametrize("balancer", balancers.available())
def test_every_balancer_updates_on_the_device(balancer):
    agent = _agent("multihead", balancer)
    replay = _replay()
    for _ in range(2):
        metrics = agent.update(replay.sample((8, 8, 8)))
    assert _on_cuda(metrics.values()) and all(bool(torch.isfinite(v).all()) for v in metrics.values())


@pytest.mark.parametrize("encoder", encoders())
def test_every_encoder_updates_and_acts_on_the_device(encoder):
    agent = _agent(encoder)
    metrics = agent.update(_replay().sample((8, 8, 8)))
    assert _on_cuda(metrics.values()) and all(bool(torch.isfinite(v).all()) for v in metrics.values())
    assert agent.act(np.zeros((K, OBS), np.float32), np.arange(K), deterministic=True).shape == (K, ACT)


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_the_compiled_update_runs_and_learns_on_the_device(cuda_graphs):
    agent = _agent(critic_lr=1e-3)
    agent.compile("default", cuda_graphs=cuda_graphs)
    replay = _replay()
    batch = replay.sample((16, 16, 16))
    first = agent.update(batch)["critic_loss"].mean()
    kept = [agent.update(batch) for _ in range(30)]
    assert float(kept[-1]["critic_loss"].mean()) < float(first)
    assert all(bool(torch.isfinite(m["critic_loss"]).all()) for m in kept)  # earlier metrics were not overwritten


def test_a_gpu_checkpoint_loads_on_the_cpu_and_resumes_on_the_gpu(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "device=cuda", "total_steps=300", "save_replay=true"), run_dir).run()
    _, state = checkpoint.load(run_dir)
    on_cpu = load_agent(run_dir, device="cpu")
    assert all(p.device.type == "cpu" for p in on_cpu.actor.parameters())
    obs = np.zeros((2, on_cpu.obs_dim), np.float32)
    assert on_cpu.act(obs, np.arange(2), deterministic=True).shape == (2, on_cpu.act_dim)
    resumed = Trainer(
        smoke_run_config(run_dir, "device=cuda", "total_steps=600", "save_replay=true", f"resume={run_dir}"), run_dir
    )
    assert resumed.agent.device.type == "cuda" and resumed.replay.device.type == "cuda"
    assert resumed.replay.sizes.tolist() == state["replay"]["sizes"].tolist()
    resumed.run()
    assert resumed.step == 600
    cpu_run = Trainer(smoke_run_config(run_dir, "device=cpu", "total_steps=900", f"resume={run_dir}"), run_dir)
    assert cpu_run.agent.device.type == "cpu"
    cpu_run.run()
    assert cpu_run.step == 900
