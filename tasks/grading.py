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

`prepare_grade(target, question=...)` does everything that depends only on the example (the
target's type and normalisation, the options and their patterns) once and returns a check for
outputs: the engine grades thousands of outputs per example, and `grade` is that check used once.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from opro.errors import SettingsError
from opro.tasks.grading_reference import REFERENCE_GRADING_VERSION, prepare_reference

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

# A model that keeps going after its answer usually starts the next question with "Q:" (not
# inside a word) or a line "Question:". Two patterns, each run only when its text occurs:
# a pattern that starts with a literal is scanned for much faster than one that starts
# with a lookbehind, and this runs on every answer graded.
_NEXT_Q_RE = re.compile(r"q(?<![a-z0-9]q):")  # = (?<![a-z0-9])q:
_QUESTION_LINE_RE = re.compile(r"^\s*question:", re.MULTILINE)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
# Answer markers, matched only where their first word occurs (see `_last_match`).
_PRIMARY_MARKER_RE = re.compile(r"\banswer(?:\s+is)?\s*:|\banswer\s+is\b|####")
_PRIMARY_STARTS: Final = ("answer", "####")
_SECONDARY_MARKER_RE = re.compile(r"\b(?:is|are):")
_SECONDARY_STARTS: Final = ("is:", "are:")
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

Check = Callable[[str], bool]  # a prepared grade: model output -> right or not


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
    lowered = stripped.lower()
    cut = len(stripped)
    if "q:" in lowered and (match := _NEXT_Q_RE.search(lowered, 1)):
        cut = match.start()
    if "question:" in lowered and (match := _QUESTION_LINE_RE.search(lowered, 1)):
        cut = min(cut, match.start())
    return stripped[:cut].rstrip() if cut < len(stripped) else stripped


def _last_match(
    pattern: re.Pattern[str], text: str, starts: tuple[str, ...]
) -> re.Match[str] | None:
    """The last match of `pattern.finditer(text)`, for a pattern whose every match begins
    with one of `starts`: the same scan (left to right, each match resuming at the end of
    the one before), but tried only where one of `starts` occurs."""
    at: list[int] = []
    for start in starts:
        i = text.find(start)
        while i >= 0:
            at.append(i)
            i = text.find(start, i + 1)
    if len(at) > 1:
        at.sort()  # a position found twice changes nothing: it fails or is passed again
    last = None
    resume = 0
    for i in at:
        if i >= resume and (match := pattern.match(text, i)):
            last, resume = match, match.end()
    return last


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
    boxed = _BOXED_RE.findall(full) if "\\boxed" in full else None
    if boxed:
        return Extracted(_trim(boxed[-1]), "behind", full)
    last = _last_match(_PRIMARY_MARKER_RE, full, _PRIMARY_STARTS) or _last_match(
        _SECONDARY_MARKER_RE, full, _SECONDARY_STARTS
    )
    text = full
    marker: Literal["behind", "ahead", "none"] = "none"
    if last is not None:
        after = full[last.end() :]
        if after.strip(" \n.:"):
            text, marker = after, "behind"
    ahead = _AHEAD_MARKER_RE.search(text) if "answer" in text else None
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


def _number_check(target: str) -> Check:
    wanted_text = _to_digits(target).lstrip("+")
    decimals = len(wanted_text.split(".", 1)[1]) if "." in wanted_text else 0
    try:
        value: float | None = float(wanted_text)
    except ValueError:  # raised when an output has a number, as before preparation
        value = None

    def check(output: str) -> bool:
        got = extract_number(output)
        if got is None:
            return False
        wanted = value if value is not None else float(wanted_text)
        return abs(round(got, decimals) - wanted) <= 1e-5

    return check


def extract_boolean(output: str, kind: AnswerType) -> bool | None:
    """The truth value a model output answers with, for targets of boolean `kind`.

    The target's own pair of words counts (yes/no, valid/invalid), so does true/false, and an
    answer that is only "0" or "1". After an "answer is" marker the first such word decides;
    otherwise an answer that starts with one ("Yes, because ...") or else the last one.
    """
    return _boolean_in(extract_answer(output), _vocabulary(kind))


def _vocabulary(kind: AnswerType) -> dict[str, bool]:
    false_word, true_word = _BOOLEAN_WORDS[kind]
    return {false_word: False, true_word: True, "false": False, "true": True}


def _boolean_in(found: Extracted, vocab: dict[str, bool]) -> bool | None:
    whole = found.text.strip(string.punctuation + " \n")
    if whole in ("0", "1"):
        return whole == "1"
    every_word = _WORD_RE.findall(found.text)
    words = [w for w in every_word if w in vocab]
    if found.marker == "behind" and words:
        return vocab[words[0]]
    first = every_word[:1]
    if found.marker == "none" and first and first[0] in vocab:
        return vocab[first[0]]
    if found.marker == "none":
        words = [w for w in _WORD_RE.findall(found.full) if w in vocab]
    return vocab[words[-1]] if words else None


def _boolean_check(target: str, kind: AnswerType) -> Check:
    wanted = target.strip().lower().rstrip(".") == _BOOLEAN_WORDS[kind][1]
    vocab = _vocabulary(kind)
    return lambda output: _boolean_in(extract_answer(output), vocab) is wanted


def extract_choice_letter(output: str) -> str | None:
    """The option letter a model output picks ("(b)", "b", "B) ...", "b. ..."), lower-cased.

    As in the paper, bracketed letters count only when exactly one distinct letter appears.
    """
    return _choice_letter(extract_answer(output).text)


def _choice_letter(text: str) -> str | None:
    """`extract_choice_letter` of an already extracted answer."""
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


def _is_word(char: str) -> bool:
    """Whether `char` is a word character as the `re` module's `\\w` defines it for str."""
    return char.isalnum() or char == "_"


def _spans(text: str, phrase: str) -> list[tuple[int, int]]:
    """Where `phrase` occurs in `text` on its own (not inside a word): the spans that
    `re.finditer(r"(?<!\\w)" + re.escape(phrase) + r"(?!\\w)", text)` gives, without
    compiling a pattern for every option of every example."""
    spans = []
    size = len(phrase)
    i = text.find(phrase)
    while i >= 0:
        end = i + size
        if (i == 0 or not _is_word(text[i - 1])) and (end == len(text) or not _is_word(text[end])):
            spans.append((i, end))
            i = text.find(phrase, end)
        else:
            i = text.find(phrase, i + 1)
    return spans


def options_mentioned(text: str, options: dict[str, str]) -> set[str]:
    """Letters of the options whose text appears in `text` on its own.

    An occurrence inside a longer option's occurrence does not count, so "north east" mentions
    only that option and not also "east".
    """
    spans = {letter: _spans(text, phrase) for letter, phrase in options.items() if phrase}
    every = [span for found in spans.values() for span in found]
    mentioned = set()
    for letter, found in spans.items():
        for start, end in found:
            covered = any(s <= start and end <= e and (e - s) > (end - start) for s, e in every)
            if not covered:
                mentioned.add(letter)
                break
    return mentioned


def _choice_check(target: str, question: str) -> Check:
    options = parse_options(question)
    wanted = _target_letter(target, options)
    if wanted is None:
        return _never
    listed = wanted in options

    def check(output: str) -> bool:
        text = extract_answer(output).text
        picked = _choice_letter(text)
        if picked is not None:
            return picked == wanted
        if not listed:
            return False
        return options_mentioned(" ".join(text.split()), options) == {wanted}

    return check


def _never(output: str) -> bool:
    return False


def _normalise_free(text: str, commas: bool, brackets: bool) -> str:
    """A free-form answer for comparison; `commas`: the target has some, `brackets`: the
    target is only brackets (and spaces), so spacing does not count."""
    text = _normalise_text(text)
    if not commas:
        text = text.replace(",", " ")
    if brackets:
        return "".join(text.split())
    return " ".join(text.split())


def _free_check(target: str) -> Check:
    commas, brackets = "," in target, set(target) <= _BRACKET_CHARS
    wanted = _normalise_free(target, commas, brackets)

    def check(output: str) -> bool:
        found = extract_answer(output)
        candidates = [found.text]
        if found.marker == "none":
            lines = [line for line in found.full.splitlines() if line.strip()]
            candidates += lines[:1] + lines[-1:]
        return any(_normalise_free(c, commas, brackets) == wanted for c in candidates)

    return check


def grading_version(rules: Grading = "strict") -> str:
    """The version of one set of grading rules, as reports and run directories record it."""
    return GRADING_VERSION if rules == "strict" else REFERENCE_GRADING_VERSION


def grade(prediction: str, target: str, *, question: str = "", rules: Grading = "strict") -> bool:
    """Whether a model output answers `question` with `target`.

    `question` is needed only for multiple-choice targets, to read the options' texts.
    `rules="reference"` grades as the paper's code does (see `grading_reference.py`).
    """
    return prepare_grade(target, question=question, rules=rules)(prediction)


def prepare_grade(target: str, *, question: str = "", rules: Grading = "strict") -> Check:
    """`grade` for one example, with the example's share of the work done once.

    The returned check maps a model output to whether it is right; it holds no state, so it
    can grade any number of outputs, in any order.
    """
    if rules == "reference":
        return prepare_reference(target, question=question)
    if rules != "strict":
        raise SettingsError(f"grading rules must be one of {', '.join(GRADINGS)}, got {rules!r}")
    wanted = _normalise_target(target)
    kind = answer_type(wanted, question)
    if kind == "number":
        return _number_check(wanted)
    if kind == "choice":
        return _choice_check(wanted, question)
    if kind == "free":
        return _free_check(wanted)
    return _boolean_check(wanted, kind)
