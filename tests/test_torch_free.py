"""Dependency rule: preprocessing (and the package root and CLI parser) never import torch or albumentations."""

import subprocess
import sys

import pytest

MODULES = ["ecgdx", "ecgdx.labels", "ecgdx.errors", "ecgdx.config", "ecgdx.page.preprocessing", "ecgdx.cli",
           "ecgdx.data.index", "ecgdx.data.split", "ecgdx.data.cache", "ecgdx.evaluation"]


@pytest.mark.parametrize("module", MODULES)
def test_module_does_not_import_torch(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "from ecgdx.cli import build_parser; build_parser(); "
        "bad = [m for m in ('torch', 'albumentations', 'torchvision') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} imported {result.stdout.strip()} {result.stderr[-2000:]}"
