"""Disk full: a job publishing onto a store with no space left fails cleanly; the service lives on.

The store is a size-limited tmpfs mounted by the test (root only): the only way to get a
real ENOSPC from the kernel without filling the machine's disk.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import wait_for

from squarenet.stack import running_trainer
from squarenet.store import TMP_PREFIX, ModelStore

TMPFS_SIZE = "16m"
RESERVE = 40 * 1024  # bytes left free: room for job records, not for a version (~64 KiB)
TINY_JOB = {"n_samples": 200, "epochs": 3, "batch_size": 32, "seed": 1}


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test, unmounted afterwards."""
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a size-limited tmpfs is refused here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer could still use on the volume of ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill_up(volume: Path, leave: int) -> Path:
    """Write a filler file until only ``leave`` bytes are free; return it."""
    filler = volume / "filler"
    with filler.open("wb") as handle:
        handle.write(b"\0" * (free_bytes(volume) - leave))
    return filler


def job_when_finished(base_url: str, job_id: str) -> dict[str, Any]:
    """The job once it is no longer QUEUED or RUNNING."""

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=5).json()
        return body if body["state"] not in ("QUEUED", "RUNNING") else None

    return wait_for(finished, 120, f"job {job_id} to finish", every=0.2)


@pytest.mark.slow
def test_a_full_disk_fails_the_job_cleanly_and_the_service_keeps_answering(
    small_volume: Path, tmp_path: Path
) -> None:
    store = ModelStore(small_volume / "store")
    with running_trainer(store.root, tmp_path / "trainer.log") as trainer:
        filler = fill_up(small_volume, RESERVE)
        before = free_bytes(small_volume)
        submitted = httpx.post(f"{trainer.base_url}/v1/jobs", json=TINY_JOB, timeout=10)
        assert submitted.status_code == 202, submitted.text
        failed = job_when_finished(trainer.base_url, submitted.json()["id"])
        after = free_bytes(small_volume)
        debris = [p.name for p in store.model_dir().iterdir()] if store.model_dir().is_dir() else []
        answers = {
            path: httpx.get(f"{trainer.base_url}{path}", timeout=5).status_code
            for path in ("/healthz", "/readyz", "/v1/jobs", "/v1/models")
        }
        models = httpx.get(f"{trainer.base_url}/v1/models", timeout=5).json()["models"]

        filler.unlink()  # space again: the same service runs the next job to the end
        again = httpx.post(f"{trainer.base_url}/v1/jobs", json=TINY_JOB, timeout=10)
        succeeded = job_when_finished(trainer.base_url, again.json()["id"])
    print(
        f"\ndisk full: job {failed['state']}: {failed['error']!r}; free before {before} B, "
        f"after {after} B; model folder {debris}; answers {answers}; then {succeeded['state']}"
    )
    assert failed["state"] == "FAILED"
    assert "No space left on device" in failed["error"]
    assert "Traceback" not in failed["error"]
    assert str(small_volume) not in failed["error"], "the job's error shows the server's paths"
    assert failed["model_version"] is None
    # no version and no staging data; only the fence's mark that the job may never publish
    leftovers = [name for name in debris if name.startswith(TMP_PREFIX) or name.isdigit()]
    assert leftovers == [f"{TMP_PREFIX}{failed['id']}-revoked"], leftovers
    assert after >= before - RESERVE // 2  # the half-written export was given back
    assert answers == {"/healthz": 200, "/readyz": 200, "/v1/jobs": 200, "/v1/models": 200}
    assert models == []
    assert succeeded["state"] == "SUCCEEDED"
    assert succeeded["model_version"] == 1
    store.verify_version("square", 1)
