"""The optimizer prompts of the EvoPrompt strategies, and reading a prompt out of an answer.

Written for this project from the description in Guo et al. 2023 (arXiv 2309.08532):

* `induction_prompt`: input/output examples of the task, asking for the instruction that
  produces them (how EvoPrompt makes a starting population when it is not given one);
* `ga_prompt`: two parents, asking to cross them over and then mutate the result;
* `de_prompt`: two random members, the best member and the current one, asking to mutate
  the parts where the two differ, combine them with the best, and cross over with the
  current member.

Every prompt asks for the final prompt between <prompt> and </prompt>; `final_prompt`
reads it back. The answer is data: it is searched for the tag, never evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from opro.tasks.types import Example

OPEN, CLOSE = "<prompt>", "</prompt>"
_PAIRS = re.compile(r"<prompt>(.*?)</prompt>", re.S | re.I)
_OPEN = re.compile(r"<prompt>", re.I)

_FINISH = f"Finish your answer with the final prompt alone between {OPEN} and {CLOSE}."


def tagged(text: str) -> str:
    return f"{OPEN}{text}{CLOSE}"


def final_prompt(answer: str) -> str | None:
    """The last tagged prompt in `answer` (the final one, after the worked steps), or None.

    An opening tag the model never closed runs to the end of the answer (a model often stops
    before writing the closing tag). No tag, or only whitespace inside it, gives None.
    """
    pairs = _PAIRS.findall(answer)
    if pairs:
        found: str = pairs[-1]
    else:
        opened = list(_OPEN.finditer(answer))
        if not opened:
            return None
        found = answer[opened[-1].end() :]
    found = found.strip()
    return found or None


def induction_prompt(examples: Sequence[Example]) -> str:
    """Ask for an instruction that turns each example's input into its output."""
    shown = "\n\n".join(f"Input: {ex.input}\nOutput: {ex.target}" for ex in examples)
    return (
        "A language model was given an instruction together with each of the inputs below, "
        "and it answered each one with the output shown.\n\n"
        f"{shown}\n\n"
        "Write the instruction it was given: one that, placed before any such input, leads a "
        f"model to the correct output. {_FINISH}"
    )


def ga_prompt(first: str, second: str) -> str:
    """EvoPrompt's GA step: crossover of two parents, then a mutation of the offspring."""
    return (
        "We are improving a prompt (an instruction for a language model) by evolution. Here "
        "are two parent prompts.\n\n"
        f"Parent prompt 1: {tagged(first)}\n"
        f"Parent prompt 2: {tagged(second)}\n\n"
        "Step 1: cross over the two parents: write one new prompt that takes parts from "
        "each.\n"
        "Step 2: mutate the prompt of step 1: reword or change some of it so that it is new, "
        "while it still asks for the same task.\n\n"
        f"Work through both steps. {_FINISH}"
    )


def de_prompt(member: str, best: str, first: str, second: str) -> str:
    """EvoPrompt's DE step for `member`: difference of two others, best, crossover."""
    return (
        "We are improving a prompt (an instruction for a language model) by differential "
        "evolution.\n\n"
        f"Prompt 1: {tagged(first)}\n"
        f"Prompt 2: {tagged(second)}\n\n"
        "Step 1: list the parts in which Prompt 1 and Prompt 2 differ.\n"
        "Step 2: mutate each of those parts: rewrite it with different wording or a "
        "different idea.\n\n"
        f"Best prompt so far: {tagged(best)}\n\n"
        "Step 3: combine the mutated parts of step 2 with the best prompt so far into a new "
        "prompt.\n\n"
        f"Current prompt: {tagged(member)}\n\n"
        "Step 4: cross over the prompt of step 3 with the current prompt: one final prompt "
        "that mixes parts of both.\n\n"
        f"Work through the four steps. {_FINISH}"
    )
