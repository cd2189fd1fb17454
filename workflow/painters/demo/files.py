"""Publishing a folder as a whole: build it under a temporary name, then rename it into place.

Same idea as painters.results.write_atomic, for folders: a process killed at any
moment leaves either the old folder or the new one under the final name, never
a half-written one. Temporaries sit beside the final folder (same file system,
so the rename is cheap) and are hidden (`.NAME.*.tmp`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from painters.results import current_umask


@contextmanager
def building(final: str | os.PathLike, what: str = "--out") -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; when the block succeeds it becomes `final`.

    An existing `final` folder is replaced. On error the temporary folder is removed
    and `final` is left as it was.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise ValueError(f"{what} {final} exists and is not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    # leftovers of a killed earlier run for the same folder
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the published folder gets the usual mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # os.replace cannot replace a non-empty folder: move the old one aside first
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old.tmp", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
