"""Answer extraction and grading of a scorer model's output against a reference answer.

OPRO's scores are accuracies, so this module decides what an instruction is worth. It follows the
behaviour of the paper's metrics (google-deepmind/opro, `metrics.py` and `eval_utils.py`):

* the answer is the text after the last "answer is" / "answer:" marker (or "is:" / "are:" when
  neither is present, or before "... is the answer"), cut where the model starts a new "Q:";
* numeric targets compare the first number after a marker, else the last number in the output,
  with "$", "%" and thousands separators removed, number words mapped, and the prediction rounded
  to the target's number of decimals;
* multiple-choice targets accept the option letter with or without brackets, or the correct
  option's text when no other option's text is also given;
* boolean targets map 0/1 (and true/false for yes/no and valid/invalid) onto the target's words;
* everything else is an exact match after light normalisation.

Where the paper's code has accidents (substring tests that make "valid" match "invalid", number
words replaced inside other words) this module uses word boundaries instead. Model output is data:
it is only ever matched with regular expressions, never evaluated.

`grade(..., rules="reference")` applies the paper's own rules instead (`grading_reference.py`),
accidents included, so that an accuracy can be compared with the paper's numbers.

Change `GRADING_VERSION` (or `REFERENCE_GRADING_VERSION`) whenever a grade could change: reports
and run directories record it, and grades are recomputed from the stored outputs on every read.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Final, Literal

from opro.errors import SettingsError
from opro.tasks.grading_reference import REFERENCE_GRADING_VERSION, grade_reference

GRADING_VERSION: Final = "2"

Grading = Literal["strict", "reference"]
GRADINGS: Final[tuple[Grading, ...]] = ("strict", "reference")

AnswerType = Literal["number", "choice", "boolean", "yes_no", "valid_invalid", "free"]

_BOOLEAN_WORDS: Final[dict[AnswerType, tuple[str, str]]] = {
    "boolean": ("false", "true"),
    "yes_no": ("no", "yes"),
    "valid_invalid": ("invalid", "valid"),
}

_NUMBER_WORDS: Final[dict[str, int]] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_COMPOUND_WORD_RE = re.compile(rf"\b({_TENS})[\s-]+({_UNITS})\b")
_NUMBER_WORD_RE = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b")

# A model that keeps going after its answer usually starts the next question with "Q:".
_NEXT_QUESTION_RE = re.compile(r"(?<![a-z0-9])q:|^\s*question:", re.MULTILINE)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_PRIMARY_MARKER_RE = re.compile(r"\banswer(?:\s+is)?\s*:|\banswer\s+is\b|####")
_SECONDARY_MARKER_RE = re.compile(r"\b(?:is|are):")
_AHEAD_MARKER_RE = re.compile(r"\s+is\s+the\s+(?:correct\s+|right\s+|final\s+)?answer\b")

_TARGET_NUMBER_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d+(?:\.\d+)?|[-+]?\.\d+")
_NUMBER_RE = re.compile(r"(?:(?<![\w)])-)?(?:\d+(?:\.\d+)?|\.\d+)")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_BRACKETED_LETTER_RE = re.compile(r"\(([a-z])\)")
_LEADING_LETTER_RE = re.compile(r"^\(?([a-z])\)|^([a-z])[.:](?:\s|$)")
_OPTION_LINE_RE = re.compile(r"^[ \t]*\(?([A-Z])\)[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_INLINE_OPTION_RE = re.compile(r"\(([A-Z])\)")
_WORD_RE = re.compile(r"[a-z]+|\d+")
_BRACKET_CHARS: Final = frozenset("()[]{}<> ")


@dataclass(frozen=True, slots=True)
class Extracted:
    """The part of a model output that holds its final answer.

    `text` is lower-cased; `marker` tells how it was found, which decides whether the answer is
    the first ("behind": after "answer is") or the last ("ahead", "none") candidate in `text`.
    `full` is the whole output up to a new question, lower-cased, used as a fallback.
    """

    text: str
    marker: Literal["behind", "ahead", "none"]
    full: str


def cut_next_question(output: str) -> str:
    """Drop everything from a new "Q:" (or a "Question:" line) that the model went on to write."""
    stripped = output.strip()
    match = _NEXT_QUESTION_RE.search(stripped.lower(), 1)
    return stripped[: match.start()].rstrip() if match else stripped


def _trim(text: str) -> str:
    """Strip whitespace, trailing periods and stray quotes around an extracted answer."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip().strip("\"'`").rstrip(".").lstrip(":")
    return text


def extract_answer(output: str) -> Extracted:
    """Find the final answer in a model output, the way the paper's metrics do."""
    full = cut_next_question(output.replace("**", "")).lower()
    boxed = _BOXED_RE.findall(full)
    if boxed:
        return Extracted(_trim(boxed[-1]), "behind", full)
    markers = list(_PRIMARY_MARKER_RE.finditer(full)) or list(_SECONDARY_MARKER_RE.finditer(full))
    text = full
    marker: Literal["behind", "ahead", "none"] = "none"
    if markers:
        after = full[markers[-1].end() :]
        if after.strip(" \n.:"):
            text, marker = after, "behind"
    ahead = _AHEAD_MARKER_RE.search(text)
    if ahead:
        text = text[: ahead.start()]
        marker = "ahead"
    return Extracted(_trim(text), marker, full)


def _normalise_target(target: str) -> str:
    """Targets may carry a GSM8K-style "#### 72" or "The answer is ..." prefix: drop it."""
    text = target.strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    markers = list(_PRIMARY_MARKER_RE.finditer(text.lower()))
    if markers and text[markers[-1].end() :].strip():
        text = text[markers[-1].end() :]
    return text.strip()


def parse_options(question: str) -> dict[str, str]:
    """Map option letters to their texts, lower-cased, from a multiple-choice question.

    Understands BBH lines "(A) text", AQuA lines "A)text" (also as rendered "(A)text"), and, when
    there are no such lines, options written inline: "... (A) west (B) east (C) north".
    Letters must run A, B, C, ... without gaps, so a stray "(B)" in the text is not an option.
    When the letters are listed again, the later list wins only if its options have texts:
    "(A) west (B) east\nWhat's the answer in (A)(B)?" keeps "west" and "east".
    """
    found = [(m.group(1), m.group(2)) for m in _OPTION_LINE_RE.finditer(question)]
    if len(found) < 2:
        parts = _INLINE_OPTION_RE.split(question)
        found = [(parts[i], parts[i + 1].split("\n")[0]) for i in range(1, len(parts) - 1, 2)]
    runs: list[dict[str, str]] = [{}]
    for letter, text in found:
        if letter != chr(ord("A") + len(runs[-1])):
            if letter == "A":  # a second list starts
                runs.append({})
            else:
                continue
        runs[-1][letter] = _normalise_text(text)
    lists = [run for run in runs if len(run) >= 2]
    with_texts = [run for run in lists if all(_has_text(t) for t in run.values())]
    chosen = (with_texts or lists or [{}])[-1]
    return {k.lower(): v for k, v in chosen.items()}


def _has_text(option: str) -> bool:
    """An option text with something besides punctuation ("?" after a bare "(D)" is none)."""
    return any(not c.isspace() and c not in string.punctuation for c in option)


def _normalise_text(text: str) -> str:
    return _trim(" ".join(text.lower().split()))


def _target_letter(target: str, options: dict[str, str]) -> str | None:
    """The option letter a choice target names: "(B)", "B", or the text of one option."""
    match = re.fullmatch(r"\(([A-Za-z])\)|([A-Z])", target)
    if match:
        return (match.group(1) or match.group(2)).lower()
    wanted = _normalise_text(target)
    for letter, text in options.items():
        if text and text == wanted:
            return letter
    return None


def answer_type(target: str, question: str = "") -> AnswerType:
    """Classify a reference answer by its shape; the grading rules follow from it.

    A target that is one option's text (BBH has a few) is a choice when `question` lists options.
    """
    text = _normalise_target(target)
    if _TARGET_NUMBER_RE.fullmatch(text):
        return "number"
    lowered = text.lower().rstrip(".")
    for kind, words in _BOOLEAN_WORDS.items():
        if lowered in words:
            return kind
    if re.fullmatch(r"\([A-Za-z]\)|[A-Z]", text):
        return "choice"
    if question and _target_letter(text, parse_options(question)) is not None:
        return "choice"
    return "free"


def _to_digits(text: str) -> str:
    """Remove currency, percent and thousands separators so numbers read as plain digits."""
    for char in "$€£%":
        text = text.replace(char, "")
    return _THOUSANDS_RE.sub("", text)


def _numbers(text: str) -> list[float]:
    found = [float(n) for n in _NUMBER_RE.findall(_to_digits(text))]
    if found:
        return found
    # Only when there are no digits at all: "The answer is twenty-five."
    text = _COMPOUND_WORD_RE.sub(
        lambda m: str(_NUMBER_WORDS[m.group(1)] + _NUMBER_WORDS[m.group(2)]), text
    )
    text = _NUMBER_WORD_RE.sub(lambda m: str(_NUMBER_WORDS[m.group(1)]), text)
    return [float(n) for n in _NUMBER_RE.findall(text)]


def extract_number(output: str) -> float | None:
    """The number a model output gives as its answer, or None.

    After an "answer is" marker: the first number after the last "=" that follows it; before an
    "is the answer" marker, or with no marker: the last number.
    """
    found = extract_answer(output)
    if found.marker == "behind":
        candidates = _numbers(found.text.rsplit("=", 1)[-1]) or _numbers(found.text)
        if candidates:
            return candidates[0]
    elif found.marker == "ahead":
        candidates = _numbers(found.text)
        if candidates:
            return candidates[-1]
    candidates = _numbers(found.full)
    return candidates[-1] if candidates else None


def _grade_number(output: str, target: str) -> bool:
    wanted_text = _to_digits(target).lstrip("+")
    decimals = len(wanted_text.split(".", 1)[1]) if "." in wanted_text else 0
    got = extract_number(output)
    if got is None:
        return False
    return abs(round(got, decimals) - float(wanted_text)) <= 1e-5


def extract_boolean(output: str, kind: AnswerType) -> bool | None:
    """The truth value a model output answers with, for targets of boolean `kind`.

    The target's own pair of words counts (yes/no, valid/invalid), so does true/false, and an
    answer that is only "0" or "1". After an "answer is" marker the first such word decides;
    otherwise an answer that starts with one ("Yes, because ...") or else the last one.
    """
    false_word, true_word = _BOOLEAN_WORDS[kind]
    vocab = {false_word: False, true_word: True, "false": False, "true": True}
    found = extract_answer(output)
    whole = found.text.strip(string.punctuation + " \n")
    if whole in ("0", "1"):
        return whole == "1"
    words = [w for w in _WORD_RE.findall(found.text) if w in vocab]
    if found.marker == "behind" and words:
        return vocab[words[0]]
    first = _WORD_RE.findall(found.text)[:1]
    if found.marker == "none" and first and first[0] in vocab:
        return vocab[first[0]]
    if found.marker == "none":
        words = [w for w in _WORD_RE.findall(found.full) if w in vocab]
    return vocab[words[-1]] if words else None


def _grade_boolean(output: str, target: str, kind: AnswerType) -> bool:
    wanted = target.strip().lower().rstrip(".") == _BOOLEAN_WORDS[kind][1]
    return extract_boolean(output, kind) is wanted


def extract_choice_letter(output: str) -> str | None:
    """The option letter a model output picks ("(b)", "b", "B) ...", "b. ..."), lower-cased.

    As in the paper, bracketed letters count only when exactly one distinct letter appears.
    """
    text = extract_answer(output).text
    bracketed: set[str] = set(_BRACKETED_LETTER_RE.findall(text))
    if len(bracketed) == 1:
        return bracketed.pop()
    if len(bracketed) > 1:
        return None
    bare = text.strip(string.punctuation + " \n")
    if len(bare) == 1 and bare.isalpha():
        return bare
    match = _LEADING_LETTER_RE.match(text)
    if match is None:
        return None
    letter: str = match.group(1) or match.group(2)
    return letter


def _occurrences(text: str, phrase: str) -> list[tuple[int, int]]:
    pattern = re.compile(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)")
    return [m.span() for m in pattern.finditer(text)]


def options_mentioned(text: str, options: dict[str, str]) -> set[str]:
    """Letters of the options whose text appears in `text` on its own.

    An occurrence inside a longer option's occurrence does not count, so "north east" mentions
    only that option and not also "east".
    """
    spans = {letter: _occurrences(text, t) for letter, t in options.items() if t}
    every = [span for found in spans.values() for span in found]
    mentioned = set()
    for letter, found in spans.items():
        for start, end in found:
            covered = any(s <= start and end <= e and (e - s) > (end - start) for s, e in every)
            if not covered:
                mentioned.add(letter)
                break
    return mentioned


def _grade_choice(output: str, target: str, question: str) -> bool:
    options = parse_options(question)
    wanted = _target_letter(target, options)
    if wanted is None:
        return False
    picked = extract_choice_letter(output)
    if picked is not None:
        return picked == wanted
    if wanted not in options:
        return False
    text = " ".join(extract_answer(output).text.split())
    return options_mentioned(text, options) == {wanted}


def _normalise_free(text: str, target: str) -> str:
    text = _normalise_text(text)
    if "," not in target:
        text = text.replace(",", " ")
    if set(target) <= _BRACKET_CHARS:
        return "".join(text.split())
    return " ".join(text.split())


def _grade_free(output: str, target: str) -> bool:
    wanted = _normalise_free(target, target)
    found = extract_answer(output)
    candidates = [found.text]
    if found.marker == "none":
        lines = [line for line in found.full.splitlines() if line.strip()]
        candidates += lines[:1] + lines[-1:]
    return any(_normalise_free(c, target) == wanted for c in candidates)


def grading_version(rules: Grading = "strict") -> str:
    """The version of one set of grading rules, as reports and run directories record it."""
    return GRADING_VERSION if rules == "strict" else REFERENCE_GRADING_VERSION


def grade(prediction: str, target: str, *, question: str = "", rules: Grading = "strict") -> bool:
    """Whether a model output answers `question` with `target`.

    `question` is needed only for multiple-choice targets, to read the options' texts.
    `rules="reference"` grades as the paper's code does (see `grading_reference.py`).
    """
    if rules == "reference":
        return grade_reference(prediction, target, question=question)
    if rules != "strict":
        raise SettingsError(f"grading rules must be one of {', '.join(GRADINGS)}, got {rules!r}")
    wanted = _normalise_target(target)
    kind = answer_type(wanted, question)
    if kind == "number":
        return _grade_number(prediction, wanted)
    if kind == "choice":
        return _grade_choice(prediction, wanted, question)
    if kind == "free":
        return _grade_free(prediction, wanted)
    return _grade_boolean(prediction, wanted, kind)
