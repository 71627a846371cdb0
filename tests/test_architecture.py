"""The layering of ARCHITECTURE.md, "Layers", checked on the source: no import cycles in
`mpnn/` and `data_prep/`, no module importing a layer above its own, argparse only in the
command shells (`mpnn/cli/`), the public API of `mpnn/__init__.py` importable.

Imports are read from the source with `ast`, inside functions too (they run when called, so
a cycle through them is still a cycle), and without importing anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("mpnn", "data_prep")
# Layers, lowest first: a module may import its own layer and the ones below, never above.
# A module is in the layer of the first prefix that names it or a package above it; every
# other module of mpnn is `LIBRARY`; the package ``mpnn`` itself is the public API, above
# everything (it imports, lazily, what it exports).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("mpnn.errors", "mpnn.settings", "mpnn.atomic", "mpnn.host", "mpnn.graph_format",
                    "mpnn.verify", "mpnn.rundir")),
    ("conversion", ("data_prep",)),
    ("use", ("mpnn.predict", "mpnn.export", "mpnn.ase", "mpnn.design", "mpnn.scaling", "mpnn.bench",
             "mpnn.launch")),
    ("commands", ("mpnn.cli",)),
]
LIBRARY = "library"  # every other module of mpnn: between conversion and use
ORDER = ["foundation", "conversion", LIBRARY, "use", "commands", "public API"]


def layer_of(module: str) -> str:
    if module == "mpnn":
        return "public API"
    for name, prefixes in LAYERS:
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return name
    return LIBRARY


def modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of `PACKAGES` by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(source: str, module: str, known: set[str], is_package: bool = False) -> set[str]:
    """The modules of `known` that `source` (the text of `module`) imports, anywhere in it."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            # ``from mpnn import verify`` imports mpnn.verify; ``from mpnn.x import f`` imports mpnn.x.
            found.update(submodules or ({target} & known))
    # Python imports a module's packages before the module, so importing one of them (e.g.
    # ``mpnn.__version__``) adds no dependency.
    return {name for name in found if name != module and not module.startswith(name + ".")}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    known = modules(root)
    return {
        name: imports(path.read_text(), name, set(known), path.name == "__init__.py") for name, path in known.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_loop_through_a_function_level_import():
    known = {"a", "b", "c"}
    graph = {
        "a": imports("import b\n", "a", known),
        "b": imports("def f():\n    from c import g\n", "b", known),
        "c": imports("from a import h\n", "c", known),
    }
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_mpnn_and_data_prep():
    graph = import_graph()
    assert len(graph) > 80  # the whole tree was read
    assert cycles(graph) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if ORDER.index(layer_of(target)) > ORDER.index(layer_of(module))
    ]
    assert upward == []


def test_the_layer_check_sees_an_upward_import():
    assert layer_of("mpnn.errors") == "foundation" and layer_of("data_prep.water") == "conversion"
    assert layer_of("mpnn.training") == LIBRARY and layer_of("mpnn.cli.train") == "commands"
    assert layer_of("mpnn") == "public API"
    assert ORDER.index(layer_of("mpnn.cli.train")) > ORDER.index(layer_of("mpnn.graph_format.manifest"))


def test_argparse_lives_in_the_command_shells_only():
    users = sorted(
        name for name, path in modules().items()
        if "argparse" in imports(path.read_text(), name, {"argparse"}) and not name.startswith("mpnn.cli")
    )
    assert users == []


@pytest.mark.parametrize("name", __import__("mpnn").__all__)
def test_every_public_name_of_mpnn_is_importable(name):
    import mpnn

    assert getattr(mpnn, name) is not None
    assert name in dir(mpnn)


@pytest.mark.integration  # a fresh interpreter
def test_importing_mpnn_imports_no_tensorflow():
    import subprocess
    import sys

    code = "import sys, mpnn, mpnn.graph_format.manifest, data_prep.prep_water; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.integration  # fresh interpreters
@pytest.mark.parametrize(
    "module, command", [("data_prep.prep_water", "mpnn-prep-water"), ("mpnn.verify", "mpnn-verify")]
)
def test_a_library_module_run_as_a_command_names_the_command_instead_of_doing_nothing(module, command):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1
    shell = f"mpnn.cli.{module.split('.')[-1]}"
    assert done.stderr.strip() == f"python -m {module}: the command is {command} (or python -m {shell})"
