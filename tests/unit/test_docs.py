"""The README and config examples say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from consumer.settings import SETTINGS, reference_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_configuration_table_is_the_settings_table() -> None:
    section = re.search(r"<!-- config-reference:.*?-->\n(.*?)\n<!-- /config-reference -->", (ROOT / "docs" / "configuration.md").read_text(), re.S)
    assert section is not None
    assert section.group(1) == reference_markdown()


def test_readme_starts_with_the_run_and_test_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert blocks[0] == "python3 -m venv .venv && .venv/bin/pip install -q -e . -e ./devkit && .venv/bin/chatapp-devkit demo"
    assert blocks[1] == "bash .ci/run"


def test_every_setting_is_in_the_example_file() -> None:
    example = (ROOT / "config" / "example.toml").read_text()
    for spec in SETTINGS:
        assert re.search(rf"^(# )?{spec.name} = ", example, re.M), spec.name


def test_ci_runs_the_readme_test_command() -> None:
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()
