"""Rendering an instruction and a question into the scorer's prompt.

The instruction positions of the OPRO paper's code (`gen_prompt` in its `eval_utils.py`), with or
without its Q:/A: framing:

* Q_begin ``Q: {ins}\\n{q}\\n\\nA:``, Q_end ``Q: {q}\\n{ins}\\n\\nA:``,
  A_begin ``Q: {q}\\n\\nA: {ins}``, before_Q ``{ins}\\nQ: {q}\\n\\nA:``;
* without framing (Q_begin / Q_end only) ``{ins}\\n{q}`` or ``{q}\\n{ins}``.

As in the paper's code, an empty instruction leaves no separator behind: every position then
gives ``Q: {q}\\n\\nA:`` (or the bare question without framing), which is the paper's
no-instruction baseline. A whitespace-only instruction counts as empty here; any other is
placed exactly as given (no trimming), because the text a user typed is the text scored.

The framing defaults to off, as in the paper's code for both of its scorers, except for
A_begin and before_Q, which have no meaning without it (`needs_qa_framing`).
"""

from __future__ import annotations

from typing import Literal, get_args

from opro.errors import SettingsError

Position = Literal["Q_begin", "Q_end", "A_begin", "before_Q"]
POSITIONS: tuple[str, ...] = get_args(Position)


def placed(instruction: str) -> str:
    """The text `render_prompt` puts in the prompt: the instruction as given, "" if blank.

    Two instructions give identical prompts exactly when their placed texts are equal, so
    this is also the key under which `engine.dedup` recognises duplicates.
    """
    return instruction if instruction.strip() else ""


def needs_qa_framing(position: Position) -> bool:
    """Whether the position only exists inside the Q:/A: framing."""
    return position in ("A_begin", "before_Q")


def render_prompt(
    instruction: str,
    question: str,
    position: Position = "Q_begin",
    *,
    qa_framing: bool | None = None,
) -> str:
    """Place `instruction` relative to `question` as the paper does (framing: see above)."""
    if position not in POSITIONS:
        raise SettingsError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    if qa_framing is None:
        qa_framing = needs_qa_framing(position)
    ins = placed(instruction)
    if position in ("A_begin", "before_Q") and not qa_framing:
        raise SettingsError(f"position {position} needs the Q:/A: framing")
    if position == "Q_begin":
        body = f"{ins}\n{question}" if ins else question
    elif position == "Q_end":
        body = f"{question}\n{ins}" if ins else question
    elif position == "before_Q":
        return f"{ins}\nQ: {question}\n\nA:" if ins else f"Q: {question}\n\nA:"
    else:  # A_begin: the instruction starts the answer
        return f"Q: {question}\n\nA: {ins}" if ins else f"Q: {question}\n\nA:"
    return f"Q: {body}\n\nA:" if qa_framing else body
