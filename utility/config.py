"""Run settings, the same way for every runner: dataclass defaults <- YAML files <- ``-o`` overrides.

- Each default is written once, in a typed dataclass (:func:`defaults` turns it into a dict).
- YAML files and ``-o key.sub=value`` overrides may only change keys that exist (a misspelt
  key raises, listing the keys there); values are parsed with :func:`parse_yaml` (PyYAML's safe
  loader, so nothing is evaluated as code, refusing a key given twice in one mapping, which
  PyYAML would silently keep the last of) and a YAML error is one line naming the file and line;
  types are checked once, when the dataclass is built (``utility.typed_config.dataclass_from_dict``).
- Keys renamed since an older release are translated with a one-line notice (:func:`renamed`),
  so old configs, command lines and stored runs keep working.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

log = logging.getLogger("config")


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (the safe
    loader keeps the last one: a second ``runner:`` section silently replaces the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" merges are overridable by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first_line[key]}); keep one", key_node.start_mark
                    )
            except TypeError:  # an unhashable key: the safe loader refuses it itself
                continue
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed with :class:`StrictLoader`; an error is one line naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ValueError(f"{source}{where}: not valid YAML: {' '.join(detail.split())}") from error


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"config file {path} is a folder; give the YAML file inside it (-c FOLDER/config.yaml)")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    return data


def defaults(config_class: type) -> dict[str, Any]:
    """The defaults of a config dataclass as a nested dict (every key, so any can be overridden)."""
    return dataclasses.asdict(config_class())


# A value holding " key.sub=": several overrides quoted into one word ("a=1 b=2").
SEVERAL_OVERRIDES = re.compile(r"\s[A-Za-z_]\w*(\.\w+)*=")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"runner.total_steps=1000"`` -> (["runner", "total_steps"], 1000)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} must look like key.sub=value")
    if SEVERAL_OVERRIDES.search(value):
        raise ValueError(
            f"override {text!r} holds several KEY=VALUE in one word (quoted together?): give each its own word, "
            f"-o {' '.join(text.split())}"
        )
    parsed = parse_yaml(value, f"override {text!r}") if value.strip() else ""
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


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``data`` as ``{"section.key": value}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


FIXED_BY_DATA = "these keys fix the data, masks and random draws"
RESTORED_FROM_CHECKPOINT = (
    "the optimizer and its schedule are restored from the checkpoint as they were, so a new value would "
    "be stored but have no effect"
)


def check_resume_unchanged(
    stored: dict[str, Any], resumed: dict[str, Any], fixed: Iterable[str], source: str, reason: str = FIXED_BY_DATA
) -> None:
    """Refuse to resume with a setting under one of the dotted prefixes ``fixed`` changed,
    however it was changed (``-o``, an option): the run would go on from a state it did not
    reach with these settings (other held-out masks, another data split), which an exact
    resume cannot do, or the setting is restored from the checkpoint (``reason`` says which).
    ``stored``/``resumed`` are the nested settings before and after."""
    before, after = flatten(stored), flatten(resumed)
    prefixes = tuple(fixed)
    changed = [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if (key in prefixes or key.startswith(tuple(f"{p}." for p in prefixes))) and before.get(key) != after.get(key)
    ]
    if changed:
        raise ValueError(
            f"cannot resume {source} with other settings for {'; '.join(changed)}: the run was trained with the "
            f"first value ({reason}: {', '.join(prefixes)}); drop the change, "
            "or start a new run with it"
        )


def absolute_paths(config: dict[str, Any], keys: Iterable[str], source: str, stored: bool = False) -> dict[str, Any]:
    """A copy of nested ``config`` with each relative path under the dotted ``keys`` made
    absolute against the current folder: a run stores where its data is, not where it was
    started from, so ``-e`` from another folder reads the same corpus.

    ``stored``: ``config`` comes from an existing run (older runs stored relative paths as
    written); such a path is resolved the same way, and refused, naming it, when nothing exists
    there (the command was run from another folder than the run's)."""
    config = copy.deepcopy(config)
    for dotted in keys:
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(leaf) if isinstance(node, dict) else None
        if not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
            continue
        absolute = os.path.abspath(os.path.expanduser(value))
        if stored and not os.path.exists(absolute):
            raise FileNotFoundError(
                f"{source}: the relative path {dotted}={value!r} points to {absolute}, which does not exist: run the "
                "command from the folder the run was started in, or give an absolute path"
            )
        node[leaf] = absolute
    return config
