"""The model card's measured numbers come from results files: every generated block is what
scripts/model_card.py renders from its file, each names the weights it was measured on (marked when
they are not the shipped ones), and no measured-looking number stands outside the blocks."""

from __future__ import annotations

import json
import re

import pytest
from helpers import load_script

card = load_script("model_card")
tables = load_script("results_tables")


@pytest.fixture(scope="module")
def shipped() -> str:
    return card.shipped_digest()


def test_the_model_cards_tables_are_what_the_results_files_say(shipped):
    text = card.CARD.read_text()
    assert card.render(text, shipped) == text, "run python scripts/model_card.py --write"


def test_every_table_names_its_results_file_and_the_weights(shipped):
    for name, block in card.BLOCKS.items():
        text = block(shipped)
        if name == "evaluation-log":  # one results file and one weights cell per row
            rows = [line for line in text.splitlines()[2:] if line.startswith("|")]
            assert rows and all(re.search(r"\| `[0-9a-f]{8}`", r) and re.search(r"acceptance\w*\.json", r) for r in rows)
        else:
            caption = text.splitlines()[0]
            assert caption.startswith("*Results file [`") and "; measured on: " in caption, name


def test_a_table_measured_on_other_weights_is_marked(shipped):
    for name, block in card.BLOCKS.items():
        text = block("0" * 64)
        # a results file not yet rerun on the shipped weights carries its own stale note instead
        assert "not the shipped weights" in text or "no trained weights" in text or "**stale**: " in text, name
    assert "not the shipped weights" not in card.BLOCKS["final-test"](shipped)


def test_a_missing_block_is_refused(shipped):
    text = card.CARD.read_text().replace(card.end("realism"), "")
    with pytest.raises(ValueError, match="realism"):
        card.render(text, shipped)


def test_no_measured_number_in_the_model_card_outside_the_generated_blocks():
    outside = tables.outside_blocks(card.CARD.read_text(), card.markers())
    hits = tables.measured_numbers(outside)
    assert not hits, f"numbers without a results file: {hits}"


def test_the_check_finds_a_number_outside_the_blocks():
    text = card.CARD.read_text()
    assert not tables.measured_numbers(tables.outside_blocks(text, card.markers()))
    text = text.replace("## Intended use and limitations", "## Intended use and limitations\n\nSUVs within 7.5 %.")
    assert tables.measured_numbers(tables.outside_blocks(text, card.markers())) == ["7.5 %"]


def test_the_height_floor_is_on_the_landmarks_where_they_were_measured():
    """An evaluation with the brain-to-bladder r carries the floor there and shows the extent without
    one; an older evaluation keeps its floor on the extent, as it was judged."""
    old = {"height_r": 0.74}
    assert card.height_rows(old) == ["| requested height vs body extent, Pearson r | 0.8 | 0.74 | – |"]
    rows = card.height_rows({**old, "height_landmarks_r": 0.86})
    assert rows[0] == "| requested height vs brain-to-bladder distance, Pearson r | 0.8 | 0.86 | – |"
    assert rows[1].endswith("(the field of view cuts it) | – | 0.74 | – |")
    assert card.landmarks_note(old) == "" and card.landmarks_note({"height_landmarks_r": 0.86}).endswith(", 0.86 by the brain-to-bladder distance (the floor's)")


def test_a_stale_results_file_is_marked_stale_whatever_the_shipped_weights(shipped):
    """A results file not rerun on the shipped snapshot says so in its own note; its table's caption shows
    the note, whichever weights are shipped."""
    checked = 0
    for name, block in card.BLOCKS.items():
        caption = block(shipped).splitlines()[0]
        found = re.match(r"\*Results file \[`([^`]+\.json)`\]", caption)
        if found and json.loads((card.REPO / found.group(1)).read_text()).get("stale"):
            assert "measured on: **stale**: " in caption, name
            checked += 1
    if not checked:
        pytest.skip("every results file in the card is measured on the shipped weights")
