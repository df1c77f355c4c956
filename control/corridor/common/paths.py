"""Where a server will make files (a socket, a store): checked before anything is made, so
that a start refused for a path changes nothing on disk and says what stands in the way.
"""

from __future__ import annotations

import os
from pathlib import Path


def obstacle(directory: Path) -> tuple[Path, str] | None:
    """What keeps files from being made in `directory` (made first, parents too, when it is
    missing): the nearest existing path on the way and why, such as (/srv, "is on a read-only
    filesystem"); None when nothing is in the way. Only looks: makes nothing."""
    existing = directory
    while True:
        try:
            existing.stat()
        except (FileNotFoundError, NotADirectoryError):
            if existing.parent == existing:
                return existing, "does not exist"
            existing = existing.parent
            continue
        except OSError as e:
            return existing, f"cannot be read ({e.strerror})"
        break
    if not existing.is_dir():
        return existing, "is not a directory"
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return existing, "is on a read-only filesystem"
    if not os.access(existing, os.W_OK | os.X_OK):
        return existing, "is not writable by this user"
    return None


def cannot_create(path: Path) -> str | None:
    """Why the file `path` could not be created (its directory made first), as a clause:
    "cannot make /run/x: /run is on a read-only filesystem"; None when it could."""
    found = obstacle(path.parent)
    if found is None:
        return None
    where, why = found
    if where == path.parent:
        return f"cannot create {path}: {where} {why}"
    return f"cannot make {path.parent}: {where} {why}"
