"""Helpers of the REST tests (import as ``rest.rest_helpers``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from support import free_port, trainer_ready, wait_for

from squarenet.store import METADATA_FILE, SAVED_MODEL_FILE, TFLITE_FILE, ModelStore

MakeApp = Callable[..., Flask]
TINY = {"n_samples": 200, "epochs": 5, "batch_size": 32}


def publish_fake_version(store: ModelStore, model_name: str = "square") -> int:
    """Publish a version with placeholder model files (listing needs files, not a model)."""
    staging = store.staging_dir(model_name, tag="test")
    (staging / SAVED_MODEL_FILE).write_bytes(b"saved model placeholder")
    (staging / TFLITE_FILE).write_bytes(b"tflite placeholder")
    published = store.publish_version(
        staging, {"domain": [-5.0, 5.0], "job_id": "test", "metrics": {"loss": 0.01}}, model_name
    )
    return published.version


def break_version(store: ModelStore, model_name: str, version: int) -> None:
    """Change a published file so it no longer matches metadata.json."""
    folder = store.version_dir(model_name, version)
    (folder / TFLITE_FILE).write_bytes(b"tampered")
    assert json.loads((folder / METADATA_FILE).read_text())["version"] == version


def parse_sse(text: str) -> list[dict[str, str]]:
    """Server-sent events as dicts of their fields (comments and retry-only blocks dropped)."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "event" in fields:
            events.append(fields)
    return events


@dataclass
class RunningTrainer:
    """A ``squarenet-trainer`` process started by a test."""

    process: subprocess.Popen[bytes]
    base_url: str
    store_root: Path
    log_path: Path

    def log(self) -> str:
        """What the service printed so far (for failure messages)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]


def trainer_command() -> list[str]:
    """The installed console script, or the module when it is not installed."""
    script = Path(sys.executable).with_name("squarenet-trainer")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "trainer_service.cli"]


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (leftover check)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running_trainer(
    store_root: Path,
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[RunningTrainer]:
    """Start the real trainer (gunicorn + job runner) on a free port; stop it afterwards."""
    port = port or free_port()
    command = [
        *trainer_command(),
        "--model-store",
        str(store_root),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        *args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    trainer = RunningTrainer(process, f"http://127.0.0.1:{port}", store_root, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"squarenet-trainer exited early:\n{trainer.log()}")
        return trainer_ready(trainer.base_url)

    try:
        wait_for(ready, 60, "squarenet-trainer to be ready")
        yield trainer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample, _, label_text = series.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if sample == name and found == wanted:
            return float(value)
    return 0.0


#: Answers schemathesis may take as "accepted" for schema-valid data: the cross-field rules
#: (422), the token (401), the queue bound (429) and jobs that ended meanwhile (404, 409).
SCHEMATHESIS_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "404", "409", "422", "429"]
"""


def run_schemathesis(
    base_url: str, workdir: Path, *options: str, timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    """The real schemathesis CLI against the served /openapi.json, every check, seeded.

    The event streams are left out (a live job's or sweep's stream lasts as long as it
    runs); ``options`` add the phases, example counts and headers of the caller's run.
    """
    config = workdir / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        *("--config-file", str(config), "run", f"{base_url}/openapi.json"),
        *("--checks", "all", "--seed", "1", "--request-timeout", "30"),
        *("--exclude-operation-id", "streamJobEvents"),
        *("--exclude-operation-id", "streamSweepEvents"),
        *("--generation-database", "none", "--no-color"),
        *options,
    ]
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
    )
