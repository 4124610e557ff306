"""Helpers of the REST tests (import as ``rest.rest_helpers``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from flask import Flask

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
