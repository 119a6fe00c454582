"""The package's layers: every import points down (or sideways within a layer, without cycles); `import kprune_lib`
stays light; the model code shipped with each pruned folder imports only torch and transformers."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kprune_lib"
# top to bottom, as the package docstring draws them; __init__ is the lazy public surface, above everything
LAYERS = [
    ("cli",),  # the command line dispatches to every layer, `kprune sweep` included
    ("workbook",),
    ("api", "finetune"),
    ("method", "artifacts", "data"),
    ("costs",),
    ("encoder",),
    ("config", "_atomic", "_version", "_provenance", "_aliases"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    head = module.split(".")[1] if "." in module else ""
    for depth, names in enumerate(LAYERS):
        if head in names:
            return len(LAYERS) - depth  # higher = further up
    raise AssertionError(f"{module} is in no layer; add its folder to LAYERS and the package docstring")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported kprune_lib module, line, at module level) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import submodule` imports the submodule
            names = [f"{mod}.{a.name}" if (PKG.parent / f"{mod}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                     or (PKG.parent / f"{mod}.{a.name}".replace(".", "/")).is_dir() else mod for a in node.names]
        else:
            continue
        out += [(n, node.lineno, id(node) in top) for n in names if n == "kprune_lib" or n.startswith("kprune_lib.")]
    return out


FILES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_import_points_down_or_sideways():
    upward = []
    for path in FILES:
        me = module_name(path)
        if me == "kprune_lib":
            continue
        for target, line, _ in imports(path):
            if target == "kprune_lib":
                upward.append(f"{path.relative_to(PKG.parent)}:{line} imports the package itself")
            elif rank(target) > rank(me):
                upward.append(f"{path.relative_to(PKG.parent)}:{line} imports {target} (a layer above)")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for path in FILES:
        me = module_name(path)
        graph[me] = {t for t, _, _ in imports(path) if t != me}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t in graph and not state.get(t):
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)


def test_shipped_model_code_is_standalone():
    for name in ("configuration_kprune.py", "modeling_kprune.py"):
        tree = ast.parse((PKG / "encoder" / "hf" / name).read_text())
        roots = {(a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0]
                 for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and not getattr(n, "level", 0)
                 for a in (n.names if isinstance(n, ast.Import) else [n])}
        assert roots <= {"__future__", "math", "torch", "transformers", "huggingface_hub", "typing", "dataclasses", "copy"}, (name, roots)


def test_import_kprune_lib_does_not_import_torch():
    code = "import kprune_lib, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_old_module_paths_still_import_with_a_warning():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import kprune_lib.io\nexcept DeprecationWarning as w:\n    print(w)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "kprune_lib.io moved to kprune_lib.artifacts.checkpoint" in out
    from kprune_lib._aliases import MOVED

    assert all((PKG / new.replace(".", "/")).with_suffix(".py").exists() or (PKG / new.replace(".", "/")).is_dir()
               for new in MOVED.values())
