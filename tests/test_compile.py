"""The fast update paths: one-graph compilation, compiled == eager, the two loss layouts, no host syncs, Adam."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from mtrl import balancers
from mtrl.agents import SACAgent, SACConfig, compiled
from mtrl.agents.bc import BCAgent, BCConfig
from mtrl.agents.cql import CQLAgent, CQLConfig
from mtrl.agents.optim import adam_step, load_adam, make_adam
from mtrl.balancers.objective import BalancedObjective, UpdatePlan
from mtrl.batch import Batch, map_task_chunks
from mtrl.train.replay import MultiTaskReplay

K, OBS, ACT = 3, 7, 2
TASKS = ["reach-v3", "push-v3", "drawer-close-v3"]


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test compiles from scratch: compiled code is cached per function and guarded on each agent, and
    past its recompile limit torch.compile would quietly run later tests' agents eagerly."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _agent(
    cls=SACAgent, config=SACConfig, encoder="onehot", balancer="uniform", device="cpu", hidden=(16, 16), **options
):
    torch.manual_seed(0)
    agent = cls(OBS, ACT, TASKS, config(hidden_sizes=list(hidden), **options), {"name": encoder}, torch.device(device))
    seeded = {"seed": 0} if "seed" in balancers.options(balancer) else {}  # pcgrad's random task order
    agent.set_balancers(balancers.make(balancer, K, **seeded), balancers.make(balancer, K, **seeded))
    return agent


def one_graph(agent):
    """The agent's update planned as compiled, traced with fullgraph=True (raises on any graph break)."""
    agent.plan_updates(UpdatePlan(compiled=True))
    return torch.compile(agent.update_step, fullgraph=True, backend="eager")


def _batch(counts=(8, 8, 8), seed=0) -> Batch:
    rng = np.random.default_rng(seed)
    replay = MultiTaskReplay(K, 32, OBS, ACT, seed=seed)
    for _ in range(32):
        replay.add(
            np.arange(K),
            rng.normal(size=(K, OBS)),
            rng.uniform(-1, 1, (K, ACT)),
            rng.uniform(size=K),
            rng.normal(size=(K, OBS)),
            rng.uniform(size=K) < 0.1,
        )
    return replay.sample(np.array(counts))


def _state(agent) -> dict[str, torch.Tensor]:
    """Every learned tensor of an agent (networks, targets, temperatures, Adam moments) by name."""
    tensors = {
        f"{net}.{name}": p
        for net in ("actor", "critic", "critic_target")
        for name, p in getattr(agent, net).named_parameters()
    }
    tensors["log_alpha"] = agent.log_alpha
    for name in ("actor_optim", "critic_optim", "alpha_optim"):
        optim = getattr(agent, name)
        for i, p in enumerate(optim.param_groups[0]["params"]):
            tensors.update({f"{name}.{i}.{key}": value for key, value in optim.state[p].items()})
    return {name: value.detach().clone() for name, value in tensors.items()}


def _foreach_adam(agent):
    """Eager steps in the foreach maths that compiled steps use (the fused kernels round a little differently)."""
    for optim in (agent.actor_optim, agent.critic_optim, agent.alpha_optim):
        optim.param_groups[0].update(fused=False, foreach=True)
    return agent


def _assert_same_training(make, compile_options, counts_sequence, rtol=1e-4, atol=1e-5):
    """Two identical agents, one compiled, updated on the same batches from the same RNG: same states."""
    eager, compiled = _foreach_adam(make()), _foreach_adam(make())
    compiled.compile("default", **compile_options)
    for counts in counts_sequence:
        batch = _batch(counts)
        torch.manual_seed(1)
        expected = eager.update(batch)
        torch.manual_seed(1)
        got = compiled.update(batch)
        assert expected.keys() == got.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=atol)
    want, have = _state(eager), _state(compiled)
    for name in want:
        torch.testing.assert_close(
            have[name], want[name], rtol=rtol, atol=atol, msg=lambda text, name=name: f"{name}: {text}"
        )


@pytest.mark.parametrize(
    "encoder,schedule",
    [
        ("onehot", (True, True)),
        ("onehot", (False, True)),
        ("onehot", (True, False)),
        ("multihead", (True, True)),
        ("film", (True, True)),
    ],
)
def test_uniform_sac_update_compiles_as_one_graph(encoder, schedule):
    agent = _agent(encoder=encoder)
    step = one_graph(agent)
    before = _state(agent)
    metrics = step(_batch(), schedule)
    assert ("actor_loss" in metrics) == schedule[0]
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert not torch.equal(
        before["critic.q1." + next(iter(dict(agent.critic.q1.named_parameters())))], next(agent.critic.q1.parameters())
    )


def test_cql_update_compiles_as_one_graph():
    agent = _agent(CQLAgent, CQLConfig, cql_lagrange=True, bc_updates=1)
    step = one_graph(agent)
    for _ in range(2):  # the behaviour-cloning update, then the SAC one
        metrics = step(_batch(), agent.schedule())
        agent.num_updates += 1
        assert torch.isfinite(metrics["penalty"]).all()


@pytest.mark.parametrize("loss", ["mse", "nll"])
def test_bc_update_compiles_as_one_graph(loss):
    torch.manual_seed(0)
    agent = BCAgent(
        OBS, ACT, TASKS, BCConfig(hidden_sizes=[16, 16], loss=loss), {"name": "onehot"}, torch.device("cpu")
    )
    metrics = one_graph(agent)(_batch(), agent.schedule())
    assert metrics["loss"].shape == (K,) and torch.isfinite(metrics["loss"]).all()


def test_compiled_update_equals_eager_on_fixed_batches():
    """aot_eager runs the traced graph (torch.func gradients, functional Adam) op by op: same RNG stream."""
    make = lambda: _agent(actor_update_every=2, critic_target_every=2)  # noqa: E731 (schedules vary)
    _assert_same_training(make, {"backend": "aot_eager"}, [(8, 8, 8)] * 4)


def test_a_precompiled_update_has_one_graph_per_schedule_and_stops_when_what_it_read_changes():
    """On the CPU the one-graph update is compiled ahead of time, one graph per schedule (compiled.PrecompiledGraphs),
    and called without Dynamo's per-call guards; the guards are still checked on a graph's second call: a value
    the graph was specialised on (here the discount) changed after compiling is an error, not a stale update."""
    agent = _agent(actor_update_every=2)
    agent.compile("default", backend="aot_eager")
    assert isinstance(agent._update_step, compiled.PrecompiledGraphs)
    for _ in range(3):
        agent.update(_batch())
    assert {key[0][1] for key in agent._update_step.graphs} == {(True, True), (False, True)}
    with pytest.raises(TypeError, match="cannot be copied .its graphs run on its owner."):
        copy.deepcopy(agent)
    agent.config = dataclasses.replace(agent.config, gamma=0.5)
    with pytest.raises(RuntimeError, match="the compiled update no longer matches what it was compiled for"):
        agent.update(_batch())


def test_without_ahead_of_time_compilation_the_update_is_torch_compiles_guarded_function(monkeypatch):
    """A torch without `aot_compile` gets torch.compile's usual function (guards checked per call), with a warning."""
    monkeypatch.setattr(compiled, "can_precompile", lambda fn: False)
    with pytest.warns(UserWarning, match="has no aot_compile"):
        _assert_same_training(_agent, {"backend": "aot_eager"}, [(8, 8, 8)] * 2)


def test_every_agent_compiles_its_own_graph_and_a_deeper_one_never_runs_a_shallower_ones():
    """Each agent compiles its own copy of the update's code (compiled.own_code), so Dynamo's recompile limit
    (per code object) never makes a later agent of the same process run eagerly; and the update skips Dynamo's
    module-structure guards (compiled.update_guards), so a deeper agent must not pass a shallower one's guards."""
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(recompile_limit=1):
        shallow = _agent()
        shallow.compile("default", backend="aot_eager")
        shallow.update(_batch())
        _assert_same_training(lambda: _agent(hidden=(16, 16, 16)), {"backend": "aot_eager"}, [(8, 8, 8)])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 2  # the shallow agent's, the deeper one's


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_acting_equals_eager_acting_and_follows_the_updated_weights(backend):
    """On the CPU a compiled agent acts through a compiled forward (compiled.compile_acting): the same actions, the
    same noise, and after an update (weights changed in place) the new weights'."""
    eager, compiled = _foreach_adam(_agent()), _foreach_adam(_agent())
    compiled.compile("default", backend=backend)
    assert compiled.acting.actions != compiled.acting.policy.actions
    obs, ids = np.random.default_rng(0).normal(size=(K, OBS)).astype(np.float32), np.arange(K)

    def same_actions() -> None:
        for deterministic in (True, False):
            torch.manual_seed(3)
            want = eager.act(obs, ids, deterministic)
            torch.manual_seed(3)
            np.testing.assert_allclose(compiled.act(obs, ids, deterministic), want, rtol=1e-5, atol=1e-6)

    same_actions()
    for agent in (eager, compiled):
        torch.manual_seed(1)
        agent.update(_batch())
    same_actions()


def test_an_agent_planned_for_unequal_counts_keeps_the_eager_update_under_compile():
    def make():
        agent = _agent()
        agent.plan_updates(UpdatePlan(equal_counts=False))
        return agent

    _assert_same_training(make, {"backend": "aot_eager"}, [(8, 8, 8), (5, 11, 0), (8, 8, 8)])
    agent = make()
    agent.compile("default", backend="aot_eager")
    assert agent._update_step == agent.update_step and not agent.plan.compiled


def test_an_equal_counts_plan_refuses_a_batch_of_unequal_counts():
    with pytest.raises(ValueError, match=r"planned for equal per-task counts; got \[5, 11, 0\]"):
        _agent().update(_batch((5, 11, 0)))


@pytest.mark.parametrize("balancer", ["pcgrad", "famo"])
def test_non_static_balancers_update_under_compile(balancer):
    """Gradient and host-weighted balancers compile without fullgraph (graph breaks at their host maths)."""
    _assert_same_training(lambda: _agent(balancer=balancer), {"backend": "aot_eager"}, [(8, 8, 8)] * 3)


@pytest.mark.slow
def test_inductor_compiled_update_equals_eager():
    """compile=default as a run uses it (Inductor's C++ kernels and wrapper, one graph), ATen's random numbers."""
    _assert_same_training(_agent, {}, [(8, 8, 8)] * 3)


@pytest.mark.slow
def test_inductor_compiled_update_with_a_gradient_balancer_equals_eager():
    """pcgrad under compile=default: Inductor compiles the per-task gradients and steps around the host solve."""
    _assert_same_training(lambda: _agent(balancer="pcgrad"), {}, [(8, 8, 8)] * 3)


@pytest.mark.parametrize("counts", [(8, 8, 8), (5, 11, 0)])
@pytest.mark.parametrize("encoder", ["onehot", "multihead", "film"])
def test_batch_and_chunk_layouts_give_the_same_losses_and_gradients(encoder, counts):
    agent = _agent(encoder=encoder)
    plan = UpdatePlan(equal_counts=len(set(counts)) == 1)
    agent.plan_updates(plan)
    batch = _batch(counts)
    inputs = agent.critic_inputs(batch)
    results = []
    for layout in ("batch", "chunks"):
        objective = BalancedObjective(balancers.make("uniform", K), agent.critic, K, layout=layout, plan=plan)
        grads, losses, _ = objective.gradients(agent.critic_sample_loss, inputs, batch.counts)
        results.append((losses, grads))
    (losses_b, grads_b), (losses_c, grads_c) = results
    torch.testing.assert_close(losses_b, losses_c, rtol=1e-5, atol=1e-6)
    for name in grads_b:
        torch.testing.assert_close(grads_b[name], grads_c[name], rtol=1e-4, atol=1e-6)
    rows = agent.map_rows(agent.actor, {"x": batch.obs, "task_ids": batch.task_ids}, batch.counts)
    torch.testing.assert_close(
        rows,
        map_task_chunks(agent.actor, {"x": batch.obs, "task_ids": batch.task_ids}, batch.counts),
        rtol=1e-5,
        atol=1e-6,
    )


class HostTransfers(TorchDispatchMode):
    """Records every copy between the host and the (meta) device: what would synchronise on a GPU."""

    COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default, torch.ops.aten._copy_from.default}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if func in self.COPIES and len({t.device.type for t in tensors}) > 1:
            self.seen.append(str(func))
        return out


def _meta_batch(counts=(4, 4, 4)) -> Batch:
    n = sum(counts)
    meta = {"device": "meta"}
    return Batch(
        obs=torch.empty(n, OBS, **meta),
        action=torch.empty(n, ACT, **meta),
        reward=torch.empty(n, **meta),
        next_obs=torch.empty(n, OBS, **meta),
        terminated=torch.empty(n, **meta),
        task_ids=torch.empty(n, dtype=torch.long, **meta),
        counts=counts,
    )


@pytest.mark.parametrize("cls,config", [(SACAgent, SACConfig), (CQLAgent, CQLConfig)])
def test_the_uniform_update_never_reads_the_device_from_the_host(cls, config):
    """On the meta device (no data) any .item(), .cpu(), .tolist(), numpy or bool() of a device tensor raises,
    and HostTransfers catches host-to-device copies: the eager update of the default configuration has none."""
    agent = _agent(cls, config, device="meta", clip_grad_norm=1.0)
    with HostTransfers() as transfers:
        for _ in range(2):
            metrics = agent.update(_meta_batch())
    assert transfers.seen == [] and all(v.device.type == "meta" for v in metrics.values())


def test_the_host_read_check_catches_a_host_weighted_balancer():
    """The check above can fail: FAMO's weights are host maths on the losses."""
    agent = _agent(balancer="famo", device="meta")
    with pytest.raises((NotImplementedError, RuntimeError)):
        agent.update(_meta_batch())


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-5, 1e-1),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.5, 0.9999),
    weight_decay=st.sampled_from([0.0, 0.01]),
    steps=st.integers(1, 3),
)
def test_adam_on_explicit_gradients_is_torch_adam(lr, beta1, beta2, weight_decay, steps):
    torch.manual_seed(0)
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    reference = [p.detach().clone().requires_grad_(True) for p in params]
    ours = make_adam(params, lr, (beta1, beta2), torch.device("cpu"))
    ours.param_groups[0]["weight_decay"] = weight_decay
    theirs = torch.optim.Adam(reference, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)
    for _ in range(steps):
        # The weight's gradient transposed in memory, as autograd.grad returns it for x @ w.t() layers: the fused
        # kernel reads gradients in the parameters' layout, so adam_step must hand it a contiguous one.
        grads = [torch.randn(3, 4).t(), torch.randn(3)]
        adam_step(ours, params, grads)
        for p, g in zip(reference, grads):
            p.grad = g.clone()
        theirs.step()
    for p, q in zip(params, reference):
        torch.testing.assert_close(p, q)


def test_loading_adam_state_keeps_its_tensors_and_this_devices_flags():
    params = [torch.randn(3, requires_grad=True)]
    optim = make_adam(params, 1e-3, (0.9, 0.999), torch.device("cpu"))
    tensors = dict(optim.state[params[0]])
    other = torch.optim.Adam([torch.nn.Parameter(params[0].detach().clone())], lr=1e-3)  # plain flags
    other.param_groups[0]["params"][0].grad = torch.ones(3)
    other.step()
    load_adam(optim, copy.deepcopy(other.state_dict()))
    state = optim.state[params[0]]
    assert all(state[key] is tensors[key] for key in tensors)  # a compiled update keeps using them
    saved = other.state[other.param_groups[0]["params"][0]]
    assert float(state["step"]) == 1.0 and torch.equal(state["exp_avg"], saved["exp_avg"])
    assert optim.param_groups[0]["fused"] is True and not optim.param_groups[0]["foreach"]


def test_compile_auto_compiles_on_cpu_one_graph_updates_of_long_runs():
    from mtrl.agents.compiled import CPU_COMPILE_MIN_UPDATES, resolve_mode

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    long_run, short_run = CPU_COMPILE_MIN_UPDATES, CPU_COMPILE_MIN_UPDATES - 1
    assert resolve_mode("auto", cpu, True, long_run) == "default"
    assert resolve_mode("auto", cpu, False, long_run) == "none"  # gradient balancers: graph breaks, not measured
    assert resolve_mode("auto", cpu, True, short_run) == "none"
    assert resolve_mode("auto", cpu, True, None) == "none"
    assert resolve_mode("auto", cuda, False, 10) == "default"
    assert resolve_mode("none", cpu, True, long_run) == "none" and resolve_mode("max", cpu, False, 1) == "max"


def test_planned_updates_count_vector_steps_after_the_warm_up(tmp_path):
    from mtrl.agents.factory import planned_updates
    from tests.conftest import smoke_run_config

    config = smoke_run_config(tmp_path / "r")  # 600 steps, warm-up 200, two tasks: 200 vector steps
    assert planned_updates(config, 2) == 200
    assert planned_updates(smoke_run_config(tmp_path / "r", "updates_per_step=0.5", "env.envs_per_task=2"), 2) == 50
