"""Every value a YAML config file states equals the default of the typed config (or class) that owns it.

YAML files only select and override: a value that differs from its owner's default must be listed in
EXPLICIT_OVERRIDES below (with why), so library and command line can never drift apart silently.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtrl import balancers, curriculum, networks
from mtrl.agents.registry import AGENTS
from mtrl.config import schema

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: (file, key) -> why the file's value is not the owner's default.
EXPLICIT_OVERRIDES = {
    ("env/mt50.yaml", "tasks"): "the group selects MT50",
    ("env/mt25.yaml", "tasks"): "the group selects MT25",
    ("env/none.yaml", "tasks"): "no env: evaluate.py takes the checkpoint's tasks",
}


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


def same(a: Any, b: Any) -> bool:
    """Equal values, lists and tuples alike; a bool never equals a number."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def load(relative: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / relative).read_text()) or {}


def differences(relative: str, values: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        if (relative, key) in EXPLICIT_OVERRIDES:
            continue
        if key not in defaults:
            out.append(f"{relative}: {key} is no option of its owner")
        elif not same(defaults[key], value):
            out.append(f"{relative}: {key}={value!r} but the typed default is {defaults[key]!r}")
    return out


def group_files(group: str) -> list[str]:
    return sorted(f"{group}/{p.name}" for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("relative", group_files("balancer"))
def test_balancer_yaml_values_are_the_balancer_defaults(relative):
    values = load(relative)
    cls = balancers.registry.REGISTRY[values.pop("name")]
    defaults = {**keyword_defaults(cls), "apply_to": list(cls.default_apply_to)}
    if cls.kind == "gradient":
        defaults.update(loss_weighting=None, loss_weighting_options={})
    assert differences(relative, values, defaults) == []


@pytest.mark.parametrize("relative", group_files("encoder"))
def test_encoder_yaml_values_are_the_network_defaults(relative):
    values = load(relative)
    assert differences(relative, values, networks.options_of(values.pop("name"))) == []


@pytest.mark.parametrize("relative", group_files("agent"))
def test_agent_yaml_values_are_the_agent_config_defaults(relative):
    values = load(relative)
    values.pop("defaults", None)
    assert differences(relative, values, dataclass_defaults(AGENTS[values["name"]].Config)) == []


@pytest.mark.parametrize("relative", group_files("curriculum"))
def test_curriculum_yaml_values_are_the_curriculum_defaults(relative):
    values = load(relative)
    name = values.pop("name")
    if name == "none":
        assert values == {}
        return
    cls = curriculum.registry.REGISTRY[name]
    defaults = {**keyword_defaults(cls), "drives": cls.default_drives, "source": schema.CurriculumConfig.source}
    assert differences(relative, values, defaults) == []


@pytest.mark.parametrize("relative", group_files("env"))
def test_env_yaml_values_are_the_env_config_defaults(relative):
    assert differences(relative, load(relative), dataclass_defaults(schema.EnvConfig)) == []


def test_train_yaml_values_are_the_train_config_defaults():
    values = load("train.yaml")
    for key in ("defaults", "hydra", "sweep", "actor", "critic"):  # Hydra's and the per-network encoder sections
        values.pop(key)
    offline = {"dataset": values.pop("dataset"), "sharing": values.pop("sharing"), **values.pop("offline")}
    found = differences("train.yaml", values.pop("diagnostics"), dataclass_defaults(schema.DiagnosticsConfig))
    found += differences("train.yaml", offline, dataclass_defaults(schema.OfflineConfig))
    found += differences("train.yaml", values, dataclass_defaults(schema.TrainConfig))
    assert found == []


def test_evaluate_and_collect_yaml_values_are_their_config_defaults():
    evaluate = load("evaluate.yaml")
    for key in ("defaults", "hydra"):
        evaluate.pop(key)
    video = {"record": evaluate.pop("record")}
    video.update({key[len("video_") :]: evaluate.pop(key) for key in list(evaluate) if key.startswith("video_")})
    video["directory"] = video.pop("dir")
    collect = load("collect.yaml")
    for key in ("defaults", "hydra"):
        collect.pop(key)
    found = differences("evaluate.yaml", evaluate, dataclass_defaults(schema.EvaluateConfig))
    found += differences("evaluate.yaml", video, dataclass_defaults(schema.VideoConfig))
    found += differences("collect.yaml", collect, dataclass_defaults(schema.CollectConfig))
    assert found == []


def test_a_changed_default_is_caught():
    """The comparison itself fails on a difference (guards against a test that cannot fail)."""
    assert differences("x.yaml", {"c": 0.4}, {"c": 0.9}) == ["x.yaml: c=0.4 but the typed default is 0.9"]
    assert differences("x.yaml", {"typo": 1}, {"c": 0.9}) == ["x.yaml: typo is no option of its owner"]
