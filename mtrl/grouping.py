"""Task grouping by inter-task affinity (Fifty et al., NeurIPS 2021, TAG) from a run's measured affinities.

`python -m mtrl.grouping <run dir> groups=2 [network=critic] [singletons=forbid] [search=auto] [beam_width=64]`
reads `<run dir>/affinity.npz` (written by `mtrl.balancers.affinity.AffinityAccumulator`) and the task
names of `<run dir>/env.json`, finds the partition of the tasks into at most `groups` groups with the
best score, prints it, and prints the sweep that trains one run per group.

Score (TAG's network-selection notebook, google-research tag/network_selection/TAG_network_selection.ipynb;
read, not copied): in a group S, the affinity onto task j is the mean over the other members i of
Z[i, j]; a partition's score is the mean over tasks of the affinity onto each task from its own group.
A group's contribution is therefore sum_{i != j in S} Z[i, j] / (|S| - 1). The notebook scores a task
alone at -1e6, i.e. never leaves a task alone when it can be grouped: `singletons=forbid` (default);
`singletons=allow` scores a task alone 0 (no transfer). The notebook also allows a task in several
groups (network selection); a training sweep needs a partition, so groups here are disjoint.

Search: `exact` maximises over every partition by dynamic programming over the 2^K task subsets
(f_m(T) = max over S in T holding T's first task of value(S) + f_{m-1}(T \\ S); about 3^K / 2 pairs per
layer), used by `auto` up to 12 tasks. `beam` (auto above 12 tasks, e.g. MT50) builds partitions task
by task keeping the `beam_width` best partial partitions by their exact score so far, then improves the
best one by local search (move one task to another or a new group, or swap two tasks of different groups,
best improving change first) until no change helps: a heuristic, not a proof of optimality.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from mtrl import checks
from mtrl.balancers.affinity import AFFINITY_FILE, AffinityAccumulator
from mtrl.errors import UserError

#: `search=auto` uses the exact search up to this many tasks; `search=exact` is refused above EXACT_LIMIT.
EXACT_AUTO = 12
EXACT_LIMIT = 14
OPTIONS = ("groups", "network", "singletons", "search", "beam_width")
USAGE = (
    "usage: python -m mtrl.grouping <run dir> [groups=2] [network=critic|actor] [singletons=forbid|allow] "
    "[search=auto|exact|beam] [beam_width=64]"
)


@dataclass
class Grouping:
    """A partition of tasks 0..K-1 (groups sorted by their first task) and its score."""

    groups: list[list[int]]
    score: float  # mean over tasks of the affinity onto each task from its group
    search: str  # "exact" or "beam"


def _pair_sums(Z: np.ndarray) -> np.ndarray:
    """Z + Z^T with a zero diagonal: entry (i, j) is the affinity exchanged by tasks i and j."""
    S = Z + Z.T
    np.fill_diagonal(S, 0.0)
    return S


def _value(pairs: np.ndarray, members: Sequence[int], singletons: str) -> float:
    """A group's value from the pair sums Z + Z^T: sum over pairs / (size - 1); a task alone 0 or -inf."""
    size = len(members)
    if size == 1:
        return 0.0 if singletons == "allow" else -np.inf
    idx = np.asarray(members)
    return float(pairs[np.ix_(idx, idx)].sum() / 2.0 / (size - 1))


def group_value(Z: np.ndarray, members: Sequence[int], singletons: str = "forbid") -> float:
    """sum over members j of the mean affinity onto j from the other members; a task alone: 0 or -inf."""
    return _value(_pair_sums(Z), members, singletons)


def _score(pairs: np.ndarray, groups: Sequence[Sequence[int]], singletons: str) -> float:
    if pairs.shape[0] == 1:
        return 0.0
    return sum(_value(pairs, g, singletons) for g in groups) / pairs.shape[0]


def partition_score(Z: np.ndarray, groups: Sequence[Sequence[int]], singletons: str = "forbid") -> float:
    """Mean over tasks of the affinity onto each task from its group (a single task in total scores 0)."""
    return _score(_pair_sums(Z), groups, singletons)


def _canonical(groups: Sequence[Sequence[int]]) -> list[list[int]]:
    return sorted((sorted(int(t) for t in g) for g in groups if len(g)), key=lambda g: g[0])


def best_partition_exact(Z: np.ndarray, max_groups: int, singletons: str = "forbid") -> Grouping:
    """The best partition into at most ``max_groups`` groups, by dynamic programming over task subsets."""
    k = Z.shape[0]
    if k == 1:
        return Grouping([[0]], 0.0, "exact")
    n = 1 << k
    bits = (np.arange(n)[:, None] >> np.arange(k)[None, :]) & 1
    size = bits.sum(axis=1)
    pair_total = 0.5 * np.einsum("mi,ij,mj->m", bits, _pair_sums(Z), bits)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(size >= 2, pair_total / np.maximum(size - 1, 1), 0.0)
    if singletons == "forbid":
        value[size == 1] = -np.inf
    masks, subsets = _subset_pairs(k)  # every (T, S): S within T and holding T's lowest task
    layers = [np.where(np.arange(n) == 0, 0.0, value)]  # f_1: one group
    for _ in range(2, max_groups + 1):
        best = np.full(n, -np.inf)
        best[0] = 0.0
        np.maximum.at(best, masks, value[subsets] + layers[-1][masks ^ subsets])
        layers.append(best)
    groups, rest = [], n - 1
    for layer in range(len(layers) - 1, -1, -1):  # rebuild: the group holding the lowest remaining task
        if rest == 0:
            break
        previous = layers[layer - 1] if layer > 0 else np.where(np.arange(n) == 0, 0.0, -np.inf)
        candidates = subsets[masks == rest]
        chosen = int(candidates[np.argmax(value[candidates] + previous[rest ^ candidates])])
        groups.append([t for t in range(k) if chosen >> t & 1])
        rest ^= chosen
    groups = _canonical(groups)
    return Grouping(groups, partition_score(Z, groups, singletons), "exact")


def _subset_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrays (T, S) over every non-empty task set T and every S within T that holds T's lowest task."""
    masks, subsets = [], []
    for mask in range(1, 1 << k):
        low = mask & -mask
        rest = mask ^ low
        sub = rest
        while True:  # every subset of rest, plus the lowest task
            masks.append(mask)
            subsets.append(sub | low)
            if sub == 0:
                break
            sub = (sub - 1) & rest
    return np.array(masks), np.array(subsets)


def best_partition_beam(Z: np.ndarray, max_groups: int, singletons: str = "forbid", width: int = 64) -> Grouping:
    """A good partition into at most ``max_groups`` groups: beam search over task insertions + local search."""
    k = Z.shape[0]
    if k == 1:
        return Grouping([[0]], 0.0, "beam")
    S = _pair_sums(Z)
    # A state: (groups as tuples, per-group pair totals). Singletons count 0 while groups may still grow.
    beam: list[tuple[tuple[tuple[int, ...], ...], tuple[float, ...]]] = [((), ())]
    for task in range(k):
        children = {}
        for groups, totals in beam:
            options = [(g + (task,), t + float(S[task, list(g)].sum())) for g, t in zip(groups, totals)]
            for index, (grown, total) in enumerate(options):
                key = groups[:index] + (grown,) + groups[index + 1 :]
                children[key] = totals[:index] + (total,) + totals[index + 1 :]
            if len(groups) < max_groups:
                children[groups + ((task,),)] = totals + (0.0,)

        def partial(item: tuple) -> float:
            groups, totals = item
            return sum(t / (len(g) - 1) for g, t in zip(groups, totals) if len(g) > 1)

        beam = sorted(children.items(), key=lambda item: (-partial(item), item[0]))[:width]
    feasible = [
        [list(g) for g in groups] for groups, _ in beam if singletons == "allow" or all(len(g) > 1 for g in groups)
    ]
    start = feasible[0] if feasible else [list(range(k))]
    groups = _local_search(Z, start, max_groups, singletons)
    return Grouping(groups, partition_score(Z, groups, singletons), "beam")


def _local_search(Z: np.ndarray, groups: list[list[int]], max_groups: int, singletons: str) -> list[list[int]]:
    """Apply the best improving single-task move or two-task swap until none improves the score."""
    pairs = _pair_sums(Z)
    current = _canonical(groups)
    score = _score(pairs, current, singletons)
    k = Z.shape[0]
    for _ in range(10 * k * k):
        best, best_score = None, score + 1e-12 * max(1.0, abs(score))
        for candidate in _neighbours(current, max_groups, k):
            value = _score(pairs, candidate, singletons)
            if value > best_score:
                best, best_score = candidate, value
        if best is None:
            break
        current, score = _canonical(best), best_score
    return current


def _neighbours(groups: list[list[int]], max_groups: int, k: int):
    """Partitions one move (a task to another or a new group) or one swap (two tasks of two groups) away."""
    where = {t: gi for gi, g in enumerate(groups) for t in g}
    for task in range(k):
        source = where[task]
        targets = list(range(len(groups))) + ([len(groups)] if len(groups) < max_groups else [])
        for target in targets:
            if target == source or (target == len(groups) and len(groups[source]) == 1):
                continue
            moved = [list(g) for g in groups] + ([[]] if target == len(groups) else [])
            moved[source].remove(task)
            moved[target].append(task)
            yield [g for g in moved if g]
    for a in range(k):
        for b in range(a + 1, k):
            if where[a] != where[b]:
                swapped = [[b if t == a else a if t == b else t for t in g] for g in groups]
                yield swapped


def best_partition(
    Z: np.ndarray, max_groups: int, singletons: str = "forbid", search: str = "auto", beam_width: int = 64
) -> Grouping:
    """The best (exact) or a good (beam) partition of the tasks of affinity matrix ``Z`` (K, K)."""
    k = Z.shape[0]
    off_diagonal = ~np.eye(k, dtype=bool)
    if Z.shape != (k, k) or not np.isfinite(Z[off_diagonal]).all():
        raise UserError("the affinity matrix has unmeasured (non-finite) entries; measure longer")
    checks.integer("groups", max_groups, 1, k)
    checks.choice("singletons", singletons, ("forbid", "allow"))
    checks.choice("search", search, ("auto", "exact", "beam"))
    checks.integer("beam_width", beam_width, 1)
    if search == "exact" and k > EXACT_LIMIT:
        raise checks.fail("search", search, f"auto or beam for {k} tasks (exact is limited to {EXACT_LIMIT} tasks)")
    if search == "exact" or (search == "auto" and k <= EXACT_AUTO):
        return best_partition_exact(Z, max_groups, singletons)
    return best_partition_beam(Z, max_groups, singletons, beam_width)


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str]) -> tuple[Path, dict[str, str]]:
    """(run dir, {key: value}) from `<run dir> key=value ...`; one-line errors."""
    run_dir, rest = argv[0], list(argv[1:])  # the run dir comes first (sweep job dirs contain "=")
    extra = [a for a in rest if "=" not in a]
    if extra:
        raise UserError(f"unexpected argument '{extra[0]}' (options are key=value); {USAGE}")
    options = dict(a.split("=", 1) for a in rest)
    checks.unknown_keys("", list(options), OPTIONS)
    return Path(run_dir), options


def _integer(options: dict[str, str], key: str, default: int) -> int:
    raw = options.get(key, str(default))
    try:
        return int(raw)
    except ValueError:
        raise checks.fail(key, raw, "an integer") from None


def read_run(run_dir: Path) -> tuple[list[str], AffinityAccumulator, dict]:
    """The run's task names (env.json), its accumulated affinities and its config (config.yaml, or {})."""
    if not run_dir.is_dir():
        raise UserError(f"'{run_dir}' is not a directory; pass a run directory (it holds env.json and {AFFINITY_FILE})")
    env_file = run_dir / "env.json"
    try:
        tasks = [str(t) for t in json.loads(env_file.read_text())["tasks"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"cannot read the task names from {env_file} ({type(err).__name__}); is '{run_dir}' a run directory?"
        ) from None
    acc = AffinityAccumulator.load(run_dir)
    if acc.tasks != tasks:
        raise UserError(f"{run_dir / AFFINITY_FILE} holds tasks {acc.tasks} but env.json has {tasks}")
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    return tasks, acc, config if isinstance(config, dict) else {}


def sweep_command(tasks: Sequence[str], groups: Sequence[Sequence[int]], protocol: Optional[str]) -> str:
    """The `train.py -m` command that trains one run per group (a Hydra choice sweep over task lists)."""
    values = ",".join("[" + ",".join(tasks[t] for t in g) + "]" for g in groups)
    parts = ["python", "train.py", "-m", shlex.quote(f"env.tasks={values}")]
    if protocol:
        parts.append(f"env.protocol={protocol}")
    return " ".join(parts)


def report(run_dir: Path, options: dict[str, str]) -> str:
    """The text `python -m mtrl.grouping` prints."""
    tasks, acc, config = read_run(run_dir)
    network, singletons = options.get("network"), options.get("singletons", "forbid")
    max_groups = _integer(options, "groups", 2)
    Z = acc.mean(network)
    result = best_partition(
        Z, max_groups, singletons, options.get("search", "auto"), _integer(options, "beam_width", 64)
    )
    measured = ", ".join(f"{n}: {int(acc.counts[n].max())} measurements" for n in acc.networks)
    using = network or (acc.networks[0] if len(acc.networks) == 1 else f"the mean over {', '.join(acc.networks)}")
    lines = [
        f"affinities: {run_dir / AFFINITY_FILE} ({measured}; using {using})",
        (
            f"best partition into at most {max_groups} group(s) ({result.search} search, singletons={singletons}); "
            "score = mean over tasks of the mean affinity onto each task from its group"
        ),
        f"score: {result.score:.6g}",
    ]
    for i, group in enumerate(result.groups, 1):
        mean_onto = group_value(Z, group, "allow") / len(group)
        names = ", ".join(tasks[t] for t in group)
        lines.append(f"  group {i} (mean affinity onto its tasks {mean_onto:.6g}): {names}")
    protocol = (config.get("env") or {}).get("protocol")
    lines += [
        "train each group (add the other overrides of the original run):",
        "  " + sweep_command(tasks, result.groups, protocol),
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + (__doc__ or ""))
        return 0
    try:
        print(report(*parse_args(argv)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
