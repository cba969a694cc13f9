"""The layout read from the imports: each package imports only the floors below it, no task
folder imports another, and no module imports itself back through others (no circle).

    utility  <-  upstream  <-  corpora  <-  pretrain, downstream  <-  analysis  <-  commands
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

FLOORS = {"utility": 1, "upstream": 2, "corpora": 3, "pretrain": 4, "downstream": 4, "analysis": 5}
COMMANDS = ("hub", "hubconf", "run_pretrain", "run_downstream")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    modules = {name: REPO / f"{name}.py" for name in COMMANDS}
    for package in FLOORS:
        modules.update({module_name(path): path for path in sorted((REPO / package).rglob("*.py"))})
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (anywhere in it, lazily too), resolved to the most
    specific known module (``from upstream.s3prl import read`` -> ``upstream.s3prl.read``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` imports the module; ``from module import name``, the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # A module's own packages are imported before it anyway: no edge back to them.
            if target and not (name == target or name.startswith(f"{target}.")):
                found.add(target)
    return found


MODULES = project_modules()
GRAPH = {name: imports_of(name, path, set(MODULES)) for name, path in MODULES.items()}


def floor(module: str) -> int:
    return FLOORS.get(module.split(".")[0], 6)


def task_folder(module: str) -> str | None:
    """``downstream.asr_ctc.expert`` -> ``asr_ctc`` when that folder is a task folder."""
    parts = module.split(".")
    if parts[0] != "downstream" or len(parts) < 2:
        return None
    return parts[1] if (REPO / "downstream" / parts[1] / "config.yaml").is_file() else None


def test_the_layering_check_sees_the_project():
    assert {"utility.typed_config", "upstream.s3prl.read", "corpora.index", "downstream.heads.ctc"} <= set(MODULES)
    assert "upstream.s3prl.keys" in GRAPH["upstream.s3prl.export"]  # relative imports resolved


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_a_package_imports_only_the_floors_below_it(package):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] != package and floor(target) >= floor(module)
    )
    assert not wrong, wrong


def test_no_task_folder_imports_another_task_folder():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if task_folder(target) is not None and task_folder(target) != task_folder(module)
    )
    assert not wrong, wrong


def test_no_import_circle():
    """Depth-first search for a back edge; the circle found is named."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)) is not None:
                return circle
        state[module] = 2
        path.pop()
        return None

    for module in sorted(GRAPH):
        if module not in state:
            circle = visit(module)
            assert circle is None, " -> ".join(circle)


def defined_names(path: Path) -> set[str]:
    """Top-level names a module binds: definitions, assignments, imports (re-exports too)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try)):  # names bound under a guard count too
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
            names.update(d.name for d in ast.walk(node) if isinstance(d, (ast.FunctionDef, ast.ClassDef)))
    return names


# s3prl's own packages, imported under the same top-level names by the parity script while it
# runs inside s3prl's tree (scripts/s3prl_objective_parity.py, ``s3prl_side``).
S3PRL_MODULES = ("pretrain.mockingjay.", "upstream.mockingjay.")


def test_every_import_of_the_project_names_something_that_exists():
    """Lazy imports inside functions (scripts and benchmarks use them) fail only when the
    function runs: a module that moves must not leave one behind."""
    files = [*MODULES.values(), *sorted((REPO / "scripts").glob("*.py")), *sorted((REPO / "tests").rglob("*.py"))]
    roots = {name.split(".")[0] for name in MODULES}
    wrong = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):  # ``import package.module``: the module must exist
                wrong += [
                    f"{path.relative_to(REPO)}:{node.lineno}: no module {alias.name}"
                    for alias in node.names
                    if alias.name.split(".")[0] in roots and alias.name not in MODULES
                ]
                continue
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module or node.module.split(".")[0] not in roots:
                continue
            if node.module.startswith(S3PRL_MODULES) and path.name == "s3prl_objective_parity.py":
                continue
            if node.module not in MODULES:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno}: no module {node.module}")
                continue
            names = defined_names(MODULES[node.module])
            for alias in node.names:
                if alias.name != "*" and alias.name not in names and f"{node.module}.{alias.name}" not in MODULES:
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.module} has no {alias.name}")
    assert not wrong, "\n".join(wrong)
