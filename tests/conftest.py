"""Pytest set-up: tests run from the repository root and import the package under test."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _repo_root_cwd(monkeypatch):
    """Configs are referenced relative to the repository root, as users do."""
    monkeypatch.chdir(ROOT)


if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="module")
def tiny_shapes_root(tmp_path_factory):
    """Folder of the tiny shapes splits of a test module."""
    return str(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def tiny_shapes(tiny_shapes_root):
    """Names of a 16-image train and a 4-image val shapes split (64-96 px)."""
    from .helpers import register_tiny_shapes

    return register_tiny_shapes(tiny_shapes_root, "shapes_tiny")
