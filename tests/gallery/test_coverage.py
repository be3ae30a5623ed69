"""Every model file in ``models_gallery/`` is registered, loads through the ``genppl.gallery``
entry point, and declares a model whose graph can be drawn (the gallery's coverage test,
after Pyro's ``test_examples``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import models_gallery
from genppl.gallery import gallery_packages, load_gallery
from genppl.graph.spec import render_spec

pytestmark = pytest.mark.gallery

GALLERY_DIR = Path(models_gallery.__file__).parent
FILES = sorted(p.stem for p in GALLERY_DIR.glob("*.py") if not p.stem.startswith("_"))


def test_every_gallery_file_is_registered() -> None:
    unregistered = sorted(set(FILES) - set(models_gallery.ENTRIES))
    assert not unregistered, f"add {unregistered} to models_gallery.ENTRIES"
    missing = sorted(set(models_gallery.ENTRIES) - set(FILES))
    assert not missing, f"models_gallery.ENTRIES lists {missing}, which have no file"


def test_the_library_finds_models_gallery_by_its_entry_point() -> None:
    packages, broken = gallery_packages()
    assert models_gallery in packages and broken == {}


def test_every_registered_entry_loads_under_its_module_name() -> None:
    gallery = load_gallery()
    assert gallery.broken == {}
    assert list(gallery.entries) == list(models_gallery.ENTRIES)


@pytest.mark.parametrize("name", models_gallery.ENTRIES)
def test_entry_declares_a_drawable_model(name: str) -> None:
    entry = load_gallery(name).get(name)
    model = entry.build()
    spec = render_spec(model.graph)
    assert {n["name"] for n in spec["nodes"]} == set(model.nodes)
    assert any(d["kind"] in ("latent", "observed") for _, d in model.graph.nodes(data=True))
    assert entry.default_engine in entry.engines
