"""The root of every error the code raises on purpose for a user.

`OproError` marks a problem with the user's input, settings, data, credentials or
environment that the user can fix: the command line prints it as one line and exits
non-zero. Anything else that escapes is a bug in this package and keeps its traceback.
This module imports nothing, so every layer (providers, tasks, caches, engine) may use it.
"""

from __future__ import annotations


class OproError(Exception):
    """A user-facing error: one line that says what is wrong and what to do."""
