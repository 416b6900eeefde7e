"""make_network API, argument validation, configs, blocks and shipped data of mtrl.networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

import mtrl.networks
from mtrl.networks import available, make_network, options_of
from mtrl.networks.blocks import MLP, ParallelLinear, ScalarLinear, TaskLinear, gram_schmidt

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(mtrl.networks.__file__).parent / "data"


# ------------------------------------------------------------------------------------- errors
def test_unknown_encoder_message():
    with pytest.raises(ValueError) as err:
        make_network("nope", 3, 2, 4, [8])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("unknown encoder 'nope'; choose one of: ")
    for name in available():
        assert name in msg


def test_unknown_option_names_it_and_allowed():
    with pytest.raises(ValueError, match=r"unknown option 'num_expert'.*'moore'.*num_experts"):
        make_network("moore", 3, 2, 4, [8], num_expert=2)
    with pytest.raises(ValueError, match=r"unknown option 'depth'.*\(none\)"):
        make_network("onehot", 3, 2, 4, [8], depth=2)


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("moore", {"num_experts": 0}, r"num_experts must be an integer in \[1, 8\], got 0"),
        ("moore", {"num_experts": 9}, r"num_experts .*\[1, 8\], got 9"),
        ("moore", {"num_experts": 2.5}, r"num_experts .*got 2.5"),
        ("moore", {"activation": "gelu"}, r"activation must be one of tanh, relu, none"),
        ("care", {"num_experts": 0}, r"num_experts must be an integer >= 1, got 0"),
        ("care", {"temperature": 0.0}, r"temperature must be a number > 0.0, got 0.0"),
        ("care", {"expert_sizes": []}, r"expert_sizes must have at least 1"),
        ("care", {"expert_sizes": [8, -1]}, r"expert_sizes\[1\] .*got -1"),
        ("task_bottom", {"depth": 0}, r"depth must be an integer in \[1, 2\], got 0"),
        ("task_bottom", {"depth": 3}, r"depth .*\[1, 2\], got 3"),
        ("embedding", {"dim": 0}, r"dim must be an integer >= 1, got 0"),
        ("embedding", {"where": "output"}, r"where must be one of input, hidden; got 'output'"),
        ("film", {"position": "middle"}, r"position must be one of pre, post"),
        ("soft_modularization", {"num_modules": 0}, r"num_modules .*>= 1, got 0"),
        ("soft_modularization", {"num_layers": -1}, r"num_layers .*got -1"),
        ("paco", {"num_sets": 0}, r"num_sets .*>= 1, got 0"),
    ],
)
def test_bad_option_values(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_network(name, 3, 2, 4, [8], **options)


@pytest.mark.parametrize(
    "args, pattern",
    [
        ((0, 2, 4, [8]), r"in_dim must be an integer >= 1, got 0"),
        ((3, 0, 4, [8]), r"out_dim .*got 0"),
        ((3, 2, 0, [8]), r"num_tasks .*got 0"),
        ((3, 2, 4, [8, 0]), r"hidden_sizes\[1\] .*got 0"),
        ((3, 2, 4, "8"), r"hidden_sizes must be a sequence"),
    ],
)
def test_bad_common_arguments(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_network("onehot", *args)


@pytest.mark.parametrize("name", ["film", "moore", "soft_modularization"])
def test_encoders_needing_a_hidden_layer(name):
    with pytest.raises(ValueError, match="hidden_sizes must have at least 1 layer"):
        make_network(name, 3, 2, 4, [])


def test_task_names_length_checked():
    with pytest.raises(ValueError, match="task_names has 2 entries but num_tasks is 3"):
        make_network("onehot", 3, 2, 3, [8], task_names=["a", "b"])


def test_input_shape_checked():
    net = make_network("onehot", 3, 2, 4, [8])
    with pytest.raises(ValueError, match="last dim 3"):
        net(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="task_ids shape"):
        net(torch.randn(5, 3), torch.zeros(4, dtype=torch.long))


def test_empty_hidden_sizes_allowed_where_meaningful():
    for name in ["onehot", "multihead", "embedding", "task_bottom", "paco"]:
        net = make_network(name, 3, 2, 4, [])
        assert net(torch.randn(5, 3), torch.arange(5) % 4).shape == (5, 2)


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", available())
def test_config_file_matches_options(name):
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "encoder" / f"{name}.yaml"))
    assert cfg.pop("name") == name
    defaults = options_of(name)
    assert set(cfg) == set(defaults)
    for key, value in cfg.items():
        default = defaults[key]
        assert (list(default) if isinstance(default, tuple) else default) == value, key
    # the config as Hydra would hand it over builds a working network
    net = make_network(name, 5, 2, 3, [16, 16], **OmegaConf.create(cfg))
    assert net(torch.randn(4, 5), torch.tensor([0, 1, 2, 0])).shape == (4, 2)


# ------------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("in_dim, k", [(3, 10), (20, 4)])
def test_task_linear_modes_agree_with_loop(in_dim, k):
    torch.manual_seed(0)
    layers = {m: TaskLinear(k, in_dim, 6, mode=m) for m in ("gather", "all", "auto")}
    for m in ("all", "auto"):
        layers[m].load_state_dict(layers["gather"].state_dict())
    x, t = torch.randn(40, in_dim), torch.randint(0, k, (40,))
    ref = torch.stack([layers["gather"].weight[ti] @ xi + layers["gather"].bias[ti] for xi, ti in zip(x, t)])
    for m, layer in layers.items():
        torch.testing.assert_close(layer(x, t), ref, msg=m)

    # and under vmap(grad) over task chunks, both strategies give the same per-task gradients
    xs = torch.randn(k, 3, in_dim)
    ids = torch.arange(k).unsqueeze(1).expand(k, 3)
    grads = {}
    for m in ("gather", "all"):
        layer = layers[m]
        params = {n: p.detach() for n, p in layer.named_parameters()}

        def loss(p, xb, tb, layer=layer):
            return functional_call(layer, p, (xb, tb)).pow(2).sum()

        grads[m] = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ids)
    for n in grads["gather"]:
        torch.testing.assert_close(grads["gather"][n], grads["all"][n])
        g = grads["gather"][n]  # (chunk, K, ...): chunk c only touches task c
        mask = torch.eye(k, dtype=torch.bool)
        assert torch.count_nonzero(g[~mask]) == 0


def test_parallel_linear_shared_and_split_inputs():
    torch.manual_seed(0)
    layer = ParallelLinear(3, 4, 5)
    x = torch.randn(7, 4)
    y = layer(x)
    ref = torch.stack([x @ layer.weight[i].T + layer.bias[i] for i in range(3)], dim=1)
    torch.testing.assert_close(y, ref)
    xs = torch.randn(7, 3, 4)
    ref2 = torch.stack([xs[:, i] @ layer.weight[i].T + layer.bias[i] for i in range(3)], dim=1)
    torch.testing.assert_close(layer(xs), ref2)


def test_gram_schmidt_orthonormal_and_span():
    torch.manual_seed(0)
    u = torch.randn(32, 4, 10)
    v = gram_schmidt(u)
    torch.testing.assert_close(v @ v.transpose(-1, -2), torch.eye(4).expand(32, 4, 4), atol=1e-5, rtol=0)
    # first vector is the normalised first input; span is preserved (v = R u, R triangular)
    torch.testing.assert_close(v[:, 0], u[:, 0] / u[:, 0].norm(dim=-1, keepdim=True))
    coeff = v @ u.transpose(-1, -2)  # (B, k, k): v_i . u_j, zero for j < i
    assert coeff.tril(-1).abs().max() < 1e-5
    # degenerate input stays finite
    assert torch.isfinite(gram_schmidt(torch.zeros(2, 3, 5))).all()


def test_mlp_activation_layout():
    mlp = MLP(3, [4, 5])
    assert [type(m).__name__ for m in mlp.layers] == ["Linear", "Linear"]
    with torch.no_grad():
        for layer in mlp.layers:
            layer.weight.fill_(-1.0)
            layer.bias.fill_(-1.0)
    # linear output can be negative, hidden layer is ReLU'd
    assert (mlp(torch.ones(1, 3)) < 0).all()
    assert (MLP(3, [4, 5], activate_last=True)(torch.randn(6, 3)) >= 0).all()


def test_a_one_output_layer_is_the_dense_layer_as_a_dot_product():
    torch.manual_seed(0)
    mlp = MLP(53, [64, 64, 1])
    assert isinstance(mlp.layers[-1], ScalarLinear) and type(mlp.layers[0]) is torch.nn.Linear
    head = mlp.layers[-1]
    x = torch.randn(1280, 64, requires_grad=True)
    dense = torch.nn.functional.linear(x, head.weight, head.bias)
    torch.testing.assert_close(head(x), dense, rtol=1e-6, atol=1e-6)
    upstream = torch.randn(1280, 1)
    got = torch.autograd.grad((head(x) * upstream).sum(), (x, head.weight, head.bias))
    want = torch.autograd.grad((dense * upstream).sum(), (x, head.weight, head.bias))
    for g, w in zip(got, want):  # the weight and bias gradients are sums over 1,280 rows: float32 order noise
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * w.abs().max().item())
    assert set(head.state_dict()) == {"weight", "bias"} and head.weight.shape == (1, 64)


# --------------------------------------------------------------------------------------- data
def test_shipped_task_data():
    import metaworld

    descriptions = json.loads((DATA / "task_descriptions.json").read_text())
    assert set(descriptions) == set(metaworld.ALL_V3_ENVIRONMENTS)
    assert len(descriptions) == 50 and all(len(s.split()) >= 2 for s in descriptions.values())
    data = np.load(DATA / "task_embeddings.npz")
    assert [str(n) for n in data["names"]] == list(descriptions)
    assert [str(d) for d in data["descriptions"]] == list(descriptions.values())
    emb = data["embeddings"]
    assert emb.shape == (50, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert str(data["method"]) in {"sentence-transformers", "transformers", "hash"}
    # distinct tasks get distinct embeddings
    sim = emb @ emb.T
    assert (sim[~np.eye(50, dtype=bool)] < 0.999).all()


def test_hash_embedding_fallback_is_deterministic(tmp_path):
    from mtrl.networks.embed_tasks import embed_hash, main

    a = embed_hash(["Push the puck to a goal.", "Open a drawer."])
    b = embed_hash(["Push the puck to a goal.", "Open a drawer."])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    desc = tmp_path / "d.json"
    desc.write_text(json.dumps({"a-v3": "Reach a goal.", "b-v3": "Open a door."}))
    out = tmp_path / "e.npz"
    assert main(["--descriptions", str(desc), "--out", str(out), "--method", "hash"]) == 0
    data = np.load(out)
    assert list(data["names"]) == ["a-v3", "b-v3"] and data["embeddings"].shape == (2, 384)
