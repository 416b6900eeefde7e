"""mkdocs hook: pages that are generated at build time, so they cannot drift from the code.

`<!-- config-reference -->` becomes the tables of every option: names and defaults from the typed configs and
classes that own them (mtrl.config.schema, the agents' Config dataclasses, balancer / encoder / curriculum
keyword defaults), descriptions from the comments of the YAML files that expose them (configs/). `<!-- changelog
-->` becomes CHANGELOG.md.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
LINE = re.compile(r"^\s*(\w+):\s*(.*?)\s*(?:#\s*(.*))?$")


def yaml_comments(path: Path) -> dict[str, str]:
    """{key: its trailing comment} of a YAML file's `key: value  # comment` lines (any nesting level)."""
    out = {}
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        if match and match.group(3):
            out[match.group(1)] = match.group(3).strip()
    return out


def show(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def dataclass_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def keyword_defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def table(
    prefix: str, defaults: dict[str, Any], comments: dict[str, str], skip: tuple[str, ...] = (), top: tuple = ()
) -> str:
    """A markdown table of options `prefix<key>` (keys in `top` without the prefix: set at the top level)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for key, value in defaults.items():
        if key in skip:
            continue
        meaning = comments.get(key, "").replace("|", "\\|")
        rows.append(f"| `{'' if key in top else prefix}{key}` | {show(value)} | {meaning} |")
    return "\n".join(rows)


def config_reference() -> str:
    sys.path.insert(0, str(ROOT))
    from mtrl import balancers, curriculum, networks
    from mtrl.agents.registry import AGENTS
    from mtrl.config import schema

    train = yaml_comments(CONFIGS / "train.yaml")
    parts = ["## Run (`configs/train.yaml`, `mtrl.config.schema.TrainConfig`)", ""]
    parts.append(table("", dataclass_defaults(schema.TrainConfig), train, skip=("raw", "mode")))
    parts.append("\nThe `env`, `agent`, `encoder`, `balancer`, `curriculum` and `mode` groups pick the sections below.")
    parts += ["", "## Environment (`env`, `EnvConfig`)", ""]
    parts.append(table("env.", dataclass_defaults(schema.EnvConfig), yaml_comments(CONFIGS / "env" / "mt10.yaml")))
    parts += ["", "## Offline data (`mode=offline`, `OfflineConfig`)", ""]
    offline = {**train, **yaml_comments(CONFIGS / "mode" / "offline.yaml")}
    parts.append(table("offline.", dataclass_defaults(schema.OfflineConfig), offline, top=("dataset", "sharing")))
    parts += ["", "## Diagnostics (`DiagnosticsConfig`)", ""]
    parts.append(table("diagnostics.", dataclass_defaults(schema.DiagnosticsConfig), train))
    for name, cls in AGENTS.items():
        parts += ["", f"## Agent `agent={name}` (`{cls.Config.__module__}.{cls.Config.__name__}`)", ""]
        comments = yaml_comments(CONFIGS / "agent" / f"{name}.yaml")
        parts.append(table("agent.", dataclass_defaults(cls.Config), comments, skip=("name",)))
    parts += ["", "## Balancers (`balancer=<name>`, options `balancer.<key>`)", ""]
    for name in balancers.available():
        cls = balancers.registry.REGISTRY[name]
        comments = yaml_comments(CONFIGS / "balancer" / f"{name}.yaml")
        defaults = {"apply_to": list(cls.default_apply_to), **keyword_defaults(cls)}
        parts += [
            f"### `balancer={name}`",
            "",
            comments.get("name", ""),
            "",
            table("balancer.", defaults, comments),
            "",
        ]
    parts += ["## Encoders (`encoder=<name>`, options `encoder.<key>`)", ""]
    for name in networks.available():
        comments = yaml_comments(CONFIGS / "encoder" / f"{name}.yaml")
        options = networks.options_of(name)
        body = table("encoder.", options, comments) if options else "No options."
        parts += [f"### `encoder={name}`", "", body, ""]
    parts += ["## Curricula (`curriculum=<name>`, options `curriculum.<key>`)", ""]
    for name in curriculum.available():
        cls = curriculum.registry.REGISTRY[name]
        comments = yaml_comments(CONFIGS / "curriculum" / f"{name}.yaml")
        defaults = {"drives": cls.default_drives, "source": schema.CurriculumConfig.source, **keyword_defaults(cls)}
        parts += [f"### `curriculum={name}`", "", table("curriculum.", defaults, comments), ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "<!-- config-reference -->" in markdown:
        markdown = markdown.replace("<!-- config-reference -->", config_reference())
    if "<!-- method: " in markdown:
        markdown = method_cards(markdown)
    if "<!-- module: " in markdown:
        sys.path.insert(0, str(ROOT))
        markdown = MODULE.sub(lambda m: module_card(m.group(1), *m.group(2).split()), markdown)
    if "<!-- peer-speed -->" in markdown:
        markdown = markdown.replace("<!-- peer-speed -->", peer_speed_table())
    if "<!-- critic-comparison -->" in markdown:
        markdown = markdown.replace("<!-- critic-comparison -->", critic_comparison_table())
    if "<!-- changelog -->" in markdown:
        changelog = (ROOT / "CHANGELOG.md").read_text()
        markdown = markdown.replace("<!-- changelog -->", changelog.split("\n", 1)[1])
    return markdown


# ----- method pages: `<!-- method: <kind> <name> -->` becomes the method's card ---------------------------------
TESTS = ROOT / "tests"
#: Test files of each method beyond the suites every method of its kind runs.
OWN_TESTS = {
    "balancer": {"fairgrad": ["test_fairgrad_nashmtl.py"], "nashmtl": ["test_fairgrad_nashmtl.py"]},
    "agent": {"sac": ["test_sac.py", "test_sac_reference.py"], "cql": ["offline/test_offline_cql.py"]},
}
SHARED_TESTS = {
    "balancer": ["balancers/test_balancer_common.py", "balancers/test_mtrl_variants.py", "test_balanced_training.py"],
    "encoder": ["networks/test_networks_encoders.py", "networks/test_networks_api.py"],
    "agent": ["test_agents.py"],
}


def test_functions(path: Path, name: str | None = None) -> list[str]:
    """`name: first docstring line` of the test functions in a file (those mentioning `name`, if given)."""
    import ast

    if not path.is_file():
        return []
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            if name is not None and name not in ast.get_source_segment(path.read_text(), node):
                continue
            doc = (ast.get_docstring(node) or "").split("\n")[0]
            out.append(f"`{node.name}`" + (f": {doc}" if doc else ""))
    return out


def tests_section(kind: str, name: str) -> str:
    folder = {"balancer": "balancers", "encoder": "networks", "agent": ""}[kind]
    own = OWN_TESTS.get(kind, {}).get(name, [f"{folder}/test_{name}.py" if folder else f"test_{name}.py"])
    lines = []
    for relative in own:
        relative = relative if "/" in relative or not folder else f"{folder}/{relative}"
        found = test_functions(TESTS / relative)
        if found:
            lines += [f"- `tests/{relative}`:"] + [f"    - {item}" for item in found]
    for relative in SHARED_TESTS.get(kind, []):
        found = test_functions(TESTS / relative)
        if found:
            lines.append(f"- `tests/{relative}`: {len(found)} tests over the {kind}s (e.g. {found[0].split(':')[0]})")
    return "\n".join(lines) or "- (no tests of its own)"


def table_row(page: str, first_cell: str) -> list[str] | None:
    """The cells of the row of docs/<page>'s tables whose first cell is `first_cell`."""
    for line in (ROOT / "docs" / page).read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if cells and cells[0] == first_cell:
            return cells
    return None


def docstring(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def balancer_card(name: str) -> str:
    from mtrl import balancers

    cls = balancers.registry.REGISTRY[name]
    module = sys.modules[cls.__module__]
    comments = yaml_comments(CONFIGS / "balancer" / f"{name}.yaml")
    defaults = {"apply_to": list(cls.default_apply_to), **keyword_defaults(cls)}
    extra = sorted(balancers.make(name, 3).diagnostics())
    row = table_row("balancers.md", f"`{name}`")
    cost = f"{row[3]} at K = 10, {row[4]} at K = 50" if row else "not measured"
    logs = [
        "`balancer/<net>/grad_norm/<task>`, `balancer/<net>/mean_cosine`, `balancer/<net>/conflict_fraction` and "
        "the K x K cosine image `balancer/<net>/cosine` (every balancer, at the log steps `diagnostics.conflict_every` "
        "picks)",
        "`balancer/<net>/weight/<task>`: the task weights of the last update"
        + (" (constant 1/K)" if cls.static else ""),
    ] + [f"`balancer/<net>/{key}`: this method's own value" for key in extra]
    return "\n".join(
        [
            f"*{docstring(module).splitlines()[0]}* ({'gradient' if cls.kind == 'gradient' else 'loss'} method, "
            f"`{cls.__module__}.{cls.__name__}`)",
            "",
            "## Definition",
            "",
            docstring(cls),
            "",
            "## Command line",
            "",
            "```bash",
            f"python train.py balancer={name}    # balances {', '.join(cls.default_apply_to)} by default",
            "```",
            "",
            "## Options",
            "",
            table("balancer.", defaults, comments),
            "",
            "## What it logs",
            "",
            "\n".join(f"- {line}" for line in logs),
            "",
            "## Measured cost",
            "",
            f"One full SAC update with this balancer divided by the `uniform` update (`benchmarks/balancers.py`, "
            f"[Balancers](../balancers.md)): {cost}.",
            "",
            "## Reference tests",
            "",
            tests_section("balancer", name),
        ]
    )


def encoder_card(name: str) -> str:
    from mtrl import networks

    cls = networks._get(name)
    module = sys.modules[cls.__module__]
    options = networks.options_of(name)
    comments = yaml_comments(CONFIGS / "encoder" / f"{name}.yaml")
    row = table_row("encoders.md", f"`{name}`")
    cost = f"{row[3]} parameters (actor + 2 critics, MT10, 3 x 400); update cost {row[4]} x onehot's" if row else ""
    own = [item for item in test_functions(TESTS / "networks" / "test_networks_encoders.py", f'"{name}"')]
    return "\n".join(
        [
            f"*{docstring(module).splitlines()[0]}* (`{cls.__module__}.{cls.__name__}`)",
            "",
            "## Definition",
            "",
            docstring(module),
            "",
            docstring(cls),
            "",
            "## Command line",
            "",
            "```bash",
            f"python train.py encoder={name}                          # actor and critics",
            f"python train.py actor.encoder={name} critic.encoder=onehot   # per network",
            "```",
            "",
            "## Options",
            "",
            table("encoder.", options, comments) if options else "No options.",
            "",
            "## What it logs",
            "",
            "Nothing of its own: the agent's metrics (see [Training](../training.md#what-a-run-writes)).",
            "",
            "## Measured cost",
            "",
            (cost or "not measured") + " (`benchmarks/encoders.py`, [Encoders](../encoders.md)).",
            "",
            "## Reference tests",
            "",
            "\n".join(f"- {item}" for item in own) + ("\n" if own else "") + tests_section("encoder", name),
        ]
    )


def agent_card(name: str) -> str:
    from mtrl.agents.registry import AGENTS

    cls = AGENTS[name]
    module = sys.modules[cls.__module__]
    comments = yaml_comments(CONFIGS / "agent" / f"{name}.yaml")
    command = {
        "sac": "python train.py agent=sac experiment=mt10_mwplus",
        "cql": "python train.py mode=offline dataset=data/mt10.h5 env=mt10 env.protocol=mtrl sharing=cds",
        "bc": "python train.py mode=offline agent=bc dataset=data/mt10.h5 env=mt10 env.protocol=mtrl",
    }[name]
    return "\n".join(
        [
            f"*{docstring(module).splitlines()[0]}* ({cls.mode}, `{cls.__module__}.{cls.__name__}`; trains "
            f"{', '.join(cls.networks)})",
            "",
            "## Definition",
            "",
            docstring(module),
            "",
            "## Command line",
            "",
            "```bash",
            command,
            "```",
            "",
            "## Options",
            "",
            table("agent.", dataclass_defaults(cls.Config), comments, skip=("name",)),
            "",
            "## What it logs",
            "",
            f"`{name}/<metric>/<task>` and `{name}/<metric>/mean` for every per-task metric of its update, plus "
            "the balancer's values for each trained network (see [Training](../training.md#what-a-run-writes)).",
            "",
            "## Reference tests",
            "",
            tests_section("agent", name),
        ]
    )


CARDS = {"balancer": balancer_card, "encoder": encoder_card, "agent": agent_card}
METHOD = re.compile(r"<!-- method: (\w+) (\w+) -->")


def method_cards(markdown: str) -> str:
    sys.path.insert(0, str(ROOT))
    return METHOD.sub(lambda m: CARDS[m.group(1)](m.group(2)), markdown)


def peer_speed_table() -> str:
    """docs/results/peer_speed.json as markdown: the update per size and pinning, the loops per round."""
    table = json.loads((ROOT / "docs" / "results" / "peer_speed.json").read_text())
    lines = [
        f"Commit `{table['commit']}`, {table['machine']}; one pinned core and one thread each, both at once.",
        "",
        "| update, hidden | run | pinning | mtrl CPU ms | reference CPU ms | mtrl / reference | mtrl plan "
        "| acting ms (mtrl / ref) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table["update"]:
        plan = "compiled" if (row.get("mtrl_update_plan") or {}).get("compiled") else "eager"
        lines.append(
            f"| {row['hidden']} | {row.get('run', '')} | {row['pinning']} | {row['mtrl_update_cpu_ms']} | "
            f"{row['reference_update_cpu_ms']} | "
            f"{row['cpu_ratio']} | {plan} | {row['mtrl_act_ms']} / {row['reference_act_ms']} |"
        )
    if table["loop"]:
        lines += [
            "",
            "| loop (3 x 400, one update per vector step) | pinning | mtrl CPU ms / step | reference CPU ms / step | "
            "mtrl env steps/s | reference env steps/s | throughput mtrl / reference |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in table["loop"]:
            lines.append(
                f"| {row['round']} | {row['pinning']} | {row['mtrl_loop_cpu_ms_per_vector_step']} | "
                f"{row['reference_loop_cpu_ms_per_vector_step']} | {row['mtrl_env_steps_per_s']} | "
                f"{row['reference_env_steps_per_s']} | {row['throughput_ratio']} |"
            )
    return "\n".join(lines)


def critic_comparison_table() -> str:
    """docs/results/critic_comparison.json as markdown: each variant's success measures with their 95 % CIs."""
    data = json.loads((ROOT / "docs" / "results" / "critic_comparison.json").read_text())
    tasks = data["tasks"]

    def cell(measure: dict) -> str:
        low, high = measure["ci95"]
        return f"{measure['mean']:.3f} [{low:.3f}, {high:.3f}]"

    lines = [
        f"{len(tasks)} tasks ({', '.join(tasks)}), {data['env_steps']:,} env steps, seeds "
        f"{', '.join(map(str, data['seeds']))}; commit `{data.get('commit', '?')}`, {data.get('machine_name', '')}.",
        "",
        "| variant | seeds | final evaluation | last two evaluations | training episodes, last quarter | "
        + " | ".join(f"{t} (final)" for t in tasks)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(tasks),
    ]
    for name, entry in data["variants"].items():
        per_task = " | ".join(f"{entry['per_task_final'][t]:.2f}" for t in tasks)
        lines.append(
            f"| `{name}` | {entry['seeds']} | {cell(entry['final'])} | {cell(entry['last_two_evaluations'])} | "
            f"{cell(entry['training_last_quarter'])} | {per_task} |"
        )
    return "\n".join(lines)


def module_card(module_name: str, *test_files: str) -> str:
    """A module's docstring as its definition and the tests of the given files (paths under tests/)."""
    import importlib

    module = importlib.import_module(module_name)
    lines = ["## Definition", "", f"(`{module_name}`)", "", docstring(module), "", "## Reference tests", ""]
    for relative in test_files:
        found = test_functions(TESTS / relative)
        lines += [f"- `tests/{relative}`:"] + [f"    - {item}" for item in found]
    return "\n".join(lines)


MODULE = re.compile(r"<!-- module: ([\w.]+)((?: [\w/.]+)*) -->")
