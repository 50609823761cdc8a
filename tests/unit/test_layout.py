"""The package's layout is its architecture: imports point one way.

plugin and operator -> k8s -> core; plugin and operator never import each other; core imports
nothing of ours but the leaves: `whereabouts.errors`, `whereabouts.files` and
`whereabouts.jsontext`, which every layer may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "whereabouts"
LEAVES = {"errors", "files", "jsontext"}
ALLOWED = {
    "core": {"core"},
    "k8s": {"core", "k8s"},
    "plugin": {"core", "k8s", "plugin"},
    "operator": {"core", "k8s", "operator"},
}


def imports_of(path: Path) -> set[str]:
    """The `whereabouts.*` modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("whereabouts"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if node.module == "whereabouts")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("whereabouts"))
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_lives_in_a_layer():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "errors", "files", "jsontext"], top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ALLOWED)


def test_imports_point_one_way():
    wrong = []
    for path in PACKAGE.glob("*/*.py"):
        own = path.parent.name
        for module in imports_of(path):
            target = layer(module)
            if target in LEAVES or module in ("whereabouts", "whereabouts.__version__"):
                continue
            if target not in ALLOWED[own]:
                wrong.append(f"{own}/{path.name} imports {module}")
    assert not wrong, "\n".join(wrong)
