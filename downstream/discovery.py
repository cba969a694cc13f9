"""Finding task folders: ``<tasks dir>/<task>/{config.yaml, dataset.py, expert.py}``.

The core never lists tasks: any folder holding these files is one. A folder holding some of
them but not all is an error naming the folder, and so is an ``expert.py`` without a
``DownstreamExpert(Expert)`` class or a ``dataset.py`` without ``build_datasets``.
``dataset.py`` may also name its ``data`` section's dataclass ``DataConfig``; then every data
key has its default there, the task's YAML states only what differs, and ``build_datasets``
receives the section as a ``DataConfig`` (without one, as a dict).

A *variant* is a folder holding only a ``config.yaml`` whose first key is ``extends: TASK``:
it runs TASK's code with TASK's config, then its own on top (``phone_1hidden`` is
``phone_linear`` with one hidden layer).
Task folders are imported by path, so a tasks directory anywhere works the same way
(``expert.py`` may import from its own folder with ``from .dataset import ...``). A tasks
directory of one's own (``--tasks-dir``) is searched first, the built-in tasks after: its
tasks come beside the built-in ones (one of the same name takes its place), and its variants
can extend either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

from utility.cli import USER_CODE_PACKAGE_PREFIX
from utility.config import load_yaml
from utility.typed_config import dataclass_from_dict

from .base import Expert, TaskData
from .frames import FrameGrid

TASKS_DIR = Path(__file__).resolve().parent
REQUIRED_FILES = ("config.yaml", "dataset.py", "expert.py")
EXPERT_CLASS = "DownstreamExpert"
DATASET_FUNCTION = "build_datasets"
DATA_CONFIG_CLASS = "DataConfig"
EXTENDS = "extends"


@dataclass(frozen=True)
class Task:
    name: str
    folder: Path
    expert_class: type[Expert]
    build_datasets: Callable[[Any, FrameGrid], TaskData]
    data_config_class: Optional[type] = None
    config_files: tuple[Path, ...] = ()  # the base task's first, for a variant

    @property
    def config_path(self) -> Path:
        return self.folder / "config.yaml"

    def data_section(self, data: dict[str, Any]) -> Any:
        """The ``data`` section as ``build_datasets`` receives it: a ``DataConfig`` when the task
        declares one (as ``Expert`` receives its typed ``expert`` section), else the dict."""
        if self.data_config_class is None:
            return data
        return dataclass_from_dict(self.data_config_class, data, "data")


def task_folders(tasks_dir: Path = TASKS_DIR) -> dict[str, Path]:
    """Task name -> folder: the tasks of ``tasks_dir``, then the built-in ones it does not name.

    Raises ValueError naming the folder when one holds some of the files but not all.
    """
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        raise FileNotFoundError(f"tasks directory not found: {tasks_dir}")
    builtin = {} if tasks_dir.resolve() == TASKS_DIR else _folders_in(TASKS_DIR)
    return {**builtin, **_folders_in(tasks_dir)}


def _folders_in(tasks_dir: Path) -> dict[str, Path]:
    found = {}
    for folder in sorted(p for p in tasks_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        present = [name for name in REQUIRED_FILES if (folder / name).is_file()]
        if not present:
            continue  # not a task folder (core code, caches)
        missing = [name for name in REQUIRED_FILES if name not in present]
        if missing and not (present == ["config.yaml"] and base_task(folder) is not None):
            raise ValueError(
                f"task folder {folder} is missing {', '.join(missing)}; a task folder needs "
                f"{', '.join(REQUIRED_FILES)} (copy downstream/example to start one), or a config.yaml "
                f"starting with '{EXTENDS}: TASK' to run another task's code with other settings"
            )
        found[folder.name] = folder
    return found


def base_task(folder: Path) -> Optional[str]:
    """The task a variant folder extends, or None for a folder with its own code."""
    if (folder / "expert.py").is_file() or (folder / "dataset.py").is_file():
        return None
    base = load_yaml(folder / "config.yaml").get(EXTENDS)
    if base is not None and not isinstance(base, str):
        raise ValueError(f"{folder / 'config.yaml'}: '{EXTENDS}' must name a task, got {base!r}")
    return base


def available_tasks(tasks_dir: Path = TASKS_DIR) -> list[str]:
    return sorted(task_folders(tasks_dir))


def _import_from_folder(folder: Path, module: str) -> ModuleType:
    """Import ``folder/<module>.py`` as a submodule of a package made for ``folder``."""
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    # A folder of one's own is the user's code: its errors are shown with their place (utility.cli).
    prefix = "downstream_task_" if folder.resolve().parent == TASKS_DIR else f"{USER_CODE_PACKAGE_PREFIX}task_"
    package = f"{prefix}{folder.name}_{digest}"
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[package] = importlib.util.module_from_spec(spec)
    try:
        return importlib.import_module(f"{package}.{module}")
    except ImportError as error:
        raise ImportError(f"task folder {folder}: cannot import {module}.py ({error})") from error


def load_task(name: str, tasks_dir: Path = TASKS_DIR) -> Task:
    """Import and check one task; unknown names raise listing the available tasks."""
    folders = task_folders(tasks_dir)
    if name not in folders:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(folders)) or '(none)'}")
    folder = folders[name]
    base = base_task(folder)
    if base is not None:
        if base == name or (base in folders and base_task(folders[base]) is not None):
            raise ValueError(f"{folder / 'config.yaml'}: '{EXTENDS}: {base}' must name a task with its own code")
        if base not in folders:
            raise ValueError(
                f"{folder / 'config.yaml'}: '{EXTENDS}: {base}' names no task; available tasks: {', '.join(sorted(folders))}"
            )
        task = load_task(base, tasks_dir)
        return Task(name, folder, task.expert_class, task.build_datasets, task.data_config_class,
                    (*task.config_files, folder / "config.yaml"))
    expert_module = _import_from_folder(folder, "expert")
    expert_class = getattr(expert_module, EXPERT_CLASS, None)
    if not (inspect.isclass(expert_class) and issubclass(expert_class, Expert)):
        raise TypeError(
            f"task folder {folder}: expert.py must define class {EXPERT_CLASS}, a subclass of "
            f"downstream.base.Expert (found {expert_class!r})"
        )
    if inspect.isabstract(expert_class):
        missing = sorted(expert_class.__abstractmethods__)
        raise TypeError(f"task folder {folder}: {EXPERT_CLASS} does not implement {missing}")
    dataset_module = _import_from_folder(folder, "dataset")
    build = getattr(dataset_module, DATASET_FUNCTION, None)
    if not callable(build):
        raise TypeError(
            f"task folder {folder}: dataset.py must define {DATASET_FUNCTION}(config, grid) -> TaskData"
        )
    data_config = getattr(dataset_module, DATA_CONFIG_CLASS, None)
    if data_config is not None and not dataclasses.is_dataclass(data_config):
        raise TypeError(f"task folder {folder}: dataset.py's {DATA_CONFIG_CLASS} must be a dataclass")
    return Task(name, folder, expert_class, build, data_config, (folder / "config.yaml",))
