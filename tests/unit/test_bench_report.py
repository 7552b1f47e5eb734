"""bench.report: a full run's figures replace the table in docs/performance.md, and only it."""

from __future__ import annotations

from pathlib import Path

from bench.report import FIGURES_END, figures_markdown, write_figures

ROWS = [
    {"figure": "saturation, 1 instance", "target": "≥ 0.99", "display": "0.993", "ok": True},
    {"figure": "pipeline", "target": "≥ 0.6", "display": "0.55", "ok": False},
]


def test_the_figures_between_the_markers_are_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\nintro\n\n<!-- bench-figures: the latest full run -->\nold table\n{FIGURES_END}\n\nwhat limits them\n")
    write_figures(page, ROWS, "Run X.")
    text = page.read_text()
    assert "old table" not in text and text.startswith("# Performance\n\nintro\n\n<!-- bench-figures: the latest full run -->\nRun X.")
    assert "| pipeline | ≥ 0.6 | **0.55** | FAIL |" in text and text.endswith(f"{FIGURES_END}\n\nwhat limits them\n")


def test_the_real_page_has_the_markers() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
    text = page.read_text()
    assert "<!-- bench-figures" in text and FIGURES_END in text
    assert figures_markdown(ROWS, "Run X.").count("\n") == 5
