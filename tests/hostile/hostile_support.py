"""What the hostile tests share: the token they set, and process sizes read from /proc."""

from __future__ import annotations

from pathlib import Path

#: Distinctive enough that finding it anywhere in a log or a body is never a coincidence.
API_TOKEN = "hostile-suite-token-5b0c6f1e9d2a"  # noqa: S105 - a test's own token, not a secret


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found
