"""200 job submissions at once against the real trainer (threads over loopback).

The queue is bounded: at most ``--max-queued-jobs`` wait, every other submission gets 429
with ``Retry-After``, nothing gets a 5xx, reads keep being answered during the burst, and
the memory of the service's processes (gunicorn master, workers, job runner) stays bounded.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from rest.rest_helpers import TINY
from support import patient

from hostile.hostile_support import children, rss_bytes
from squarenet.stack import running_trainer

pytestmark = pytest.mark.slow

BURST = 200
MAX_QUEUED = 16  # the documented default, given explicitly
#: Growth allowed for the whole process tree over the burst (thread stacks, buffers).
RSS_SLACK_BYTES = 48 * 1024 * 1024


def service_rss(master: int) -> int:
    """RSS of the gunicorn master and its children: the workers and the job runner.

    Training processes are the runner's children and are left out: their size is the
    model's, not the API's, and only one at a time exists.
    """
    return rss_bytes(master) + sum(rss_bytes(child) for child in children(master))


def test_a_burst_of_submissions_is_bounded_and_reads_keep_working(tmp_path: Path) -> None:
    with running_trainer(
        tmp_path / "store",
        tmp_path / "trainer.log",
        "--max-queued-jobs",
        str(MAX_QUEUED),
        "--threads",
        "32",
    ) as trainer:
        base = trainer.base_url
        for _ in range(20):  # warm every worker up before measuring
            assert httpx.get(f"{base}/v1/jobs", timeout=10).status_code == 200
        before = service_rss(trainer.process.pid)
        assert len(children(trainer.process.pid)) >= 3  # two workers and the job runner

        start = threading.Barrier(BURST + 1)
        posts_done = threading.Event()
        reads: list[int] = []

        def submit(_: int) -> httpx.Response:
            start.wait(timeout=patient(60))
            return httpx.post(f"{base}/v1/jobs", json=TINY, timeout=60)

        def read_meanwhile() -> None:
            start.wait(timeout=patient(60))
            while not posts_done.is_set():
                for path in ("/healthz", "/v1/jobs?limit=5", "/v1/models"):
                    reads.append(httpx.get(base + path, timeout=30).status_code)

        reader = threading.Thread(target=read_meanwhile)
        reader.start()
        with ThreadPoolExecutor(max_workers=BURST) as pool:
            answers = list(pool.map(submit, range(BURST)))
            posts_done.set()
        reader.join(timeout=patient(60))

        statuses = Counter(answer.status_code for answer in answers)
        jobs = httpx.get(f"{base}/v1/jobs", timeout=10).json()["jobs"]
        after = service_rss(trainer.process.pid)
        log = trainer.log()

    assert set(statuses) <= {202, 429}, statuses
    assert statuses[429] > 0
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers["Retry-After"].isdigit()
            assert answer.json()["status"] == 429
    queued = [job for job in jobs if job["state"] == "QUEUED"]
    left_the_queue = len(jobs) - len(queued)
    assert len(jobs) == statuses[202]  # every 202 is a job, and nothing else made one
    assert len(queued) <= MAX_QUEUED
    assert MAX_QUEUED <= statuses[202] <= MAX_QUEUED + left_the_queue
    assert reads, "no read finished during the burst"
    assert set(reads) == {200}, Counter(reads)
    assert after - before < RSS_SLACK_BYTES, f"grew {(after - before) / 2**20:.1f} MiB"
    assert "Traceback" not in log
    print(
        f"burst of {BURST}: {dict(statuses)}; {len(reads)} reads answered meanwhile; "
        f"service RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )
