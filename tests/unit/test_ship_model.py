"""tools/ship_model.py's card: it must show every command that made the shipped file, in order."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ship_model():
    spec = importlib.util.spec_from_file_location("ship_model", ROOT / "tools" / "ship_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_card_lists_the_commands_before_the_training_command_and_their_time() -> None:
    ship_model = _ship_model()
    card = json.loads((ROOT / "docs" / "models" / "restore-x4.json").read_text())
    card = {**card, "before": [], "before_minutes": 0}  # a run trained from scratch
    plain = ship_model.render_card(card)
    assert "- Training command (run from the repository root):" in plain and "commands before it" not in plain
    card = {**card, "before": ["decrappify train --out runs/a", "python tools/deepen_model.py a -o b"]}
    card["before_minutes"] = 110
    text = ship_model.render_card(card)
    first, second, training = (text.index(s) for s in ("runs/a", "deepen_model.py", card["info"]["command"]))
    assert first < second < training
    assert "- Training commands, in order" in text and "+ 110 min for the commands before it" in text


def test_the_shipped_cards_are_what_the_tool_renders() -> None:
    """The cards in docs/models were written by the tool from their JSON, not edited by hand."""
    ship_model = _ship_model()
    for path in sorted((ROOT / "docs" / "models").glob("*.json")):
        card = json.loads(path.read_text())
        assert ship_model.render_card(card) == path.with_suffix(".md").read_text(), path.name


def test_a_card_says_when_the_model_runs_as_a_self_ensemble() -> None:
    ship_model = _ship_model()
    card = json.loads((ROOT / "docs" / "models" / "restore-x4.json").read_text())
    plain = ship_model.render_card({**card, "info": {**card["info"], "ensemble": "none"}})
    assert "- Runs as a" not in plain and " --ensemble flip --description" not in plain
    flip = ship_model.render_card({**card, "info": {**card["info"], "ensemble": "flip"}})
    assert "- Runs as a `flip` self-ensemble by default: each tile is restored 2 times (as is and mirrored)" in flip
    assert "`restore-x4 (no ensemble)` rows" in flip and " --ensemble flip --description" in flip
