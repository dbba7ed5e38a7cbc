"""`--protocol ours|paper` and the options whose defaults it decides, for `evaluate` and `optimize`.

Every protocol-dependent option is registered with default None ("not given"); after the
flags (and, for optimize, the TOML file) are read, `apply_protocol` fills in what the chosen
protocol says (`protocol.protocol_preset`) and turns the spelled-out values ("none", "all")
into the settings' own values. So a flag or a TOML key always beats the protocol. Settings
that also depend on the scorer (the max tokens of the embedded model, its framing) are
decided where the scorer is known: `cli_common.scorer_from_args` and `qa_framing_from_args`.
"""

from __future__ import annotations

import argparse

from opro.checks import SCORE
from opro.cli.common import UsageError, uses_embedded_scorer
from opro.optimize.metaprompt import EXEMPLAR_RULES, EXTRACTIONS, SHOWN
from opro.optimize.protocol import PROTOCOLS, protocol_preset
from opro.tasks.prompts import Position, needs_qa_framing


def add_protocol_options(p: argparse.ArgumentParser) -> None:
    """Options `evaluate` and `optimize` share."""
    g = p.add_argument_group("protocol")
    g.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="ours (default) or paper: the reference code's settings for every option not "
        "given (grading, 1024 scorer tokens, no Q:/A: framing, meta-prompt rules, extraction)",
    )
    g.add_argument(
        "--qa",
        action="store_true",
        help="Q:/A: framing around the prompt (default: off, as in the paper's code; on for "
        "A_begin/before_Q, which need it, and for the embedded scorer)",
    )


def add_meta_protocol_options(p: argparse.ArgumentParser) -> None:
    """`optimize`'s options for the meta-prompt rules the paper's code has."""
    p.add_argument(
        "--exemplar-selection",
        choices=EXEMPLAR_RULES,
        default="random",
        help="which training examples the meta-prompt shows (default random, as the paper)",
    )
    p.add_argument(
        "--extraction",
        choices=EXTRACTIONS,
        help="how candidates are read from the optimizer's answers: lenient (ours, default) "
        "or reference (only what the paper's code takes; a miss is counted, never scored)",
    )


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


def apply_protocol(args: argparse.Namespace) -> None:
    """Fill every protocol-dependent setting left unset (None) from the chosen protocol."""
    args.protocol = args.protocol or "ours"
    preset = protocol_preset(args.protocol)
    if getattr(args, "grading", None) is None:
        args.grading = preset.grading  # read by the grading option's owner
    if args.max_tokens is None and preset.scorer_max_tokens is not None:
        args.max_tokens = preset.scorer_max_tokens
    if not hasattr(args, "min_score"):  # evaluate has no meta-prompt
        return
    meta = preset.meta
    if args.min_score is None:
        args.min_score = meta.min_score
    elif args.min_score == "none":
        args.min_score = None
    if args.max_shown is None:
        args.max_shown = meta.max_shown
    elif args.max_shown == "all":
        args.max_shown = None
    if args.extraction is None:
        args.extraction = meta.extraction


def qa_framing_from_args(args: argparse.Namespace, position: Position) -> bool:
    """--qa / --no-qa, else off unless the position needs it; the embedded scorer keeps the
    framing it was measured with (`benchmarks/embedded_model.py`) under our protocol."""
    if args.qa and args.no_qa:
        raise UsageError("--qa and --no-qa contradict each other: give one of them")
    if args.qa:
        return True
    if args.no_qa:
        return False
    if uses_embedded_scorer(args) and args.protocol == "ours":
        return True
    return needs_qa_framing(position)
