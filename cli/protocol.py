"""`--protocol ours|paper` and the settings whose defaults it decides (evaluate, optimize).

Every protocol-dependent option has no default of its own (None: "not given"); after the
flags and the config file are resolved (`cli/settings.py`), `apply_protocol` fills in what the
chosen protocol says (`protocol.protocol_preset`) and turns the spelled-out values ("none",
"all") into the settings' own values. So a flag or a config key always beats the protocol.
Settings that also depend on the scorer (the max tokens of the embedded model, its framing)
are decided where the scorer is known: `cli/common.scorer_role` and `qa_framing`.
"""

from __future__ import annotations

import argparse

from opro.checks import SCORE
from opro.cli.common import uses_embedded_scorer
from opro.cli.settings import Settings, UsageError
from opro.optimize.metaprompt import SHOWN
from opro.optimize.protocol import protocol_preset
from opro.tasks.prompts import Position, needs_qa_framing


def min_score_setting(text: str) -> float | str:
    """--min-score: a finite number, "auto" (the paper's rule) or "none" (list every score)."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return word
    try:
        return SCORE(word)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or auto, or none)") from None


def max_shown_setting(text: str) -> int | str:
    """--max-shown: a count >= 1, "all", or "auto" (the paper's: 20, all in pretrained)."""
    word = text.strip().lower()
    if word in ("auto", "all"):
        return word
    try:
        return SHOWN(word)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or all, or auto)") from None


def apply_protocol(s: Settings) -> None:
    """Fill every protocol-dependent setting left unset (None) from the chosen protocol."""
    name = s["protocol"] or "ours"
    s.values["protocol"] = name
    because = f"--protocol {name}"
    preset = protocol_preset(name)
    if s.get("grading") is None:
        s.derive("grading", preset.grading, because)
    if s["max_tokens"] is None and preset.scorer_max_tokens is not None:
        s.derive("max_tokens", preset.scorer_max_tokens, because)
    if "min_score" not in s:  # evaluate has no meta-prompt
        return
    meta = preset.meta
    if s["min_score"] is None:
        s.derive("min_score", meta.min_score, because)
    elif s["min_score"] == "none":
        s.values["min_score"] = None
    if s["max_shown"] is None:
        s.derive("max_shown", meta.max_shown, because)
    elif s["max_shown"] == "all":
        s.values["max_shown"] = None
    if s["extraction"] is None:
        s.derive("extraction", meta.extraction, because)


def qa_framing(s: Settings, position: Position) -> bool:
    """--qa / --no-qa, else off unless the position needs it; the embedded scorer keeps the
    framing it was measured with (`benchmarks/embedded_model.py`) under our protocol."""
    if s["qa"] and s["no_qa"]:
        raise UsageError(
            f"{s.where('qa')} and {s.where('no_qa')} contradict each other: give one of them"
        )
    if s["qa"]:
        return True
    if s["no_qa"]:
        return False
    if uses_embedded_scorer(s) and s["protocol"] == "ours":
        return True
    return needs_qa_framing(position)
