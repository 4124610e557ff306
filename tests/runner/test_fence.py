"""The publish fence, the job process's error text and exit descriptions, on a real store."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from support import patient

from squarenet.store import ModelStore
from trainer_service.runner import fence
from trainer_service.runner.job_process import ProgressFile, public_error
from trainer_service.runner.job_process import main as job_main
from trainer_service.runner.local import describe_exit

JOB = "20261129T051500Z-3f9a1c2b"


def write_model(staging: Path) -> None:
    """The two files every version must list (placeholders: the fence never reads them)."""
    (staging / "model.tflite").write_bytes(b"weights")
    (staging / "saved_model.pb").write_bytes(b"graph")


def publish(store: ModelStore, staging: Path) -> int:
    write_model(staging)
    return store.publish_version(
        staging, {"domain": [-5.0, 5.0], "job_id": JOB, "metrics": {"loss": 0.5}}
    ).version


def test_a_claimed_staging_folder_publishes_and_is_found_as_the_jobs_version(
    store: ModelStore,
) -> None:
    claim = fence.claim(store, "square", JOB)
    claim.check()
    assert publish(store, claim.path) == 1
    assert fence.published_version(store, "square", JOB) == (1, {"loss": 0.5})
    fence.revoke(store, "square", JOB)  # too late to matter: the version stays
    assert store.list_versions() == [1]


def test_after_a_revocation_a_job_cannot_even_start_writing(store: ModelStore) -> None:
    fence.revoke(store, "square", JOB)
    with pytest.raises(fence.Revoked):
        fence.claim(store, "square", JOB)
    assert fence.published_version(store, "square", JOB) is None


def test_a_revocation_mid_write_makes_the_publish_fail_and_leaves_nothing(
    store: ModelStore,
) -> None:
    claim = fence.claim(store, "square", JOB)
    (claim.path / "saved_model.pb").write_bytes(b"half")
    fence.revoke(store, "square", JOB)
    with pytest.raises(OSError):
        publish(store, claim.path)
    assert store.list_versions() == []
    assert [entry.name for entry in store.model_dir().iterdir()] == [claim.mark.name]


def test_a_staging_folder_made_again_after_a_revocation_is_refused(store: ModelStore) -> None:
    claim = fence.claim(store, "square", JOB)
    fence.revoke(store, "square", JOB)
    claim.path.mkdir()  # as a writer that creates missing folders would
    with pytest.raises(fence.Revoked):
        claim.check()


def test_racing_publishers_and_revokers_never_both_win(store: ModelStore) -> None:
    """Many rounds of claim-publish against revoke at once: published xor fenced, each time."""
    for round_number in range(40):
        job_id = f"20261129T051500Z-{round_number:08x}"
        outcome: dict[str, object] = {}

        def job_side(job_id: str = job_id, outcome: dict[str, object] = outcome) -> None:
            try:
                claim = fence.claim(store, "square", job_id)
                write_model(claim.path)
                claim.check()
                staging = claim.path
                outcome["version"] = store.publish_version(
                    staging, {"domain": [-5.0, 5.0], "job_id": job_id}
                ).version
            except (fence.Revoked, OSError) as exc:
                outcome["refused"] = exc

        thread = threading.Thread(target=job_side)
        thread.start()
        fence.revoke(store, "square", job_id)
        published_at_revocation = fence.published_version(store, "square", job_id)
        thread.join(timeout=patient(30))
        assert ("version" in outcome) != ("refused" in outcome)
        if "version" in outcome:
            assert published_at_revocation is not None
        assert fence.published_version(store, "square", job_id) == published_at_revocation


def test_a_staging_folder_an_earlier_process_of_the_job_left_is_claimed_again(
    store: ModelStore,
) -> None:
    """A replaced pod's process stopped before it could clean up: the next one claims anew."""
    first = fence.claim(store, "square", JOB)
    (first.path / "saved_model.pb").write_bytes(b"half")
    again = fence.claim(store, "square", JOB)
    again.check()
    assert list(again.path.iterdir()) == []  # the half-written files went with the old one
    assert publish(store, again.path) == 1


def test_a_left_staging_folder_of_a_revoked_job_is_not_claimed_again(store: ModelStore) -> None:
    claim = fence.claim(store, "square", JOB)
    fence.revoke(store, "square", JOB)
    claim.path.mkdir()  # left by a writer that creates missing folders
    with pytest.raises(fence.Revoked):
        fence.claim(store, "square", JOB)


def test_forget_removes_the_tombstone(store: ModelStore) -> None:
    fence.claim(store, "square", JOB)
    fence.revoke(store, "square", JOB)
    fence.forget(store, "square", JOB)
    assert list(store.model_dir().iterdir()) == []


@pytest.mark.parametrize(
    ("returncode", "reason"),
    [
        (-signal.SIGKILL, "training process killed by SIGKILL (out of memory?)"),
        (-signal.SIGSEGV, "training process killed by SIGSEGV"),
        (-200, "training process killed by signal 200"),
        (1, "training process exited with status 1 without a result"),
    ],
)
def test_describe_exit_names_the_cause(returncode: int, reason: str) -> None:
    assert describe_exit(returncode) == reason


def test_a_failed_jobs_error_tells_the_cause_without_server_paths(tmp_path: Path) -> None:
    store = tmp_path / "models"
    full = OSError(errno.ENOSPC, "No space left on device", str(store / ".tmp-7/model.tflite"))
    assert public_error(full, store) == (
        "No space left on device (ENOSPC) while training or publishing the model"
    )
    other = ValueError(f"cannot read {store}/jobs/x/params.json; store {store} is odd")
    assert (
        public_error(other, store) == "cannot read jobs/x/params.json; store <model store> is odd"
    )
    assert public_error(RuntimeError(), store) == "RuntimeError"


def test_a_reported_version_is_found_however_many_versions_landed_after_it(
    store: ModelStore,
) -> None:
    claim = fence.claim(store, "square", JOB)
    assert publish(store, claim.path) == 1
    for number in range(25):  # a sweep's parallel trials publishing before the job settles
        other = store.model_dir("square") / f".tmp-other-{number}"
        other.mkdir()
        write_model(other)
        store.publish_version(other, {"domain": [-5.0, 5.0], "job_id": f"other-{number}"})
    assert fence.published_version(store, "square", JOB) is None  # beyond the lookback
    assert fence.published_version(store, "square", JOB, 1) == (1, {"loss": 0.5})
    assert fence.published_version(store, "square", JOB, 2) is None  # not this job's version
    assert fence.published_version(store, "square", JOB, 999) is None


def test_every_batch_of_progress_lines_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS's client-side caching (another node seeing epochs late) cannot be shown on one
    machine: the test counts the fsyncs that push each batch to the server instead."""
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    progress = ProgressFile(tmp_path / "progress.jsonl", resumed=[])
    progress.result("succeeded", version=1)
    assert len(synced) == 1
    progress.pending.append('{"epoch": 2}\n')
    progress.flush()
    assert len(synced) == 2
    assert (tmp_path / "progress.jsonl").read_text().count("\n") == 2


def test_a_store_the_job_cannot_write_is_one_line_naming_its_owner(tmp_path: Path) -> None:
    """A new Filestore share is root:root 0755 and the job's pod runs as uid 10001: a forked
    child drops to that uid (the venv's interpreter is not reachable by it, so no exec)."""
    shared = Path(tempfile.mkdtemp(prefix="squarenet-share-"))
    try:
        shared.chmod(0o755)
        store = shared / "store"
        store.mkdir(mode=0o755)  # owned by root, like a new share
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                os.dup2(write_end, 2)
                sys.stderr = os.fdopen(2, "w")
                os.setgid(10001)
                os.setuid(10001)
                argv = ["--model-store", str(store), "--job-id", JOB, "--params", "{}"]
                code = job_main(argv)
                sys.stderr.flush()
                os._exit(code)
            finally:
                os._exit(99)
        os.close(write_end)
        with os.fdopen(read_end) as stream:
            said = stream.read()
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 2, said
        assert said.count("\n") == 1, said  # one line, no traceback
        assert f"{store} is not writable by uid 10001 gid 10001" in said
        assert "owned by uid 0 gid 0 mode 0755" in said
    finally:
        shutil.rmtree(shared)
