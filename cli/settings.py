"""Typed settings for the `opro` commands: an option's default, then a TOML file, then flags.

Every option is declared once, as an `Option` of an `OptionGroup` (task, models, engine
limits, cost, cache, run directory, ...; see `cli/options.py`), and a command is the tuple of
groups it uses. `add_groups` registers them with argparse without a default
(`argparse.SUPPRESS`), so an attribute in the namespace means the flag was given, even when
its value is None (`--score-buckets none`). `resolve` layers the option's default, then the
`--config` file's keys (named like the long options, dashes or underscores), then the flags
given, and remembers where each value came from: a bad value or a bad combination is reported
against its source (`--steps ...`, `run.toml: steps ...`). A value from a file goes through
the same `type` callable as the flag (`checks.IntRange`/`FloatRange` for numbers), so both
refuse the same values. `Settings.pick` turns the values into the typed dataclasses commands
use; nothing here knows about argparse's internals or keeps the parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from opro.errors import OproError

Kind = Literal["value", "switch", "append", "list"]
T = TypeVar("T")


class UsageError(OproError):
    """Bad input on the command line or in a config file; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag, how its text becomes a value, its default and help.

    `kind`: "value" (one value), "switch" (a flag with no value: True when given),
    "append" (repeatable, a list) or "list" (one or more values after the flag).
    `default_text` is how the help shows a default that depends on other settings.
    `in_file` False: the option cannot be set in a config file (`--config` itself).
    """

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    kind: Kind = "value"
    metavar: str | None = None
    default_text: str | None = None
    in_file: bool = True

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def key(self) -> str:
        """The option's name in a config file (underscores work too)."""
        return self.flag.removeprefix("--")

    def help_text(self) -> str:
        shown = self.default_text
        if shown is None and self.kind != "switch" and self.default is not None:
            value = self.default
            if isinstance(value, list | tuple):
                value = " ".join(_plain(v) for v in value)
            shown = _plain(value)
        text = f"{self.help} (default: {shown})" if shown else self.help
        return text.replace("%", "%%")  # argparse formats help with %


def _plain(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2:  # a (w, b) setting
        return f"{value[0]},{value[1]}"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True, slots=True)
class OptionGroup:
    """A titled group of options, shown together in `--help`.

    `exclusive` lists sets of flags of which at most one may be given; a flag given on the
    command line also replaces the file's value of the others (`--cache-dir` beats a file's
    `no-cache = true`).
    """

    title: str
    options: tuple[Option, ...]
    exclusive: tuple[tuple[str, ...], ...] = ()
    description: str | None = None

    def plus(self, *options: Option, exclusive: Sequence[tuple[str, ...]] = ()) -> OptionGroup:
        return replace(
            self, options=(*self.options, *options), exclusive=(*self.exclusive, *exclusive)
        )

    def without(self, *flags: str) -> OptionGroup:
        unknown = set(flags) - {o.flag for o in self.options}
        if unknown:
            raise ValueError(f"{self.title} has no options {sorted(unknown)}")
        kept = tuple(o for o in self.options if o.flag not in flags)
        sets = tuple(s for s in self.exclusive if not set(s) & set(flags))
        return replace(self, options=kept, exclusive=sets)

    def changed(self, flag: str, **changes: Any) -> OptionGroup:
        """The group with one option's default, help or type replaced."""
        if flag not in {o.flag for o in self.options}:
            raise ValueError(f"{self.title} has no option {flag}")
        options = tuple(replace(o, **changes) if o.flag == flag else o for o in self.options)
        return replace(self, options=options)


def add_groups(parser: argparse.ArgumentParser, groups: Iterable[OptionGroup]) -> None:
    """Register every option of `groups` with `parser`, each under its group's title."""
    for group in groups:
        section = parser.add_argument_group(group.title, group.description)
        holders: dict[str, Any] = {}
        for flags in group.exclusive:
            mutex = section.add_mutually_exclusive_group()
            holders.update(dict.fromkeys(flags, mutex))
        for option in group.options:
            _register(holders.get(option.flag, section), option)


def _register(container: Any, option: Option) -> None:
    kwargs: dict[str, Any] = {"help": option.help_text(), "default": argparse.SUPPRESS}
    if option.kind == "switch":
        container.add_argument(option.flag, action="store_true", **kwargs)
        return
    if option.kind == "append":
        kwargs["action"] = "append"
    elif option.kind == "list":
        kwargs["nargs"] = "+"
    if option.type is not None:
        kwargs["type"] = option.type
    if option.choices is not None:
        kwargs["choices"] = option.choices
    if option.metavar is not None:
        kwargs["metavar"] = option.metavar
    container.add_argument(option.flag, **kwargs)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: "default", "file" (with its path and key) or "flag"."""

    kind: Literal["default", "file", "flag", "derived"]
    name: str  # "--steps", "run.toml: steps", "the default", "--protocol paper"


DEFAULT = Source("default", "the default")
NOT_SET: Any = object()  # a config file's `switch = false`


@dataclass(slots=True)
class Settings:
    """The resolved values of a command's options, by destination name, with their sources."""

    command: str
    values: dict[str, Any]
    sources: dict[str, Source] = field(default_factory=dict)

    def __getitem__(self, dest: str) -> Any:
        return self.values[dest]

    def __contains__(self, dest: str) -> bool:
        return dest in self.values

    def get(self, dest: str, default: Any = None) -> Any:
        return self.values.get(dest, default)

    def given(self, dest: str) -> bool:
        """Set by a flag or the config file (not a default, not derived)."""
        return self.sources.get(dest, DEFAULT).kind in ("file", "flag")

    def where(self, dest: str) -> str:
        """The value's source as an error message names it: `--steps` or `run.toml: steps`."""
        source = self.sources.get(dest, DEFAULT)
        if source.kind in ("file", "flag"):
            return source.name
        return "--" + dest.replace("_", "-")

    def derive(self, dest: str, value: Any, because: str) -> None:
        """Fill a setting nobody gave from other settings (`because` names the rule)."""
        if not self.given(dest):
            self.values[dest] = value
            self.sources[dest] = Source("derived", because)

    def pick(self, cls: type[T], **extra: Any) -> T:
        """An instance of the dataclass `cls` from the values whose names are its fields
        (and `extra`); fields this command has no option for keep the dataclass's defaults."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in self.values.items() if k in names}, **extra)


def resolve(groups: Iterable[OptionGroup], args: argparse.Namespace, *, command: str) -> Settings:
    """Defaults, overlaid by the `--config` file (if the command has one), then by the flags."""
    groups = tuple(groups)
    options = {o.dest: o for g in groups for o in g.options}
    given = vars(args)
    settings = Settings(command, {d: _initial(o) for d, o in options.items()})
    config = given.get("config")
    if config is not None:
        settings.values["config"] = config
        settings.sources["config"] = Source("flag", "--config")
        for dest, value, source in _file_values(Path(config), options, groups, command):
            settings.values[dest] = value
            settings.sources[dest] = source
    flagged = {d for d in options if d in given}
    for group in groups:  # a flag replaces the file's value of the options it excludes
        for flags in group.exclusive:
            dests = {options_by_flag(options, f).dest for f in flags}
            if dests & flagged:
                for dest in dests - flagged:
                    settings.values[dest] = _initial(options[dest])
                    settings.sources.pop(dest, None)
    for dest in flagged:
        settings.values[dest] = given[dest]
        settings.sources[dest] = Source("flag", options[dest].flag)
    return settings


def options_by_flag(options: dict[str, Option], flag: str) -> Option:
    return options[flag.removeprefix("--").replace("-", "_")]


def _initial(option: Option) -> Any:
    """An option's default (a switch not given is False; a list default is copied)."""
    if option.kind == "switch":
        return bool(option.default)
    return list(option.default) if isinstance(option.default, list) else option.default


def _file_values(
    path: Path, options: dict[str, Option], groups: tuple[OptionGroup, ...], command: str
) -> list[tuple[str, Any, Source]]:
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    found: list[tuple[str, Any, Source]] = []
    for key, raw in table.items():
        dest = key.replace("-", "_")
        option = options.get(dest)
        if option is None or not option.in_file:
            raise UsageError(f"{path}: unknown setting {key!r} (see opro {command} --help)")
        value = file_value(option, key, raw, str(path))
        if value is not NOT_SET:
            found.append((dest, value, Source("file", f"{path}: {key}")))
    present = {dest for dest, _, _ in found}
    for group in groups:
        for flags in group.exclusive:
            both = [f for f in flags if options_by_flag(options, f).dest in present]
            if len(both) > 1:
                keys = " and ".join(f.removeprefix("--") for f in both)
                raise UsageError(f"{path}: {keys} exclude each other: give one of them")
    return found


def file_value(option: Option, key: str, value: Any, where: str) -> Any:
    """A config file's value for `option`, checked like the flag's text.

    A switch set to false is `NOT_SET`, as if the file did not name it.
    """
    if isinstance(value, dict):
        raise UsageError(f"{where}: {key} must be a value, not a table")
    if option.kind == "switch":
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {key} must be true or false")
        return True if value else NOT_SET
    if option.kind in ("append", "list"):
        items = value if isinstance(value, list) else [value]
        if option.kind == "append" and not all(isinstance(v, str) for v in items):
            raise UsageError(f"{where}: {key} must be a string or a list of strings")
        if not items:
            raise UsageError(f"{where}: {key} must not be an empty list")
        return [_converted(option, key, item, where) for item in items]
    if isinstance(value, bool | list):
        raise UsageError(f"{where}: {key} must be a single value")
    return _converted(option, key, value, where)


def _converted(option: Option, key: str, value: Any, where: str) -> Any:
    if isinstance(value, dict | list | bool) and option.type is not None:
        raise UsageError(f"{where}: {key} must hold single values")
    try:
        converted = option.type(str(value)) if option.type is not None else str(value)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"{where}: {key}: {exc}") from None
    if option.choices is not None and converted not in option.choices:
        choices = ", ".join(option.choices)
        raise UsageError(f"{where}: {key} must be one of {choices}, got {value!r}")
    return converted
