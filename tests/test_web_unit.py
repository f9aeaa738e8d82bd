"""The dashboard's own component tests (vitest + jsdom, in web/), run as part of the suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import repo_root


def test_vitest_component_tests_pass() -> None:
    web = repo_root() / "web"
    npm = shutil.which("npm")
    if npm is None or not (web / "node_modules").is_dir():
        pytest.fail("the dashboard's dependencies are not installed: `./run test` installs them "
                    "(or `cd web && npm ci`)")
    result = subprocess.run([npm, "test", "--silent"], cwd=web, capture_output=True, text=True,
                            check=False,
                            timeout=600, env={**os.environ, "CI": "1", "NO_COLOR": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    passed = re.search(r"Tests\s+(\d+) passed", output)
    assert passed and int(passed.group(1)) > 0, output[-3000:]
    assert "failed" not in output.split("Tests", 1)[-1].splitlines()[0], output[-3000:]
