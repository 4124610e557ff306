"""A trainer whose store it cannot write stops at start with one line naming who owns it.

A new Filestore share is root:root 0755 while the trainer runs as uid 10001: the line is what
`kubectl logs` and the pod's termination message (FallbackToLogsOnError) show an admin.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from support import free_port

from trainer_service.cli import EXIT_BAD_CONFIG, main

UID = 10001  # the images' user (Dockerfile.trainer) and the manifests' runAsUser


def test_the_trainer_names_the_folder_its_owner_and_its_own_uid_and_exits_2() -> None:
    """A forked child drops to uid 10001 and runs the trainer's entry point (an exec of the
    venv's interpreter may not be reachable by that uid); the parent reads its stderr."""
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
                signal.alarm(120)  # were it to start serving instead, it must not hang the test
                code = main(["--model-store", str(store), "--port", str(free_port())])
            except SystemExit as stopped:
                code = stopped.code if isinstance(stopped.code, int) else 98
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as stream:
            said = stream.read()
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == EXIT_BAD_CONFIG, said
        assert said.count("\n") == 1, said  # one line, no traceback
        assert said.startswith(f"squarenet-trainer: model store {store} is not writable")
        assert f"is not writable by uid {UID} gid {UID}" in said
        assert "owned by uid 0 gid 0 mode 0755" in said
        assert not any(store.iterdir())  # nothing written, nothing started
    finally:
        shutil.rmtree(shared, ignore_errors=True)
