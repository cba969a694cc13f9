"""Run settings, the same way for every runner: dataclass defaults <- YAML files <- ``-o`` overrides.

- Each default is written once, in a typed dataclass (:func:`defaults` turns it into a dict).
- YAML files and ``-o key.sub=value`` overrides may only change keys that exist (a misspelt
  key raises, listing the keys there); values are parsed with ``yaml.safe_load`` and never
  evaluated as code; types are checked once, when the dataclass is built
  (``utility.typed_config.dataclass_from_dict``).
- Keys renamed since an older release are translated with a one-line notice (:func:`renamed`),
  so old configs, command lines and stored runs keep working.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

log = logging.getLogger("config")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    return data


def defaults(config_class: type) -> dict[str, Any]:
    """The defaults of a config dataclass as a nested dict (every key, so any can be overridden)."""
    return dataclasses.asdict(config_class())


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


def renamed(key: str, table: Mapping[str, str], source: str) -> str:
    """``key`` (dotted), or its current name when ``table`` says it was renamed (with a notice)."""
    if key in table:
        log.warning("%s: %s is now called %s; using it as %s", source, key, table[key], table[key])
        return table[key]
    return key


def rename_keys(data: dict[str, Any], table: Mapping[str, str], source: str) -> dict[str, Any]:
    """A copy of nested ``data`` with every old dotted key of ``table`` moved to its new name."""
    data = copy.deepcopy(data)
    for old, new in table.items():
        *parents, leaf = old.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *new_parents, new_leaf = renamed(old, table, source).split(".")
        target = data
        for part in new_parents:
            target = target.setdefault(part, {})
        target[new_leaf] = value
    return data


def apply_overrides(
    config: dict[str, Any], overrides: Iterable[str], renames: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return a copy of ``config`` with each override applied; an unknown key raises,
    listing the keys that exist at that level. Old names in ``renames`` are translated."""
    config = copy.deepcopy(config)
    for text in overrides:
        keys, value = parse_override(text)
        keys = renamed(".".join(keys), renames or {}, f"-o {text}").split(".")
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


def merge_strict(base: dict[str, Any], update: dict[str, Any], source: str) -> dict[str, Any]:
    """``base`` with ``update`` merged in recursively; a key ``base`` lacks raises, naming ``source``."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key not in merged:
            raise ValueError(f"{source}: unknown key {key!r}; known keys: {sorted(merged)}")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merge_strict(merged[key], value, f"{source}.{key}")
        else:
            merged[key] = copy.deepcopy(value)
    return merged
