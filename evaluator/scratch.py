"""A benchmark's working directory: the caller's, kept; or a temporary one, removed afterwards.

A benchmark run writes hundreds of MB there (the embedded Redis's append-only file holds every
request it served), so a directory the benchmark made for itself must not outlive it.

Example:
    >>> with scratch_dir(None, "modelci-doc-") as root:
    ...     _ = (root / "file").write_text("x")
    ...     made = root
    >>> made.exists()
    False
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_dir(work_dir: str | Path | None, prefix: str) -> Iterator[Path]:
    """``work_dir`` as a Path (left in place), or a new temporary directory named ``prefix...``
    that is removed with everything in it when the block ends, however it ends."""
    if work_dir is not None:
        path = Path(work_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
