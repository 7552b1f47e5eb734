"""The table on stdout and the JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TextIO


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("pass" if ok else "FAIL")


def table(rows: list[dict[str, Any]], out: TextIO) -> None:
    header = ("figure", "measured", "target", "pass/fail")
    lines = [(r["figure"], r["display"], r["target"], verdict(r["ok"])) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header), file=out)
    print("-+-".join("-" * w for w in widths), file=out)
    for line in lines:
        print(fmt.format(*line), file=out)


def _clean(value: Any) -> Any:
    """JSON without NaN/inf (they become null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(payload), indent=2, ensure_ascii=False) + "\n")


FIGURES_START = "<!-- bench-figures"
FIGURES_END = "<!-- /bench-figures -->"


def figures_markdown(rows: list[dict[str, Any]], run: str) -> str:
    """The figures as the markdown table docs/performance.md shows, under a line naming the run."""
    lines = [run, "", "| figure | target | latest | |", "|---|---|---|---|"]
    lines += [f"| {r['figure']} | {r['target']} | **{r['display']}** | {verdict(r['ok'])} |" for r in rows]
    return "\n".join(lines)


def write_figures(path: Path, rows: list[dict[str, Any]], run: str) -> None:
    """Replace the figures between the markers of ``path`` (docs/performance.md) with this run's."""
    text = path.read_text()
    start = text.index(FIGURES_START)
    start = text.index("\n", start) + 1
    end = text.index(FIGURES_END, start)
    path.write_text(text[:start] + figures_markdown(rows, run) + "\n" + text[end:])
