"""Offline generated tasks: BBH-style boolean expressions and multi-step integer arithmetic.

They need no data files, so the engine, its tests and its benchmarks can run anywhere. Both are
seeded with `random.Random(seed)` (stable across Python versions for these calls) and their
targets come from small recursive-descent evaluators over tokens: the text is never handed to
Python's `eval`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from opro.tasks.types import Example

DEFAULT_SIZE = 200

_BOOL_TOKEN_RE = re.compile(r"\(|\)|True|False|not|and|or|\S+")
_ARITH_TOKEN_RE = re.compile(r"\d+|[-+*()]|\S")


class _Tokens:
    """A cursor over a token list for the recursive-descent evaluators."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'a token'} at position {self.pos}")
        self.pos += 1
        return token

    def finish(self) -> None:
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.pos]!r} at position {self.pos}")


# ---------------------------------------------------------------- boolean expressions


def tokenize_boolean(text: str) -> list[str]:
    """Split a BBH boolean expression into tokens, dropping the trailing "is"."""
    tokens = _BOOL_TOKEN_RE.findall(text)
    return tokens[:-1] if tokens and tokens[-1] == "is" else tokens


def evaluate_boolean(tokens: Sequence[str]) -> bool:
    """Evaluate True/False with not > and > or and parentheses, as Python would."""
    cursor = _Tokens(tokens)
    value = _bool_or(cursor)
    cursor.finish()
    return value


def _bool_or(c: _Tokens) -> bool:
    value = _bool_and(c)
    while c.peek() == "or":
        c.take()
        right = _bool_and(c)  # evaluate both sides: no short-circuit in the parse
        value = value or right
    return value


def _bool_and(c: _Tokens) -> bool:
    value = _bool_not(c)
    while c.peek() == "and":
        c.take()
        right = _bool_not(c)
        value = value and right
    return value


def _bool_not(c: _Tokens) -> bool:
    if c.peek() == "not":
        c.take()
        return not _bool_not(c)
    token = c.take()
    if token == "(":
        value = _bool_or(c)
        c.take(")")
        return value
    if token in ("True", "False"):
        return token == "True"
    raise ValueError(f"unexpected {token!r} at position {c.pos - 1}")


def _gen_or(rng: random.Random, n: int) -> list[str]:
    """An `or`-level expression of exactly n tokens (the grammar below admits every n >= 1)."""
    if n >= 3 and rng.random() < 0.5:
        left = rng.randint(1, n - 2)
        return [*_gen_or(rng, left), "or", *_gen_and(rng, n - 1 - left)]
    return _gen_and(rng, n)


def _gen_and(rng: random.Random, n: int) -> list[str]:
    if n >= 3 and rng.random() < 0.5:
        left = rng.randint(1, n - 2)
        return [*_gen_and(rng, left), "and", *_gen_not(rng, n - 1 - left)]
    return _gen_not(rng, n)


def _gen_not(rng: random.Random, n: int) -> list[str]:
    if n == 2 or (n >= 2 and rng.random() < 0.3):
        return ["not", *_gen_not(rng, n - 1)]
    if n == 1:
        return [rng.choice(("True", "False"))]
    return ["(", *_gen_or(rng, n - 2), ")"]


def boolean_expression_examples(
    size: int = DEFAULT_SIZE, seed: int = 0, *, num_tokens: int = 8
) -> tuple[Example, ...]:
    """Expressions like BBH's "not ( True ) and ( True ) is" (8 tokens before "is")."""
    if num_tokens < 1:
        raise ValueError("num_tokens must be at least 1")
    rng = random.Random(seed)
    examples: list[Example] = []
    for i in range(size):
        tokens = _gen_or(rng, num_tokens)
        text = " ".join([*tokens, "is"])
        examples.append(Example(input=text, target=str(evaluate_boolean(tokens)), id=str(i)))
    return tuple(examples)


# ---------------------------------------------------------------- integer arithmetic


def tokenize_arithmetic(text: str) -> list[str]:
    """Split an expression such as "((-1 + 2) * 3) =" into tokens, dropping a final "="."""
    tokens = _ARITH_TOKEN_RE.findall(text)
    return tokens[:-1] if tokens and tokens[-1] == "=" else tokens


def evaluate_arithmetic(tokens: Sequence[str]) -> int:
    """Evaluate integers with + - * (the usual precedence), unary minus and parentheses."""
    cursor = _Tokens(tokens)
    value = _arith_sum(cursor)
    cursor.finish()
    return value


def _arith_sum(c: _Tokens) -> int:
    value = _arith_product(c)
    while c.peek() in ("+", "-"):
        op = c.take()
        right = _arith_product(c)
        value = value + right if op == "+" else value - right
    return value


def _arith_product(c: _Tokens) -> int:
    value = _arith_unary(c)
    while c.peek() == "*":
        c.take()
        value *= _arith_unary(c)
    return value


def _arith_unary(c: _Tokens) -> int:
    token = c.take()
    if token == "-":
        return -_arith_unary(c)
    if token == "(":
        value = _arith_sum(c)
        c.take(")")
        return value
    if token.isdigit():
        return int(token)
    raise ValueError(f"unexpected {token!r} at position {c.pos - 1}")


def _operand_group(rng: random.Random, operands: int, max_abs: int) -> str:
    parts = [str(rng.randint(-max_abs, max_abs))]
    for _ in range(operands - 1):
        parts += [rng.choice("+-*"), str(rng.randint(-max_abs, max_abs))]
    return "(" + " ".join(parts) + ")"


def arithmetic_examples(
    size: int = DEFAULT_SIZE, seed: int = 0, *, operands: int = 4, max_abs: int = 9
) -> tuple[Example, ...]:
    """Problems in BBH multistep_arithmetic_two's format: "((a + b * c - d) * (...)) ="."""
    if operands < 1 or max_abs < 0:
        raise ValueError("operands must be at least 1 and max_abs non-negative")
    rng = random.Random(seed)
    examples: list[Example] = []
    for i in range(size):
        left = _operand_group(rng, operands, max_abs)
        right = _operand_group(rng, operands, max_abs)
        text = f"({left} {rng.choice('+-*')} {right}) ="
        value = evaluate_arithmetic(tokenize_arithmetic(text))
        examples.append(Example(input=text, target=str(value), id=str(i)))
    return tuple(examples)
