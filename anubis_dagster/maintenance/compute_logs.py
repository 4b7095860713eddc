"""Compute logs (the stdout/stderr files Dagster keeps per step) have a lifetime too.

Dagster's local compute log manager writes them under `$DAGSTER_HOME/storage/<run id>/
compute_logs/`, and deleting a run does not delete them. A step's output can carry anything a
library printed, so the files older than `ANUBIS_LOG_RETENTION_DAYS` are deleted by
`retention_job`, whether their run still exists or not. Plain Python: a walk of the directory,
one entry at a time (bounded memory whatever the backlog), idempotent, with a dry run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass
class FilePurge:
    files: int = 0
    bytes: int = 0


def purge_old_files(base_dir: Path, cutoff: datetime, *, dry_run: bool = False) -> FilePurge:
    """Delete the files under `base_dir` last written before `cutoff`, then the directories
    left empty (never `base_dir` itself)."""
    purge = FilePurge()
    if not base_dir.is_dir():
        return purge
    limit = cutoff.timestamp()
    for root, dirs, files in os.walk(base_dir, topdown=False):
        for name in files:
            path = Path(root, name)
            try:
                stat = path.lstat()
            except FileNotFoundError:  # removed meanwhile
                continue
            if stat.st_mtime >= limit:
                continue
            purge.files += 1
            purge.bytes += stat.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        if not dry_run:  # children only: `base_dir` is never one
            for name in dirs:
                _remove_if_empty(Path(root, name))
    return purge


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (young files), or gone
        path.rmdir()
