"""mkdocs hook: pages that are generated at build time, so they cannot drift from the code.

`<!-- config-reference -->` becomes the tables of every option: names and defaults from the typed configs and
classes that own them (mtrl.config.schema, the agents' Config dataclasses, balancer / encoder / curriculum
keyword defaults), descriptions from the comments of the YAML files that expose them (configs/). `<!-- changelog
-->` becomes CHANGELOG.md.
"""

from __future__ import annotations

import dataclasses
import inspect
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
    if "<!-- changelog -->" in markdown:
        changelog = (ROOT / "CHANGELOG.md").read_text()
        markdown = markdown.replace("<!-- changelog -->", changelog.split("\n", 1)[1])
    return markdown
