"""Run settings: YAML file -> nested dict -> dotted ``-o key.sub=value`` overrides.

A knob lives in exactly one place (the YAML file); overrides may only change keys that exist
there, and their values are parsed with ``yaml.safe_load`` (numbers, booleans, lists), never
evaluated as code.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"runner.total_steps=1000"`` -> (["runner", "total_steps"], 1000)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} must look like key.sub=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as error:
        raise ValueError(f"override {text!r}: cannot parse the value ({error})") from error
    return key.strip().split("."), parsed


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with each override applied; an unknown key raises,
    listing the keys that exist at that level."""
    config = copy.deepcopy(config)
    for text in overrides:
        keys, value = parse_override(text)
        node = config
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[:depth]) or "the top level"
                known = sorted(node) if isinstance(node, dict) else []
                raise KeyError(f"override {text!r}: no key {key!r} at {where}; known keys: {known}")
            if depth == len(keys) - 1:
                node[key] = value
            else:
                node = node[key]
    return config
