"""The package's structure (docs/architecture.md): no module takes another module's private
names, so what is shared is public where it lives. The import layers and cycles themselves are
held by ``lint-imports`` in ``make test``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("genppl", "models_gallery")


def _module(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(root: Path) -> list[str]:
    """Each ``from pkg.x import _name`` under ``root`` in a module other than ``pkg.x``, where
    ``_name`` is a name defined in ``x`` (a private submodule of a package, such as
    ``models_gallery._vae``, is the package's own shared code and is allowed)."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            here = _module(path, root)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ImportFrom) or node.module is None or node.level \
                        or node.module.split(".")[0] not in PACKAGES or node.module == here:
                    continue
                folder = root.joinpath(*node.module.split("."))
                found += [f"{path.relative_to(root)}:{node.lineno} takes {a.name} from "
                          f"{node.module}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")
                          and not (folder / f"{a.name}.py").exists()
                          and not (folder / a.name).is_dir()]
    return found


def test_no_module_takes_another_modules_private_names() -> None:
    taken = private_imports(ROOT)
    assert not taken, "make these public where they live, or move them:\n" + "\n".join(taken)


def test_the_check_sees_a_private_name_and_allows_a_private_module(tmp_path: Path) -> None:
    (tmp_path / "genppl" / "exact").mkdir(parents=True)
    (tmp_path / "models_gallery").mkdir()
    (tmp_path / "models_gallery" / "_shared.py").write_text("X = 1\n")
    (tmp_path / "models_gallery" / "entry.py").write_text("from models_gallery import _shared\n")
    (tmp_path / "genppl" / "exact" / "contract.py").write_text("_Hidden = 1\nPublic = 2\n")
    (tmp_path / "genppl" / "exact" / "scan.py").write_text(
        "from genppl.exact.contract import Public, _Hidden\n")
    assert private_imports(tmp_path) == [
        "genppl/exact/scan.py:1 takes _Hidden from genppl.exact.contract"]
