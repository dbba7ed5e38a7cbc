"""Getting candidate instructions out of an optimizer's free text, and the paper's hygiene rules.

An optimizer answer is asked to hold its proposal in square brackets, between <INS>/<Start>
tags or between <TEXT> tags, depending on the meta-prompt style. Models do not always comply,
so `extract` tries the asked-for markup first, then the other two, then the answer itself:

* closed markup wins; every closed pair in an answer is a candidate, in order (the optimizer
  loop takes the first of each answer before any second one);
* an opening tag without its closing one runs to the end of the answer, a closing tag without
  its opening one starts at the beginning (a completion model often starts inside the tag);
* an answer with no markup at all is taken whole, after dropping a leading "Here is ...:" line.

`extract_reference` reads answers as the paper's reference code does, for `--protocol paper`:
the first bracketed text on one line (instruction-tuned style), the text between the first
<INS>/<Start> tag and its closing tag, either missing tag meaning the start or end of the
answer (gpt style), or the first <TEXT>...</TEXT> (pretrained style). Where the reference
then scores the empty instruction, here an answer yields no candidate and is counted as an
extraction failure, never scored.

`check` then applies the cleaning and filters of the paper's code: surrounding quotes, `**`
and extra whitespace are removed and the first letter capitalised (`dedup.canonicalize`), and
a candidate is rejected when empty, longer than 500 characters, containing "INS" (leaked
markup), containing a digit when the task forbids them (GSM8K: a digit is usually part of a
memorised answer), or holding no letter at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from opro.engine.dedup import canonicalize

MAX_CHARS = 500

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"))
_PREAMBLE = re.compile(r"^[^\n]*:\s*\n")


def _tagged(text: str, tag: str) -> list[str]:
    """Contents of <tag>...</tag> pairs, or of a half-open tag as described above."""
    opening, closing = f"<{tag}>", f"</{tag}>"
    pairs = re.findall(rf"{re.escape(opening)}(.*?){re.escape(closing)}", text, re.S | re.I)
    if pairs:
        return list(pairs)
    lowered = text.lower()
    start, end = lowered.find(opening.lower()), lowered.find(closing.lower())
    if start >= 0:
        return [text[start + len(opening) :]]
    if end >= 0:
        return [text[:end]]
    return []


def _bracketed(text: str) -> list[str]:
    return list(_BRACKETS.findall(text))


def _plain(text: str) -> list[str]:
    body = text.strip()
    if "\n" in body:
        body = _PREAMBLE.sub("", body, count=1).strip()
    return [body] if body else []


def _methods(style: str, tag: str) -> list[str]:
    if style == "gpt":
        return [tag, "brackets", "TEXT"]
    if style == "pretrained":
        return ["TEXT", "brackets", tag]
    return ["brackets", tag, "TEXT"]


def extract(answer: str, style: str = "instruction-tuned", *, tag: str = "INS") -> list[str]:
    """Every candidate in one optimizer answer, raw (uncleaned), in order of appearance."""
    for method in _methods(style, tag):
        found = _bracketed(answer) if method == "brackets" else _tagged(answer, method)
        found = [f for f in found if f.strip()]
        if found:
            return found
    if tag != "INS":  # an answer opener may still come back in <INS> tags
        found = [f for f in _tagged(answer, "INS") if f.strip()]
        if found:
            return found
    return _plain(answer)


_FIRST_BRACKETED = re.compile(r"\[(.*?)\]")  # `.` stops at a newline: one line only
_FIRST_TEXT = re.compile(r"<TEXT>(.*?)</TEXT>", re.S)


def extract_reference(
    answer: str, style: str = "instruction-tuned", *, tag: str = "INS"
) -> list[str]:
    """The one candidate the reference code takes from an answer, or none (see above)."""
    if style == "pretrained":
        match = _FIRST_TEXT.search(answer)
        found = match.group(1) if match else ""
    elif style == "gpt":
        opening, closing = f"<{tag}>", f"</{tag}>"
        start = answer.find(opening)
        start = 0 if start < 0 else start + len(opening)
        end = answer.find(closing)
        found = answer[start : len(answer) if end < 0 else end].strip()
    else:
        match = _FIRST_BRACKETED.search(answer)
        found = match.group(1) if match else ""
    return [found] if found.strip() else []


def strip_quotes(text: str) -> str:
    body = text.strip()
    for left, right in _QUOTES:
        if len(body) >= 2 and body.startswith(left) and body.endswith(right):
            return body[len(left) : -len(right)].strip()
    return body


def clean(candidate: str) -> str:
    """The scored form of a candidate: unquoted, then `dedup.canonicalize`d."""
    return canonicalize(strip_quotes(canonicalize(candidate)))


def check(candidate: str, *, forbid_digits: bool = False) -> tuple[str, str | None]:
    """(cleaned candidate, reason it is rejected or None)."""
    text = clean(candidate)
    if not text:
        return text, "empty"
    if len(text) > MAX_CHARS:
        return text, f"longer than {MAX_CHARS} characters"
    if "INS" in text:
        return text, 'contains "INS"'
    if forbid_digits and any(ch.isdigit() for ch in text):
        return text, "contains a digit"
    if not any(ch.isalpha() for ch in text):
        return text, "has no letters"
    return text, None


def interleave(per_answer: Sequence[Sequence[str]]) -> list[tuple[int, str]]:
    """(answer index, candidate) taking every answer's first candidate, then every second...

    With one candidate per answer (the normal case) this is the paper's set; extra candidates
    in an answer only fill places that duplicates or rejects leave free.
    """
    out: list[tuple[int, str]] = []
    depth = max((len(c) for c in per_answer), default=0)
    for k in range(depth):
        for i, cands in enumerate(per_answer):
            if k < len(cands):
                out.append((i, cands[k]))
    return out
