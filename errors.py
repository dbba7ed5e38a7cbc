"""The root of every error the code raises on purpose for a user.

`OproError` marks a problem with the user's input, settings, data, credentials or
environment that the user can fix: the command line prints it as one line and exits
non-zero. Anything else that escapes is a bug in this package and keeps its traceback.
This module imports nothing, so every layer (providers, tasks, caches, engine) may use it.

    OproError
    ├── SettingsError            a setting out of range (also a ValueError)
    ├── providers.errors.ProviderError      a model call failed (key, quota, server, model)
    ├── engine.model.ModelCallError         ... for good, after its retries
    ├── tasks.errors.TaskError              a task name or data file that cannot be used
    ├── caches.disk.CacheError              the cache directory (also an OSError)
    ├── cli.settings.UsageError             bad command-line input or config file
    ├── engine.runlog.RunDirError           a run directory that cannot be used as asked
    ├── engine.evaluate.EvaluationAborted   too many failed pairs, or a fatal failure
    ├── engine.budget.BudgetExceeded        the next call could pass the budget
    └── tasks.tsp_solvers.SolverError       OR-Tools missing, or no tour in the time limit
"""

from __future__ import annotations


class OproError(Exception):
    """A user-facing error: one line that says what is wrong and what to do."""


class SettingsError(OproError, ValueError):
    """A setting (a number, a name, a combination) that cannot be used; see `opro.checks`.

    A `ValueError` too, so callers that validated library arguments with `except ValueError`
    keep working.
    """
