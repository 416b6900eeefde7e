"""make()/available(): names, kinds, and one-line errors that name the bad value."""

import pytest
import torch

import mtrl.balancers as B
from mtrl.errors import UserError

KINDS = {
    "cagrad": "gradient",
    "fairgrad": "gradient",
    "nashmtl": "gradient",
    "pcgrad": "gradient",
    "mgda": "gradient",
    "paretomtl": "gradient",
    "famo": "loss",
    "igb": "loss",
    "igbv2": "loss",
    "uniform": "loss",
}


def one_line_error(fn, *fragments):
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return info.value


def test_available_lists_every_method_with_its_kind():
    assert B.available() == sorted(KINDS)
    for name, kind in KINDS.items():
        assert B.make(name, num_tasks=3).kind == kind


def test_unknown_name_lists_choices():
    err = one_line_error(
        lambda: B.make("x", num_tasks=3), "unknown balancer 'x'", "choose one of: cagrad, fairgrad, famo"
    )
    assert isinstance(err, UserError)


def test_unknown_option_names_it_and_the_allowed_ones():
    one_line_error(lambda: B.make("cagrad", num_tasks=3, alpha=2.0), "'alpha'", "c, max_iter, rescale, tol")
    one_line_error(lambda: B.make("uniform", num_tasks=3, lr=1.0), "'lr'", "allowed: none")


@pytest.mark.parametrize(
    "name, opts, fragments",
    [
        ("cagrad", {"c": -0.1}, ["balancer.c=-0.1", ">= 0"]),
        ("cagrad", {"rescale": "yes"}, ["rescale", "'yes'"]),
        ("fairgrad", {"alpha": 0.0}, ["balancer.alpha=0.0", "> 0"]),
        ("fairgrad", {"solver": "cvxpy"}, ["solver='cvxpy'", "least_squares, newton"]),
        ("famo", {"lr": 0}, ["balancer.lr=0", "> 0"]),
        ("famo", {"gamma": -1.0}, ["gamma", ">= 0", "-1.0"]),
        ("famo", {"eps": float("nan")}, ["eps", "nan"]),
        ("famo", {"variant": "exact"}, ["variant='exact'", "paper, mtrl, authors"]),
        ("famo", {"variant": "mtrl", "min_losses": 0.1}, ["balancer.min_losses=0.1", "0 with balancer.variant=mtrl"]),
        ("cagrad", {"variant": "authors"}, ["variant='authors'", "paper, mtrl"]),
        ("cagrad", {"variant": "mtrl", "rescale": False}, ["rescale=False", "true with balancer.variant=mtrl"]),
        ("fairgrad", {"variant": "sgd"}, ["variant='sgd'", "paper, mtrl"]),
        ("pcgrad", {"variant": True}, ["variant=True", "paper, mtrl"]),
        ("pcgrad", {"variant": "mtrl", "reduction": "sum"}, ["reduction='sum'", "mean with balancer.variant=mtrl"]),
        ("famo", {"min_losses": [0.0, 0.0]}, ["min_losses", "3 numbers", "got 2"]),
        ("pcgrad", {"reduction": "median"}, ["reduction='median'", "mean, sum"]),
        ("pcgrad", {"seed": -1}, ["seed", ">= 0", "-1"]),
        ("nashmtl", {"update_every": 0}, ["update_every", ">= 1", "0"]),
        ("nashmtl", {"max_norm": -2.0}, ["max_norm", "> 0", "-2.0"]),
        ("igb", {"base_step": 0}, ["base_step", ">= 1", "0"]),
    ],
)
def test_bad_values_raise_one_line_naming_value_and_range(name, opts, fragments):
    one_line_error(lambda: B.make(name, num_tasks=3, **opts), *fragments)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_bad_num_tasks_and_bad_inputs(name):
    one_line_error(lambda: B.make(name, num_tasks=0), "num_tasks", ">= 1")
    bal = B.make(name, num_tasks=3)
    if bal.kind == "gradient":
        one_line_error(lambda: bal.combine(torch.zeros(2, 5)), "(3, D)", "(2, 5)")
    else:
        one_line_error(lambda: bal.weights(torch.ones(4)), "(3,)", "(4,)")


def test_state_of_another_balancer_is_rejected():
    one_line_error(lambda: B.make("famo", num_tasks=2).load_state_dict({"loss_sum": 0}), "state_dict keys")
