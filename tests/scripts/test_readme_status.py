"""The README's status numbers come from results files: the generated table matches them, each row
names the weights it was measured on, and no measured-looking number stands outside the table."""

from __future__ import annotations

from helpers import load_script

status = load_script("readme_status")
tables = load_script("results_tables")  # MEASURED: numbers that read as measurements, shared with the model card's test


def test_the_readme_status_table_is_what_the_results_files_say():
    readme = status.README.read_text()
    assert status.render(readme, status.shipped_digest()) == readme, "run python scripts/readme_status.py --write"


def test_a_row_measured_on_other_weights_is_marked():
    row = status.table("0" * 64)
    assert "not the shipped weights" in row and "no trained weights" in row


def test_no_measured_number_in_the_readme_outside_the_generated_table():
    outside = tables.outside_blocks(status.README.read_text(), [(status.BEGIN, status.END)])  # and code blocks
    hits = [m.group(0) for m in tables.MEASURED.finditer(outside)]
    assert not hits, f"numbers without a results file: {hits}"
