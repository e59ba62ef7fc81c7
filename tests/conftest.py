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
