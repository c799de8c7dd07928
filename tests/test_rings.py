"""The three rings of DESIGN.md, checked mechanically: core <- ml <- _napari."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "napari_mriseg"
GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy"}
TORCH = {"torch", "safetensors", "monai"}
QT_BINDINGS = {"PyQt5", "PyQt6", "PySide2", "PySide6"}


def _imports(path: Path) -> set[tuple[str, int]]:
    """Top-level module names imported anywhere in ``path`` (absolute imports, any depth),
    plus the package-relative targets of relative imports as ``.name``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add((node.module.split(".")[0], node.lineno))
            elif node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                target = base.relative_to(PACKAGE.parent).as_posix().replace("/", ".")
                found.add((f"{target}.{node.module or ''}", node.lineno))
    return found


def _violations(ring: str, banned_modules: set[str], banned_packages: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / ring).rglob("*.py")):
        for name, line in _imports(path):
            if name in banned_modules or name.startswith(banned_packages):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return bad


def test_core_imports_no_gui_no_torch_and_no_outer_ring():
    assert _violations("core", GUI | TORCH, ("napari_mriseg.ml", "napari_mriseg._napari", "napari_mriseg.cli")) == []


def test_ml_imports_no_gui_and_no_outer_ring():
    assert _violations("ml", GUI, ("napari_mriseg._napari", "napari_mriseg.cli")) == []


def test_no_direct_qt_binding_anywhere():
    bad = [v for ring in ("core", "ml", "_napari", "cli") for v in _violations(ring, QT_BINDINGS, ())]
    assert bad == []


def test_the_checker_catches_a_violation(tmp_path, monkeypatch):
    """The rule above must be able to fail: plant a GUI import in a fake core module."""
    fake = tmp_path / "napari_mriseg" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from qtpy import QtWidgets\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "napari_mriseg")
    assert _violations("core", GUI, ()) == ["napari_mriseg/core/bad.py:2 imports qtpy"]


@pytest.mark.parametrize("module", ["napari_mriseg", "napari_mriseg.core.case", "napari_mriseg.cli"])
def test_importing_loads_neither_torch_nor_qt(module):
    code = (f"import sys, {module}; "
            "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6', 'magicgui') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
