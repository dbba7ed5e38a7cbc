"""The paper's grading rules, reproduced so that an accuracy can be compared with the paper's.

The reference implementation (google-deepmind/opro: `metrics.get_normalized_prediction`, then
`eval_utils._get_accuracy`) grades in three stages, each reproduced here from its documented
and tested behaviour, quirks included:

1. `normalize_prediction`: cut at any "Q:"/"Question:", keep what follows the last "answer is"
   (or "is:"/"are:") marker or precedes "is the answer", drop trailing periods, reduce a single
   bracketed letter to "(x)"; numbers: the text after the last "=", number words replaced
   inside any word ("seventy-two" -> "7ty-2" -> 2, "none" -> "n1"), the first (after a marker)
   or last token with a digit, rounded to 0 decimals; booleans: 0/1 mapped to false/true.
2. the first line of that, before any "Q:";
3. `reference_accuracy`: exact match after removing punctuation, the option text of the right
   letter (and no other option's text), a true/false reading of yes/no and valid/invalid, and,
   for every non-numeric answer, the target appearing anywhere in the prediction ("valid" is
   in "invalid", "no" is in "know", any bracket-only answer matches a dyck target).

`grade_reference` picks the reference's per-task switches from the target and the question:
a numeric target is treated as a number, a true/false, yes/no or valid/invalid target as a
boolean, a question listing "(A)"-style options as multiple choice. One deliberate difference:
the reference reads the option texts from the whole prompt, instruction included; this reads
them from the question, so an instruction that mentions "(B)" cannot shift them. Output is
only ever matched as text, never evaluated.

`prepare_reference(target, question=...)` reads the example's share (its kind, the option
texts) once and returns a check for any number of outputs; `grade_reference` uses it once.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Final, Literal

REFERENCE_GRADING_VERSION: Final = "reference-1"

_BOOLEAN_PAIRS: Final = (("false", "true"), ("no", "yes"), ("invalid", "valid"))
_BOOLEAN_WORDS: Final = frozenset(w for pair in _BOOLEAN_PAIRS for w in pair)
# Replaced in this order wherever they occur, even inside other words (a reference quirk).
_NUMBER_WORDS: Final = (
    ("zero", 0), ("one", 1), ("two", 2), ("three", 3), ("four", 4), ("five", 5), ("six", 6),
    ("seven", 7), ("eight", 8), ("nine", 9), ("ten", 10), ("eleven", 11), ("twelve", 12),
    ("thirteen", 13), ("fourteen", 14), ("fifteen", 15), ("sixteen", 16), ("seventeen", 17),
    ("eighteen", 18), ("nineteen", 19), ("twenty", 20), ("thirty", 30), ("forty", 40),
    ("fifty", 50), ("sixty", 60), ("seventy", 70), ("eighty", 80), ("ninety", 90),
)  # fmt: skip
# The reference cuts a model's output at the start of a new question in any of its languages
# (\uff1a is a full-width colon).
_NEXT_QUESTION: Final = (
    "প্রশ্ন:", "frage:", "question:", "pregunta:", "question :", "問題\uff1a", "задача:",
    "swali:", "ప్రశ్న:", "โจทย์:", "问题\uff1a", "q:",
)  # fmt: skip
# ... and keeps what follows a step-by-step answer header in any of them, or "#### ".
_ANSWER_HEADERS: Final = (
    "ধাপে ধাপে উত্তর: ", "schritt-für-schritt-antwort: ", "step-by-step answer: ",
    "respuesta paso a paso: ", "réponse étape par étape : ", "ステップごとの答え\uff1a",
    "пошаговое решение: ", "jibu la hatua kwa hatua: ", "దశలవారీగా సమాధానం: ",
    "คำตอบทีละขั้นตอน: ", "逐步解答\uff1a", "#### ",
)  # fmt: skip
_PRIMARY_BEHIND: Final = ("answer is ", "answer: ", "answer is: ")  # also in normalize_prediction
_SECONDARY_BEHIND: Final = ("is: ", "are: ")


def _possible(delimiters: tuple[str, ...], colon: bool, ascii_only: bool) -> tuple[str, ...]:
    """The delimiters that can occur in a text with(out) a colon and (not) only ASCII."""
    return tuple(
        d
        for d in delimiters
        if (colon or (":" not in d and "\uff1a" not in d)) and (d.isascii() or not ascii_only)
    )


# By (colon in the text, the text is ASCII): the new-question delimiters that can occur.
_NEXT_QUESTION_IN: Final = {
    (colon, ascii_only): _possible(_NEXT_QUESTION, colon, ascii_only)
    for colon in (True, False)
    for ascii_only in (True, False)
}
# By (primary marker, colon, ASCII): the delimiters an answer follows that can occur, in the
# reference's order: the headers, then the primary or the secondary markers.
_BEHIND: Final = {
    (primary, colon, ascii_only): _possible(
        (*_ANSWER_HEADERS, *(_PRIMARY_BEHIND if primary else _SECONDARY_BEHIND)),
        colon,
        ascii_only,
    )
    for primary in (True, False)
    for colon in (True, False)
    for ascii_only in (True, False)
}
_AHEAD: Final = (
    " is the correct answer",
    " is the right answer",
    " is the final answer",
    " is the answer",
)
_BRACKETED: Final = tuple(f"({c})" for c in string.ascii_lowercase)
_BRACKETED_RE = re.compile(r"\(([a-z])\)")  # finds every "(x)": two can never overlap
_ANY_NUMBER_WORD_RE = re.compile("|".join(word for word, _ in _NUMBER_WORDS))
_FIRST_PARENS_RE = re.compile(r"\(.*?\)")
_LAST_DIGITS_RE = re.compile(r"(\d+)(?!.*\d)")
_OPTION_SPLIT_RE = re.compile("|".join(rf"\({c}\)" for c in string.ascii_uppercase) + "|A:")
_UPPER_OPTION_RE = re.compile(r"\([A-Z]\)")
_NUMBER_TARGET_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")

ReferenceKind = Literal["number", "boolean", "choice", "free"]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_NO_PUNCTUATION: Final = str.maketrans("", "", string.punctuation)
_FILENAME_DROPPED: Final = str.maketrans(
    "", "", string.punctuation.replace("!", "").replace("?", "").replace(".", "")
)


def _strip_punctuation(text: str) -> str:
    return text.translate(_NO_PUNCTUATION)


def _filename_punctuation(text: str) -> str:
    """The reference's filename form: most punctuation dropped, "!?." spelled out."""
    text = text.translate(_FILENAME_DROPPED)
    return text.replace("!", "<EXCLAMATION>").replace("?", "<QUESTION>").replace(".", "<PERIOD>")


def _single_bracketed_choice(text: str) -> str:
    """With exactly one distinct "(x)" present, the first parenthesised text (as the reference)."""
    if "(" in text and len(set(_BRACKETED_RE.findall(text))) == 1:
        first = _FIRST_PARENS_RE.search(text)
        return first.group(0) if first else text
    return text


def _as_number(text: str, answer_indicated: bool, num_decimals: int) -> str:
    text = text.split("=")[-1]
    for char in "$,%€£":
        text = text.replace(char, "")
    text = text.split(":")[0].strip()
    if _ANY_NUMBER_WORD_RE.search(text):
        for word, value in _NUMBER_WORDS:
            text = text.replace(word, str(value))
    parts = text.split(" ") if answer_indicated else text.split(" ")[::-1]
    text = next((p for p in parts if not p.isalpha()), parts[0])
    while text and text[-1].isalpha():  # "156kgs" -> "156", "823-yard" -> "823-" -> "823"
        text = text[:-1]
    text = text.removesuffix("-")
    if _is_float(text):
        return f"{round(float(text), num_decimals):.{num_decimals}f}"
    found = _LAST_DIGITS_RE.search(text)
    return found.group(0) if found else text


def normalize_prediction(
    prediction: str, *, treat_as_number: bool, treat_as_bool: bool = False, num_decimals: int = 0
) -> str:
    """The answer part of a model output, normalised as the reference's metrics do."""
    text = prediction.lower().strip()
    # str.find / rfind cut exactly where the reference's split(delimiter)[0] / [-1] do.
    # Delimiters that cannot occur (most hold a colon, many are not ASCII) are skipped, which
    # changes nothing: the text only gets shorter, so it never gains a colon or a character.
    colon = ":" in text or "\uff1a" in text
    ascii_only = text.isascii()
    for delimiter in _NEXT_QUESTION_IN[colon, ascii_only]:
        cut = text.find(delimiter)
        if cut >= 0:
            text = text[:cut]
    # Case-sensitive, as the reference: any of _PRIMARY_BEHIND in the output as given.
    primary = "answer is " in prediction or "answer: " in prediction or "answer is: " in prediction
    answer_indicated = False
    for delimiter in _BEHIND[primary, colon, ascii_only]:
        cut = text.rfind(delimiter)
        if cut >= 0:
            text = text[cut + len(delimiter) :]
            answer_indicated = True
    for delimiter in _AHEAD:
        cut = text.find(delimiter)
        if cut >= 0:
            text = text[:cut]
            answer_indicated = True
    text = text.strip().split("this is the solution:")[0].rstrip(".").rstrip("'")
    text = _single_bracketed_choice(text)
    if not treat_as_bool:
        if treat_as_number:
            return _as_number(text, answer_indicated, num_decimals)
        return text.split(".")[0]
    as_text = text.split(".")[0]
    as_number = _as_number(text, answer_indicated, num_decimals)
    if as_text in _BOOLEAN_WORDS:
        text = as_text
    else:
        if as_number in ("0", "1"):
            text = str(as_number == "1").lower()
        if as_text in ("0", "1"):
            text = str(as_text == "1").lower()
    return _strip_punctuation(text).strip()


def first_line(normalized: str) -> str:
    """What the reference grades of a normalised prediction: its first line, before any "Q:"."""
    return normalized.strip(":").strip().split("\n")[0].split("Q:")[0]


def _option_index(symbol: str) -> int:
    symbol = symbol.lower()
    if symbol in _BRACKETED:
        symbol = symbol[1]
    return ord(symbol) - ord("a")


def _option_text(input_text: str, symbol: str) -> str:
    """The text after the n-th "(X)" of the question, n given by the letter (not by matching)."""
    texts = [item.strip().lower() for item in _OPTION_SPLIT_RE.split(input_text)][1:]
    return texts[_option_index(symbol)].split("\n")[0]


def reference_accuracy(
    true_answer: str,
    pred_answer: str,
    input_text: str = "",
    *,
    treat_include_as_correct: bool = False,
) -> bool:
    """Whether a normalised prediction is right, by the reference's `_get_accuracy` rules.

    `input_text` is given for multiple-choice questions only. A letter target whose option is
    missing from `input_text` (where the reference raises IndexError) is graded wrong.
    """
    return _Target(true_answer, input_text).accuracy(pred_answer, treat_include_as_correct)


class _Target:
    """The target's side of `reference_accuracy`, worked out once per example."""

    __slots__ = (
        "choice",
        "impossible",
        "lowered",
        "others",
        "others_in_rest",
        "true",
        "true_bare",
        "true_text",
        "wanted_boolean",
    )

    def __init__(self, true_answer: str, input_text: str) -> None:
        true = self.lowered = true_answer.lower()
        self.choice = bool(input_text)
        self.impossible = False  # the reference returns False (or raises) whatever the output
        self.true_text = ""
        self.others: list[str] = []
        if input_text:
            if true in string.ascii_lowercase:  # a substring test in the reference: "" and "ab"
                true = f"({true})"
            self.impossible = true not in _BRACKETED
            if not self.impossible:
                present = set(_UPPER_OPTION_RE.findall(input_text))
                symbols = []
                for letter in string.ascii_uppercase:
                    if f"({letter})" not in present:
                        break
                    symbols.append(f"({letter})")
                try:
                    self.true_text = _option_text(input_text, true).lower()
                    self.others = [
                        _option_text(input_text, s)
                        for s in symbols
                        if _option_index(s) != _option_index(true)
                    ]
                except IndexError:
                    self.impossible = True
        if true in _BRACKETED:
            true = true[1]
        self.true = true
        self.true_bare = _strip_punctuation(true).strip()
        # Whether the others are looked for in the output minus the right option's text.
        self.others_in_rest = all(self.true_text not in other for other in self.others)
        self.wanted_boolean: str | None = None
        for pair in _BOOLEAN_PAIRS:
            if true in pair:
                self.wanted_boolean = str(pair.index(true) == 1).lower()
                break

    def accuracy(self, pred_answer: str, treat_include_as_correct: bool) -> bool:
        if self.impossible:
            return False
        pred = pred_answer.lower()
        included = self.lowered in pred
        true, true_text, others = self.true, self.true_text, self.others
        if self.choice and pred in string.ascii_lowercase:
            pred = f"({pred})"
        if pred in _BRACKETED:
            pred = pred[1]
        exact = pred == true or _strip_punctuation(pred).strip() == self.true_bare
        text_exact = self.choice and (
            pred == true_text or _filename_punctuation(pred).strip() == true_text
        )
        if self.others_in_rest:
            rest = pred.replace(true_text, "")
            others_absent = all(other not in rest for other in others)
        else:
            others_absent = all(other not in pred for other in others)
        text_included = self.choice and true_text in pred and others_absent
        boolean = False
        if self.wanted_boolean is not None:
            if pred in ("0", "1"):
                pred = str(pred == "1").lower()
            boolean = pred == self.wanted_boolean or pred.strip() == self.wanted_boolean
        correct = exact or text_exact or text_included or boolean
        return correct or (treat_include_as_correct and included)


def reference_kind(target: str, question: str = "") -> ReferenceKind:
    """Which of the reference's per-task switches apply, read from the example itself.

    The paper's numeric tasks have numeric targets, its boolean tasks true/false, yes/no or
    valid/invalid targets, and its multiple-choice tasks "(A)"-style options in the question.
    """
    text = target.strip()
    if _NUMBER_TARGET_RE.fullmatch(text):
        return "number"
    if text.lower() in _BOOLEAN_WORDS:
        return "boolean"
    if _UPPER_OPTION_RE.search(question):
        return "choice"
    return "free"


def grade_reference(prediction: str, target: str, *, question: str = "") -> bool:
    """Whether the reference implementation would count `prediction` correct for `target`."""
    return prepare_reference(target, question=question)(prediction)


def prepare_reference(target: str, *, question: str = "") -> Callable[[str], bool]:
    """`grade_reference` for one example, its share of the work done once (see the docstring)."""
    kind = reference_kind(target, question)
    number, boolean, include = kind == "number", kind == "boolean", kind != "number"
    prepared = _Target(target, question if kind == "choice" else "")

    def check(prediction: str) -> bool:
        normalized = normalize_prediction(prediction, treat_as_number=number, treat_as_bool=boolean)
        return prepared.accuracy(first_line(normalized), include)

    return check
