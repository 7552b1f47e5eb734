"""Rewrite docs/configuration.md's configuration table from consumer.settings.reference_markdown()."""

import re
from pathlib import Path

from consumer.settings import reference_markdown

TABLE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
text = TABLE.read_text()
pattern = re.compile(r"(<!-- config-reference:.*?-->\n)(.*?)(\n<!-- /config-reference -->)", re.S)
TABLE.write_text(pattern.sub(lambda m: m.group(1) + reference_markdown() + m.group(3), text, count=1))
