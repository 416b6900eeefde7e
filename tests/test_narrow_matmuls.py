"""The Inductor pass for narrow matmuls: only the read columns computed, narrow products transposed, same values."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from mtrl.agents.narrow_matmuls import NarrowMatmuls

aten = torch.ops.aten


def action_gradient(grad_1, weight_1, grad_2, weight_2, hidden, head):
    """The actor step's shape of it: two critics' first-layer input gradients, summed over [obs, action] and the
    action's 4 columns kept; and an 8-wide output layer."""
    first = torch.mm(grad_1, weight_1).reshape(10, 128, 53)[..., :43]
    second = torch.mm(grad_2, weight_2).reshape(10, 128, 53)[..., :43]
    return (first + second)[..., 39:43], torch.mm(hidden, head)


def matmul_shapes(graph: torch.fx.Graph) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    products = [node for node in graph.nodes if node.target == aten.mm.default]
    return [tuple(tuple(arg.meta["val"].shape) for arg in node.args) for node in products]


def test_the_pass_computes_only_the_action_columns_and_transposes_narrow_products():
    torch.manual_seed(0)
    inputs = [torch.randn(1280, 64), torch.randn(64, 53), torch.randn(1280, 64), torch.randn(64, 53)]
    inputs += [torch.randn(1280, 64), torch.randn(64, 8)]
    module = make_fx(action_gradient)(*inputs)
    assert sorted(matmul_shapes(module.graph)) == sorted([((1280, 64), (64, 53))] * 2 + [((1280, 64), (64, 8))])
    NarrowMatmuls()(module.graph)
    module.recompile()
    # each product is narrow now, and computed transposed: (4 or 8) x 64 times 64 x 1280
    assert sorted(matmul_shapes(module.graph)) == sorted([((4, 64), (64, 1280))] * 2 + [((8, 64), (64, 1280))])
    for got, want in zip(module(*inputs), action_gradient(*inputs)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)


def test_a_slice_whose_intermediate_has_other_uses_is_left_alone():
    def shared(grad, weight):
        full = torch.mm(grad, weight)
        return full[:, 39:43], full.sum()

    inputs = [torch.randn(1280, 64), torch.randn(64, 53)]
    module = make_fx(shared)(*inputs)
    NarrowMatmuls()(module.graph)
    module.recompile()
    assert matmul_shapes(module.graph) == [((1280, 64), (64, 53))]
    for got, want in zip(module(*inputs), shared(*inputs)):
        torch.testing.assert_close(got, want)
