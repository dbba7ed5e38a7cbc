"""`opro cache export` and `opro cache import`: move results between cache backends.

`export --cache SRC --out FILE.jsonl` writes every readable result of a disk or Redis cache
to a JSONL file; `import --cache DEST FILE.jsonl` stores a file's results in one, after
validating every line, and prints what it added, replaced and found already there. Both
stream (constant memory) and both go through `caches.open.open_cache`, so `--cache` takes
the same specs as everywhere else: a directory or redis://HOST:PORT/DB. The work is in
`caches/transfer.py`; this module parses, opens, prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from opro.caches.disk import default_cache_dir
from opro.caches.open import cache_label, is_url, open_cache
from opro.caches.transfer import TransferError, export_cache, import_cache
from opro.cli.help import add_command
from opro.cli.options import cache_spec

CACHE_HELP = (
    "a cache directory or a Redis URL (redis://HOST:PORT/DB, rediss://, unix://) "
    "(default: $OPRO_CACHE_DIR, else the user cache directory)"
)


def register(subparsers: Any) -> None:
    """Add `cache export` and `cache import` to the `opro` parser's subcommands."""
    p = add_command(
        subparsers,
        "cache",
        "Copy cached results between a disk cache and a Redis cache through a JSONL file.",
        [
            "opro cache export --cache ~/.cache/opro-engine/results --out results.jsonl",
            "opro cache import --cache redis://localhost:6379/0 results.jsonl",
        ],
        details='Export writes one {"key", "value"} line per result; import checks every '
        "line before it stores any, skips results the cache already holds, and can be run "
        "again safely.",
        short="export or import cached results (disk <-> Redis)",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    out = actions.add_parser("export", help="write a cache's results to a JSONL file")
    out.add_argument("--cache", type=cache_spec, metavar="URL|DIR", help=CACHE_HELP)
    out.add_argument("--out", required=True, metavar="FILE", help="the JSONL file to write")
    into = actions.add_parser("import", help="store a JSONL file's results in a cache")
    into.add_argument("--cache", type=cache_spec, metavar="URL|DIR", help=CACHE_HELP)
    into.add_argument("file", metavar="FILE", help="a file written by `opro cache export`")


def cmd_cache(args: argparse.Namespace) -> int:
    spec: str | None = args.cache
    label = cache_label(spec) or str(default_cache_dir())
    if args.action == "export":
        where = Path(spec).expanduser() if spec and not is_url(spec) else None
        if spec is None:
            where = default_cache_dir()
        if where is not None and not where.is_dir():
            raise TransferError(f"there is no cache in {where}: give --cache DIR or URL")
        cache = open_cache(spec)
        try:
            done = export_cache(cache, Path(args.out))
        finally:
            cache.close()
        left_out = f" ({done.skipped:,} unreadable entries left out)" if done.skipped else ""
        print(f"exported {done.records:,} results from {label} to {args.out}{left_out}")
        return 0
    path = Path(args.file)
    if not path.is_file():
        raise TransferError(f"{path} is not a file: give a file written by `opro cache export`")
    cache = open_cache(spec)
    try:
        got = import_cache(cache, path)
    finally:
        cache.close()
    print(
        f"imported {got.records:,} records from {path} into {label}: {got.added:,} added, "
        f"{got.replaced:,} replaced, {got.unchanged:,} already there"
    )
    return 0
