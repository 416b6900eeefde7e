"""The documentation site: every page reachable from the navigation, the generated configuration reference
complete, the README short and its test command the one CI runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import yaml

from mtrl.agents.registry import AGENTS
from mtrl.config import schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages(entries) -> set[str]:
    pages: set[str] = set()
    for entry in entries:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages |= nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == nav_pages(config["nav"])


def test_every_balancer_encoder_and_agent_has_its_page():
    from mtrl import balancers, networks

    pages = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    for folder, kind, names in (
        ("balancers", "balancer", balancers.available()),
        ("encoders", "encoder", networks.available()),
        ("agents", "agent", list(AGENTS)),
    ):
        for name in names:
            page = f"{folder}/{name}.md"
            assert page in pages, page
            assert f"<!-- method: {kind} {name} -->" in (DOCS / page).read_text(), page


def test_the_configuration_reference_lists_every_option():
    spec = importlib.util.spec_from_file_location("generated", DOCS / "hooks" / "generated.py")
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    text = generated.config_reference()
    for field in dataclasses.fields(schema.TrainConfig):
        if field.name not in ("raw", "mode") and field.default is not dataclasses.MISSING:
            assert f"| `{field.name}` |" in text, field.name
    for field in dataclasses.fields(schema.EnvConfig):
        assert f"| `env.{field.name}` |" in text, field.name
    for cls in AGENTS.values():
        for field in dataclasses.fields(cls.Config):
            if field.name != "name":
                assert f"| `agent.{field.name}` |" in text, field.name
    assert "| `env.reward_version` | `v2` | Meta-World's reward functions" in text  # a default and its comment


def test_readme_is_short_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    ci = (ROOT / ".ci" / "run").read_text().splitlines()[-1]
    command = next(line for line in readme.splitlines() if "python -m pytest" in line)
    assert command == re.sub(r" -q\b", "", ci)
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
