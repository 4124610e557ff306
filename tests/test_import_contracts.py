"""The package boundaries that `make lint` enforces (pyproject.toml's ``[tool.importlinter]``).

The checker runs on the real tree, and on a copy of it with one forbidden import added, so a
contract that no longer bites (renamed package, dropped from the config) fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import patient

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("squarenet", "trainer_service", "predictor_service")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the packages in ``tree``, with the project's contracts."""
    checker = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(checker), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=patient(120),
        check=False,
    )


def copy_of_tree(destination: Path) -> Path:
    """The three packages and pyproject.toml, without caches."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def test_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "added_import", "broken"),
    [
        (
            "trainer_service/runner/book.py",
            "import trainer_service.sweeps.controller",
            "no import cycles between the trainer's packages",
        ),
        (
            "predictor_service/server.py",
            "import trainer_service.params",
            "the trainer and the predictor never import each other",
        ),
        (
            "trainer_service/sweeps/controller.py",
            "import flask",
            "only the trainer's api speaks HTTP",
        ),
        (
            "squarenet/store.py",
            "import flask",
            "the shared package runs no server and imports no TensorFlow",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, added_import: str, broken: str
) -> None:
    tree = copy_of_tree(tmp_path)
    source = tree / module
    source.write_text(source.read_text() + f"\n{added_import}  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert f"{broken} BROKEN" in done.stdout
