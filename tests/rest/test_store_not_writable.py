"""A trainer whose store it cannot write says so in one line and waits for it: no crash loop.

A new Filestore share is root:root 0755 while the trainer runs as uid 10001. The trainer
names the folder, its owner and its own uid once (what `kubectl logs` shows an admin), answers
``/healthz`` (liveness must not restart it) and 503 ``store-not-writable`` everywhere else
(readiness keeps traffic away), and starts for real as soon as the store is fixed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from support import patient, wait_for

from rest.rest_helpers import TINY
from squarenet.stack import command_of, start_trainer
from trainer_service.cli import load_settings

UID = 10001  # the images' user (Dockerfile.trainer) and the manifests' runAsUser


def test_the_one_line_names_the_folder_its_owner_and_the_trainers_uid() -> None:
    """A forked child drops to uid 10001 and loads the settings as the trainer does at start
    (an exec of the venv's interpreter may not be reachable by that uid); the parent reads
    what it printed."""
    shared = Path(tempfile.mkdtemp(prefix="squarenet-share-"))
    try:
        shared.chmod(0o755)
        store = shared / "models"
        store.mkdir(mode=0o755)  # owned by root, as a new share is
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            code = 99
            try:
                os.dup2(write_end, 1)
                os.dup2(write_end, 2)
                sys.stdout = os.fdopen(1, "w")
                sys.stderr = os.fdopen(2, "w")
                os.setgid(UID)
                os.setuid(UID)
                load_settings({"model_store": store})
                code = 0
            except SystemExit as stopped:
                code = stopped.code if isinstance(stopped.code, int) else 98
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as stream:
            said = stream.read()
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, said  # not a bad setting: no exit 2
        assert said.count("\n") == 1, said  # one line, no traceback
        assert said.startswith(f"squarenet-trainer: model store {store} is not writable")
        assert f"is not writable by uid {UID} gid {UID}" in said
        assert "owned by uid 0 gid 0 mode 0755" in said
        assert said.rstrip().endswith("; waiting for it")
        assert not any(store.iterdir())  # nothing written
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def answer(
    method: str, url: str, body: Mapping[str, object] | None = None
) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of one request (problem documents included)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=patient(10)) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())
    except OSError:
        return 0, {}  # not listening yet


def test_the_trainer_waits_for_a_read_only_store_and_starts_once_it_is_writable(
    tmp_path: Path,
) -> None:
    """The store is a read-only tmpfs mounted in a mount namespace of the trainer's own (made
    here: root can write any folder, so a read-only mount is how root meets an unwritable
    store); remounting it read-write from outside (nsenter) is the admin's fix."""
    store = tmp_path / "store"
    store.mkdir()
    in_namespace = [
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
        'mount -t tmpfs -o ro,size=64m squarenet-store "$0" && exec "$@"', str(store),
        *command_of("squarenet-trainer"),
    ]  # fmt: skip
    trainer = start_trainer(store, tmp_path / "trainer.log", command=in_namespace)
    try:
        base = trainer.base_url
        wait_for(lambda: answer("GET", f"{base}/healthz")[0] == 200, 60, "/healthz")
        for method, path, body in (
            ("GET", "/readyz", None),
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/jobs", TINY),
        ):
            status, problem = answer(method, base + path, body)
            assert status == 503, (method, path, problem)
            assert problem["type"] == "urn:squarenet:problem:store-not-writable"
            assert f"model store {store} is not writable" in problem["detail"]
            assert "Read-only file system" in problem["detail"]
        trainer.check_alive()  # still running: not exited, not restarted
        assert trainer.log().count("is not writable") == 1, trainer.log()
        assert "Traceback" not in trainer.log()

        # the admin's fix, in the trainer's mount namespace
        remount = ["nsenter", "-t", str(trainer.process.pid), "-m", "mount", "-o", "remount,rw"]
        subprocess.run([*remount, str(store)], check=True)
        wait_for(lambda: answer("GET", f"{base}/readyz")[0] == 200, 120, "/readyz 200")
        status, job = answer("POST", f"{base}/v1/jobs", TINY)
        assert status == 202, job
        wait_for(
            lambda: answer("GET", f"{base}/v1/jobs/{job['id']}")[1].get("state") == "SUCCEEDED",
            240,
            "the job to succeed",
        )
        assert "is writable: starting the job runner" in trainer.log()
        assert "Traceback" not in trainer.log()
    finally:
        code = trainer.stop()
    assert code == 0, trainer.log()
