"""Files only the gateway's own user may read: private keys, the buffer of readings.

Created with their final permissions (never created open and narrowed afterwards, which leaves
a moment for another local user to read them), whatever the process's umask.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

FOLDER = 0o700
FILE = 0o600


def private_folder(path: Path) -> None:
    """Create ``path`` and any missing parent as 0700; folders that exist are left as they are
    (the operator may have shared them on purpose)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=FOLDER)
            os.chmod(folder, FOLDER)  # even under a umask that takes the owner's own bits


def create_private(path: Path) -> None:
    """Create an empty 0600 file unless it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically: readers see the old file or the
    whole new one, and nobody else ever sees the new one."""
    # A new file of a name nobody can guess, created 0600 (mkstemp uses O_EXCL).
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            fd = -1
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
