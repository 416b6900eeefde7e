"""Task grouping: the search finds the brute-force best partition; the command line and its sweep command."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st

from mtrl.balancers.affinity import AffinityAccumulator
from mtrl.grouping import best_partition, main, partition_score
from tests.conftest import compose_config


def set_partitions(items):
    """Every partition of `items` into non-empty blocks (independent of the code under test)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first]] + partition
        for i in range(len(partition)):
            yield partition[:i] + [[first] + partition[i]] + partition[i + 1 :]


def score_by_definition(Z, partition, singletons):
    """Mean over tasks j of the mean over the other members i of j's group of Z[i, j]."""
    per_task = []
    for group in partition:
        for j in group:
            others = [i for i in group if i != j]
            per_task.append(
                np.mean([Z[i, j] for i in others])
                if others
                else (0.0 if singletons == "allow" or len(Z) == 1 else -np.inf)
            )
    return float(np.mean(per_task))


def brute_force(Z, groups, singletons):
    return max(score_by_definition(Z, p, singletons) for p in set_partitions(list(range(len(Z)))) if len(p) <= groups)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), k=st.integers(1, 8), data=st.data(), singletons=st.sampled_from(["forbid", "allow"])
)
def test_exact_search_finds_the_brute_force_optimum(seed, k, data, singletons):
    groups = data.draw(st.integers(1, k))
    Z = np.random.default_rng(seed).normal(size=(k, k))
    result = best_partition(Z, groups, singletons, search="exact")
    assert sorted(t for g in result.groups for t in g) == list(range(k)) and len(result.groups) <= groups
    assert result.score == pytest.approx(score_by_definition(Z, result.groups, singletons), abs=1e-12)
    assert result.score == pytest.approx(brute_force(Z, groups, singletons), abs=1e-9)
    assert result.score == pytest.approx(partition_score(Z, result.groups, singletons), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(2, 7),
    groups=st.integers(1, 3),
    singletons=st.sampled_from(["forbid", "allow"]),
)
def test_wide_beam_search_is_exact_on_small_problems(seed, k, groups, singletons):
    groups = min(groups, k)
    Z = np.random.default_rng(seed).normal(size=(k, k))
    result = best_partition(Z, groups, singletons, search="beam", beam_width=5000)
    assert result.search == "beam"
    assert result.score == pytest.approx(brute_force(Z, groups, singletons), abs=1e-9)


@pytest.mark.parametrize("k, groups", [(20, 4), (50, 5)])
def test_beam_search_recovers_planted_groups_on_many_tasks(k, groups):
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(k) % groups)
    Z = np.where(labels[:, None] == labels[None, :], 1.0, -1.0) + 0.3 * rng.normal(size=(k, k))
    result = best_partition(Z, groups)  # auto: beam above 12 tasks
    assert result.search == "beam"
    planted = sorted(sorted(np.flatnonzero(labels == g).tolist()) for g in range(groups))
    assert sorted(result.groups) == planted


def test_degenerate_inputs():
    assert best_partition(np.array([[0.3]]), 1).groups == [[0]]
    Z = np.zeros((4, 4))
    result = best_partition(Z, 2)
    assert result.score == 0.0 and all(len(g) >= 2 for g in result.groups)
    Z[0, 1] = np.nan
    with pytest.raises(ValueError, match="unmeasured"):
        best_partition(Z, 2)
    np.fill_diagonal(Z := np.ones((3, 3)), np.nan)  # the diagonal (self-affinity) is not used
    assert best_partition(Z, 2).groups == [[0, 1, 2]]


# ----------------------------------------------------------------------------- command line
TASKS = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3"]


def write_run(root, tasks=TASKS, affinity=None):
    """A run directory as train.py writes it (env.json, config.yaml) with accumulated affinities."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "env.json").write_text(json.dumps({"benchmark": "custom", "tasks": tasks}))
    (root / "config.yaml").write_text(yaml.safe_dump({"env": {"tasks": tasks, "protocol": "mtrl"}, "seed": 1}))
    acc = AffinityAccumulator(tasks)
    if affinity is not None:
        acc.add("critic", affinity)
        acc.add("critic", affinity)
        acc.save(root)
    return root


def planted_affinity():
    # reach & pick-place help each other, push & door-open help each other, the rest hurts
    Z = -np.ones((4, 4))
    Z[0, 2] = Z[2, 0] = Z[1, 3] = Z[3, 1] = 0.5
    return Z


def test_cli_prints_the_partition_and_a_sweep_command_hydra_composes(tmp_path, capsys):
    run = write_run(tmp_path / "multirun" / "default" / "balancer=pcgrad,seed=1", affinity=planted_affinity())
    assert main([str(run), "groups=2"]) == 0
    out = capsys.readouterr().out
    assert "reach-v3, pick-place-v3" in out and "push-v3, door-open-v3" in out and "score: 0.5" in out
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("python train.py -m"))
    words = shlex.split(command)
    assert words[:3] == ["python", "train.py", "-m"] and "env.protocol=mtrl" in words
    override = OverridesParser.create().parse_overrides([words[3]])[0]
    values = list(override.sweep_string_iterator())
    assert override.is_sweep_override() and len(values) == 2
    composed = [list(compose_config("train", [f"env.tasks={v}"]).env.tasks) for v in values]
    assert composed == [["reach-v3", "pick-place-v3"], ["push-v3", "door-open-v3"]]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["{run}", "groups=9"], "groups=9 is not allowed; expected an integer in [1, 4]"),
        (["{run}", "groups=two"], "groups='two' is not allowed; expected an integer"),
        (["{run}", "group=2"], "unknown option group (did you mean groups?)"),
        (["{run}", "network=actor"], "network=actor is not allowed; expected one of: critic"),
        (["{run}", "search=exhaustive"], "search='exhaustive' is not allowed"),
        (["{run}", "extra"], "unexpected argument 'extra'"),
        (["{empty}"], "affinity.npz does not exist"),
        (["{missing}"], "is not a directory"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys, args, fragment):
    paths = {
        "run": write_run(tmp_path / "run", affinity=planted_affinity()),
        "empty": write_run(tmp_path / "empty"),
        "missing": tmp_path / "nope",
    }
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and fragment in err, err


def test_cli_refuses_affinities_of_other_tasks(tmp_path, capsys):
    run = write_run(tmp_path / "run", affinity=planted_affinity())
    (run / "env.json").write_text(json.dumps({"tasks": TASKS[::-1]}))
    assert main([str(run)]) == 2
    assert "but env.json has" in capsys.readouterr().err
