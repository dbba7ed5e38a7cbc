"""How many tokens a request will use: the one estimator, in two strengths.

Nothing here runs a tokenizer (there is one per vendor and model, and most are not
available offline); the counts come from the text alone.

* `expected_usage` is a best guess, for planning and rate limits: about four characters per
  prompt token (English text through a BPE tokenizer), and every answer at `max_tokens`.
  Rate limiters charge it against tokens-per-minute; `--dry-run` shows it as "~N tokens".
* `worst_case_usage` is a true upper bound, for the budget: the prompt's UTF-8 byte count
  plus a per-message allowance, and `max_tokens` for every sample. Byte-level BPE tokenizers
  never produce more tokens than bytes, and chat templates add a few tokens per message
  (role markers, separators). It over-reserves about fourfold on English text, which only
  means a capped run stops one reservation early rather than one call late.

Both also exist for bare text and for a text's length (`expected_text_tokens`,
`worst_text_tokens`, `expected_tokens_of_chars`, `worst_tokens_of_bytes`), for plans that
price prompts they have not built as requests.
"""

from __future__ import annotations

from opro.providers.types import Request, Usage

CHARS_PER_TOKEN = 4
# Tokens a chat template may add around each message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 16


def expected_tokens_of_chars(chars: int) -> int:
    """The expected token count of a prompt text of `chars` characters."""
    return chars // CHARS_PER_TOKEN + 1


def worst_tokens_of_bytes(size: int) -> int:
    """An upper bound of the tokens one message of `size` UTF-8 bytes can take."""
    return size + MESSAGE_OVERHEAD_TOKENS


def expected_text_tokens(text: str) -> int:
    """The expected token count of `text` in a prompt (about four characters a token)."""
    return expected_tokens_of_chars(len(text))


def worst_text_tokens(text: str) -> int:
    """An upper bound of the tokens `text` can take as one message of a prompt."""
    return worst_tokens_of_bytes(len(text.encode()))


def output_ceiling(request: Request) -> int:
    """The most output tokens a request can be billed for: `max_tokens` per sample."""
    return request.max_tokens * request.n


def expected_usage(request: Request) -> Usage:
    """The expected tokens of `request`, answers counted at their ceiling."""
    return Usage(expected_text_tokens(request.as_text()), output_ceiling(request))


def worst_case_usage(request: Request) -> Usage:
    """An upper bound on the tokens `request` can be billed for."""
    if request.messages is not None:
        prompt = sum(worst_text_tokens(m.content) for m in request.messages)
    else:
        prompt = worst_text_tokens(request.as_text())
    return Usage(prompt, output_ceiling(request))
