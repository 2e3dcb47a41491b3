"""The README's status numbers come from results files: the generated table matches them, each row
names the weights it was measured on, and no measured-looking number stands outside the table."""

from __future__ import annotations

import re

from helpers import load_script

status = load_script("readme_status")


def test_the_readme_status_table_is_what_the_results_files_say():
    readme = status.README.read_text()
    assert status.render(readme, status.shipped_digest()) == readme, "run python scripts/readme_status.py --write"


def test_a_row_measured_on_other_weights_is_marked():
    row = status.table("0" * 64)
    assert "not the shipped weights" in row and "no trained weights" in row


#: Numbers that read as measurements: percentages, speed-ups, seconds, litres, correlations.
MEASURED = re.compile(r"\d+(\.\d+)?\s?%|\d+(\.\d+)?x\b|\d+\.\d+\s?(s|l|pp)\b|\br\s?=\s?\d")


def test_no_measured_number_in_the_readme_outside_the_generated_table():
    readme = status.README.read_text()
    outside = readme.split(status.BEGIN)[0] + readme.split(status.END)[1]
    outside = re.sub(r"```.*?```", "", outside, flags=re.S)  # commands, not claims
    hits = [m.group(0) for m in MEASURED.finditer(outside)]
    assert not hits, f"numbers without a results file: {hits}"
