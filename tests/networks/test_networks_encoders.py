"""Behaviour shared by every task-conditioned network in mtrl.networks."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch.func import functional_call, grad, vmap

from mtrl.networks import available, make_network

IN, OUT, HIDDEN = 7, 3, [32, 32]
ENCODERS = available()
EXPECTED = {"onehot", "multihead", "embedding", "film", "task_bottom", "care", "soft_modularization", "moore"}
# Small option overrides keep the folder fast; defaults are exercised by test_default_sizes.
SMALL = {
    "care": {"num_experts": 3, "expert_sizes": [16, 16], "embedding_dim": 8, "context_hidden": [16]},
    "soft_modularization": {"num_modules": 3, "module_hidden": 16, "routing_hidden": 16},
    "moore": {"num_experts": 3},
    "paco": {"num_sets": 3},
}
# Parameters holding one slice per task along dim 0 (task j's slice must get zero gradient
# from a batch of task i only).
PER_TASK = {
    "multihead": ["heads.weight", "heads.bias"],
    "film": ["gammas.0", "gammas.1", "betas.0", "betas.1"],
    "task_bottom": ["bottom.0.weight", "bottom.0.bias"],
    "embedding": ["embedding"],
    "moore": ["task_weights", "head.weight", "head.bias"],
    "paco": ["task_vectors"],
    "soft_modularization": ["task_embedding"],
}


def task_names(k: int) -> list[str]:
    import json
    from pathlib import Path

    import mtrl.networks

    path = Path(mtrl.networks.__file__).parent / "data" / "task_descriptions.json"
    return list(json.loads(path.read_text()))[:k]


def build(name: str, k: int = 10, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    opts = {**SMALL.get(name, {}), **extra}
    return make_network(name, IN, OUT, k, HIDDEN, task_names=task_names(k), **opts)


def randomize_(net: torch.nn.Module, seed: int = 1) -> None:
    """Perturb every parameter (FiLM starts task-independent by design: gamma 1, beta 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_registry_lists_every_family():
    assert EXPECTED <= set(ENCODERS)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("k", [10, 50])
def test_output_shape(name, k):
    net = build(name, k)
    x, t = torch.randn(64, IN), torch.randint(0, k, (64,))
    y = net(x, t)
    assert y.shape == (64, OUT) and y.dtype == torch.float32 and torch.isfinite(y).all()
    # extra leading batch dims are flattened and restored
    assert net(x.view(4, 16, IN), t.view(4, 16)).shape == (4, 16, OUT)
    torch.testing.assert_close(net(x.view(4, 16, IN), t.view(4, 16)).view(64, OUT), y)


@pytest.mark.parametrize("name", ENCODERS)
def test_default_sizes(name):
    """Default options at the real actor / critic sizes (obs 39, act 4, 3 x 400, MT10)."""
    torch.manual_seed(0)
    for in_dim, out_dim in [(39, 8), (43, 1)]:
        net = make_network(name, in_dim, out_dim, 10, [400, 400, 400], task_names=task_names(10))
        y = net(torch.randn(20, in_dim), torch.arange(20) % 10)
        assert y.shape == (20, out_dim)


@pytest.mark.parametrize("name", ENCODERS)
def test_scalar_task_id_means_whole_batch(name):
    net = build(name)
    randomize_(net)
    x = torch.randn(12, IN)
    for task in (0, 6):
        ref = net(x, torch.full((12,), task))
        torch.testing.assert_close(net(x, torch.tensor(task)), ref)
        torch.testing.assert_close(net(x.view(3, 4, IN), torch.tensor(task)).view(12, OUT), ref)


@pytest.mark.parametrize("name", [name for name in ENCODERS if name != "none"])
def test_conditioning_is_real(name):
    net = build(name)
    if name == "film":
        # at init gamma=1, beta=0 makes tasks identical, as specified
        x = torch.randn(16, IN)
        torch.testing.assert_close(net(x, torch.full((16,), 2)), net(x, torch.full((16,), 5)))
        randomize_(net)
    x = torch.randn(16, IN)
    for i, j in [(0, 1), (2, 7), (3, 9)]:
        yi, yj = net(x, torch.full((16,), i)), net(x, torch.full((16,), j))
        assert (yi - yj).abs().max() > 1e-4, (name, i, j)


def test_encoder_none_ignores_the_task():
    """encoder=none: the same output for every task id (facebookresearch/mtrl's task-blind networks)."""
    net = build("none")
    x = torch.randn(16, IN)
    torch.testing.assert_close(net(x, torch.full((16,), 0)), net(x, torch.full((16,), 7)))
    assert sum(p.numel() for p in net.parameters()) == (IN * 32 + 32) + (32 * 32 + 32) + (32 * OUT + OUT)


@pytest.mark.parametrize("name", ENCODERS)
def test_gradients_reach_every_parameter(name):
    net = build(name)
    k = net.num_tasks
    x, t = torch.randn(4 * k, IN), torch.arange(4 * k) % k
    net(x, t).pow(2).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
        if pname in PER_TASK.get(name, []):  # every task's slice is reached
            assert (p.grad.flatten(1).abs().sum(1) > 0).all(), pname


@pytest.mark.parametrize("name", sorted(PER_TASK))
def test_per_task_parameters_isolated(name):
    net = build(name)
    if name == "film":
        randomize_(net)
    params = dict(net.named_parameters())
    i = 4
    net(torch.randn(32, IN), torch.full((32,), i)).pow(2).sum().backward()
    for pname in PER_TASK[name]:
        g = params[pname].grad
        assert g is not None, pname
        assert g[i].abs().sum() > 0, pname
        others = torch.cat([g[:i], g[i + 1 :]])
        assert torch.count_nonzero(others) == 0, pname


@pytest.mark.parametrize("name", ENCODERS)
def test_task_specific_parameter_names(name):
    net = build(name)
    assert sorted(net.task_specific_parameter_names()) == sorted(PER_TASK.get(name, []))
    for pname in net.task_specific_parameter_names():
        assert dict(net.named_parameters())[pname].shape[0] == net.num_tasks


@pytest.mark.parametrize("name", ENCODERS)
def test_state_dict_round_trip(name):
    net = build(name, seed=0)
    randomize_(net)
    other = build(name, seed=123)
    x, t = torch.randn(32, IN), torch.randint(0, 10, (32,))
    assert not torch.equal(net(x, t), other(x, t))
    other.load_state_dict(copy.deepcopy(net.state_dict()))
    assert torch.equal(net(x, t), other(x, t))


@pytest.mark.parametrize("name", ENCODERS)
def test_vmap_per_task_gradients(name):
    """vmap(grad) over task chunks equals one autograd pass per chunk."""
    net = build(name)
    if name == "film":
        randomize_(net)
    k, n = net.num_tasks, 5
    x = torch.randn(k, n, IN)
    ids = torch.arange(k).unsqueeze(1).expand(k, n)
    params = {name_: p.detach() for name_, p in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def loss(p, xb, tb):
        return functional_call(net, (p, buffers), (xb, tb)).pow(2).mean()

    per_task = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, ids)
    # fast path: one 0-dim task id per chunk
    per_task_scalar = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, torch.arange(k))
    for pname in per_task:
        torch.testing.assert_close(per_task_scalar[pname], per_task[pname], rtol=1e-4, atol=1e-6, msg=f"{name}:{pname}")
    for task in (0, k // 2, k - 1):
        net.zero_grad()
        net(x[task], ids[task]).pow(2).mean().backward()
        for pname, p in net.named_parameters():
            torch.testing.assert_close(
                per_task[pname][task], p.grad, rtol=1e-4, atol=1e-6, msg=f"{name}:{pname}:{task}"
            )


def test_moore_experts_orthonormal():
    net = build("moore", num_experts=4)
    v = net.expert_representations(torch.randn(128, IN))  # (B, k, d)
    gram = v @ v.transpose(-1, -2)
    eye = torch.eye(4).expand_as(gram)
    torch.testing.assert_close(gram, eye, atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_task_bottom_depths(depth):
    net = build("task_bottom", depth=depth)
    assert len(net.bottom) == depth
    assert (net.top is None) == (depth == len(HIDDEN) + 1)
    y = net(torch.randn(8, IN), torch.arange(8))
    assert y.shape == (8, OUT)
    if depth == 3:  # every layer per task: task j's output ignores every other task's params
        x = torch.randn(8, IN)
        ref = net(x, torch.full((8,), 2))
        with torch.no_grad():
            for layer in net.bottom:
                layer.weight[3].add_(1.0)
        torch.testing.assert_close(net(x, torch.full((8,), 2)), ref)


@pytest.mark.parametrize("where", ["input", "hidden"])
def test_embedding_where(where):
    net = build("embedding", where=where, dim=5)
    assert net(torch.randn(6, IN), torch.arange(6)).shape == (6, OUT)
    first = net.top.layers[0].in_features
    assert first == (IN + 5 if where == "input" else HIDDEN[0] + 5)


def test_film_post_position():
    net = build("film", position="post")
    randomize_(net)
    x = torch.randn(8, IN)
    assert (net(x, torch.zeros(8, dtype=torch.long)) - net(x, torch.ones(8, dtype=torch.long))).abs().max() > 1e-4


def test_soft_modularization_routing_probabilities():
    net = build("soft_modularization", num_layers=3)
    x, t = torch.randn(10, IN), torch.arange(10)
    probs = net.routing(net.state_encoder(x), t)
    assert [tuple(p.shape) for p in probs] == [(10, 3, 3), (10, 3, 3), (10, 3)]
    for p in probs:
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    # routing depends on the task for a fixed state
    p0 = net.routing(net.state_encoder(x[:1]), torch.tensor([0]))
    p1 = net.routing(net.state_encoder(x[:1]), torch.tensor([1]))
    assert (p0[0] - p1[0]).abs().max() > 1e-6


def test_care_missing_task_uses_learned_embedding(caplog):
    names = task_names(3) + ["my-custom-task-v1"]
    with caplog.at_level(logging.WARNING, logger="mtrl.networks.care"):
        net = make_network("care", IN, OUT, 4, HIDDEN, task_names=names, **SMALL["care"])
    assert "my-custom-task-v1" in caplog.text
    assert net.missing_tasks == [3]
    assert net.learned_embeddings.shape[0] == 1
    net(torch.randn(8, IN), torch.full((8,), 3)).sum().backward()
    assert net.learned_embeddings.grad.abs().sum() > 0


def test_care_uses_description_embeddings():
    import numpy as np

    from mtrl.networks.care import DEFAULT_EMBEDDINGS_FILE

    data = np.load(DEFAULT_EMBEDDINGS_FILE)
    names = [str(n) for n in data["names"]]
    # v2 names resolve to the v3 descriptions; order follows task_names, not the file
    wanted = ["push-v2", "reach-v3", "door-open-v3"]
    net = make_network("care", IN, OUT, 3, HIDDEN, task_names=wanted, **SMALL["care"])
    assert net.missing_tasks == []
    meta = net.task_metadata()
    for t, w in enumerate(["push-v3", "reach-v3", "door-open-v3"]):
        np.testing.assert_allclose(meta[t].numpy(), data["embeddings"][names.index(w)])


def test_care_without_task_names_warns_and_learns(caplog):
    with caplog.at_level(logging.WARNING, logger="mtrl.networks.care"):
        net = make_network("care", IN, OUT, 5, HIDDEN, **SMALL["care"])
    assert "no task_names" in caplog.text
    assert net.learned_embeddings.shape[0] == 5
