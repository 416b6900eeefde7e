"""An Inductor graph pass for matmuls with few output columns: compute only the columns that are read, and
compute narrow products transposed.

1. A slice of the last dimension is moved through single-use reshapes, sums and slices down to the matmul, which
   then multiplies by the sliced matrix. In SAC's actor step the gradient reaches the action through the critics'
   first layer, whose input is [observation, action, task one-hot]: autograd computes that layer's whole input
   gradient (1280 x 53 at MT10's sizes) and keeps 4 of its 53 columns. XLA (the JAX reference) moves such slices
   into the dot; Inductor does not.
2. A product with at most `NARROW` columns and many more rows, A @ B, is computed as (B^T @ A^T)^T: MKL's GEMM is
   slow for a handful of output columns (1280 x 64 times 64 x 4: 87 us, transposed 21 us; the actor's 8-wide
   output layer 124 against 40 us, one thread, AMD EPYC).
Each output element is the same dot product as before, so values are unchanged up to the GEMM's summation order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

aten = torch.ops.aten
RESHAPES = (aten.reshape.default, aten.view.default, aten._unsafe_view.default)
SLICE_ARGS, SLICE_DEFAULTS = ("self", "dim", "start", "end", "step"), (None, 0, None, None, 1)


def shape_of(node: Any) -> tuple[int, ...] | None:
    """The static shape an FX node's value has (None: not a node, no metadata, or symbolic)."""
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    if not isinstance(value, torch.Tensor) or not all(isinstance(s, int) for s in value.shape):
        return None
    return tuple(value.shape)


def last_dim_slice(node: fx.Node) -> tuple[fx.Node, int, int] | None:
    """(input, start, stop) of `node` if it is a unit-step slice of its input's last dimension, bounds clamped."""
    if node.op != "call_function" or node.target != aten.slice.Tensor:
        return None
    args = [*node.args, *SLICE_DEFAULTS[len(node.args) :]]
    source, dim, start, stop, step = (node.kwargs.get(name, arg) for name, arg in zip(SLICE_ARGS, args))
    shape = shape_of(source)
    if shape is None or step != 1 or dim not in (-1, len(shape) - 1):
        return None
    start, stop, _ = slice(start, stop).indices(shape[-1])
    return (source, start, stop) if stop > start else None


def sliced(graph: fx.Graph, before: fx.Node, value: fx.Node, start: int, stop: int) -> fx.Node:
    """A new node before `before`: `value`[..., start:stop] (with its value's metadata, as later passes read)."""
    with graph.inserting_before(before):
        node = graph.call_function(aten.slice.Tensor, (value, -1, start, stop))
    node.meta["val"] = value.meta["val"][..., start:stop]
    return node


#: At most this many output columns (and 16 times as many rows) make a product narrow.
NARROW = 8


def transpose_narrow(graph: fx.Graph, node: fx.Node) -> bool:
    """Rewrite a narrow `mm(A, B)` as `mm(B^T, A^T)^T`; whether it did."""
    if node.op != "call_function" or node.target != aten.mm.default:
        return False
    left, right = node.args
    rows, cols = shape_of(left), shape_of(right)
    if rows is None or cols is None or not (cols[1] <= NARROW and rows[0] >= 16 * cols[1]):
        return False
    with graph.inserting_before(node):
        transposed = [graph.call_function(aten.permute.default, (x, [1, 0])) for x in (right, left)]
        product = graph.call_function(aten.mm.default, tuple(transposed))
        result = graph.call_function(aten.permute.default, (product, [1, 0]))
    for new, value in zip(transposed, (right, left)):
        new.meta["val"] = value.meta["val"].t()
    product.meta["val"] = node.meta["val"].t().contiguous()
    result.meta["val"] = node.meta["val"]
    node.replace_all_uses_with(result)
    graph.erase_node(node)
    return True


def push_down(graph: fx.Graph, node: fx.Node) -> bool:
    """Rewrite one last-dimension slice `node` one step towards a matmul; whether it changed the graph."""
    found = last_dim_slice(node)
    if found is None:
        return False
    source, start, stop = found
    if len(source.users) != 1 or source.op != "call_function":
        return False
    replacement = None
    if (inner_slice := last_dim_slice(source)) is not None:
        inner, offset, _ = inner_slice
        replacement = sliced(graph, node, inner, offset + start, offset + stop)
    elif source.target == aten.add.Tensor and not source.kwargs:
        a, b = source.args
        if shape_of(a) == shape_of(b) == shape_of(source):
            with graph.inserting_before(node):
                replacement = graph.call_function(
                    aten.add.Tensor, (sliced(graph, node, a, start, stop), sliced(graph, node, b, start, stop))
                )
    elif source.target in RESHAPES:
        inner, outer = source.args[0], shape_of(source)
        if shape_of(inner) is not None and outer is not None and shape_of(inner)[-1] == outer[-1]:
            with graph.inserting_before(node):
                replacement = graph.call_function(
                    source.target, (sliced(graph, node, inner, start, stop), [*outer[:-1], stop - start])
                )
    elif source.target == aten.mm.default:
        left, right = source.args
        with graph.inserting_before(node):
            replacement = graph.call_function(aten.mm.default, (left, sliced(graph, node, right, start, stop)))
    if replacement is None:
        return False
    replacement.meta["val"] = node.meta.get("val")
    node.replace_all_uses_with(replacement)
    graph.erase_node(node)
    graph.eliminate_dead_code()
    return True


class NarrowMatmuls(CustomGraphPass):
    """Inductor's `post_grad_custom_pre_pass`: every last-dimension slice moved down to its matmul (where the
    intermediate values have no other use), then every narrow matmul transposed."""

    def __call__(self, graph: fx.Graph) -> None:
        changed = True
        while changed:
            changed = any(push_down(graph, node) for node in list(graph.nodes))
        for node in list(graph.nodes):
            transpose_narrow(graph, node)

    def uuid(self) -> bytes:
        return get_hash_for_files((__file__,))


__all__ = ["NARROW", "NarrowMatmuls"]
