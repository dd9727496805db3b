"""The README is the front door: its commands, links and configuration table stay true."""

import re
from pathlib import Path

from libs.settings import with_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_configuration_table_lists_every_setting_as_the_code_declares_it():
    assert with_table(README) == README, "run: .venv/bin/python -m libs.settings --write README.md"


def test_ci_runs_the_lint_then_exactly_the_readme_test_command():
    assert "make test" in README and "make up" in README and "make lint" in README
    lines = (ROOT / ".ci/run").read_text().splitlines()
    commands = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make lint", "make test"]


def test_every_relative_link_points_at_a_file_in_the_repository():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert missing == []
