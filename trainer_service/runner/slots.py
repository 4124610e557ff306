"""Job slots on the store: the one bound on Kubernetes Jobs that holds across workers and replicas.

Under the ``kubernetes`` executor every QUEUED or RUNNING job has a Job on the cluster, so
``--max-concurrent-jobs`` bounds them by slots: files ``<store>/jobs/.slots/<n>`` for ``n``
below the bound, each naming the job that holds it. A job takes a free slot before its Job
is created, with a hard link of a file it wrote (``link`` fails when the name exists, on a
local disk and on NFS alike), so two API calls racing for the last slot cannot both win;
``JobBook.finish`` frees the job's slot when it records the job's end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

SLOTS_DIR = ".slots"


class JobSlots:
    """``size`` slots under ``root``."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root / SLOTS_DIR
        self.size = size

    def take(self, job_id: str) -> bool:
        """Hold a free slot for ``job_id`` (True), or find none free (False)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if job_id in self.holders().values():
            return True  # the same job submitted again
        mine = self.root / f".{job_id}-{secrets.token_hex(4)}"
        mine.write_text(job_id, encoding="utf-8")
        try:
            for number in range(self.size):
                try:
                    os.link(mine, self.root / str(number))
                except FileExistsError:
                    continue
                return True
            return False
        finally:
            mine.unlink(missing_ok=True)

    def release(self, job_id: str) -> None:
        for slot, holder in self.holders().items():
            if holder == job_id:
                slot.unlink(missing_ok=True)

    def holders(self) -> dict[Path, str]:
        taken: dict[Path, str] = {}
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for slot in self.root.iterdir():
                if slot.name.isdigit():
                    with contextlib.suppress(OSError):
                        taken[slot] = slot.read_text(encoding="utf-8").strip()
        return taken
