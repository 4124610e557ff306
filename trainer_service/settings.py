"""The trainer's configuration: one typed object read from ``SQUARENET_*`` variables.

Every ``squarenet-trainer`` flag has an environment variable of the same name
(``--max-concurrent-jobs`` is ``SQUARENET_MAX_CONCURRENT_JOBS``); a flag wins over the
variable. Bad values fail at start-up with a message naming the setting, not on the
first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from squarenet.tokens import clean_token

DEFAULT_PORT = 8080
MAX_BODY_BYTES = 64 * 1024
JOB_MOUNT_PATH = "/models"  # where a Kubernetes job's pod mounts the store claim


class Settings(BaseSettings):
    """What one trainer replica needs to know to serve the REST API and run jobs."""

    model_config = SettingsConfigDict(env_prefix="SQUARENET_", extra="ignore", frozen=True)

    model_store: Path = Field(description="Folder of the shared model store.")
    host: str = Field("0.0.0.0", min_length=1, description="Address gunicorn binds to.")  # noqa: S104 - a service listens on every interface
    port: int = Field(DEFAULT_PORT, ge=1, le=65_535, description="TCP port of the REST API.")
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    threads: int = Field(
        32, ge=2, le=256, description="Threads per worker: each open event stream holds one."
    )
    max_concurrent_jobs: int = Field(
        1, ge=1, le=64, description="Jobs training at once, each in its own process."
    )
    max_queued_jobs: int = Field(
        16, ge=1, le=10_000, description="Jobs waiting to run; beyond that POST /v1/jobs is 429."
    )
    keep_finished_jobs: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Finished jobs kept; older ones are forgotten when a job is submitted.",
    )
    api_token: SecretStr | None = Field(
        None, description="When set, every POST needs `Authorization: Bearer <token>`."
    )
    graceful_timeout: int = Field(
        10, ge=1, le=600, description="Seconds requests in flight get to finish on SIGTERM."
    )
    cancel_wait: float = Field(
        10.0,
        ge=0,
        le=120,
        description="Seconds a cancel waits for the runner to stop a RUNNING job (then 202).",
    )
    sse_keepalive: float = Field(
        15.0, gt=0, le=300, description="Seconds between keep-alive comments on event streams."
    )
    sse_poll_interval: float = Field(
        0.25, gt=0, le=10, description="Seconds between looks at a job's record while streaming."
    )
    max_event_streams: int | None = Field(
        None,
        ge=1,
        le=255,
        description="Event streams one worker holds at once (default: three quarters of "
        "--threads); past that a stream is answered 503 at once. Below --threads, so probes "
        "and API calls always find a free thread.",
    )
    max_train_seconds: int = Field(
        3600,
        ge=1,
        le=86_400,
        description="Cap on a job's max_train_seconds; a job asking more is refused (422).",
    )
    executor: Literal["local", "kubernetes"] = Field(
        "local", description="Where jobs run: child processes here, or Kubernetes Jobs."
    )
    namespace: str | None = Field(
        None,
        description="kubernetes: namespace of the Jobs (default: the pod's own, else 'default').",
    )
    job_image: str = Field(
        "squarenet-trainer:latest", min_length=1, description="kubernetes: the Jobs' image."
    )
    store_claim: str = Field(
        "squarenet-models",
        min_length=1,
        description="kubernetes: PersistentVolumeClaim of the store, mounted by every Job.",
    )
    kubeconfig: Path | None = Field(
        None, description="kubernetes: kubeconfig outside a cluster (default: KUBECONFIG)."
    )
    job_cpu: str = Field("1", min_length=1, description="kubernetes: a Job's CPU request.")
    job_cpu_limit: str = Field("2", min_length=1, description="kubernetes: a Job's CPU limit.")
    job_memory: str = Field(
        "1Gi", min_length=1, description="kubernetes: a Job's memory request and limit."
    )
    job_ttl_seconds: int = Field(
        3600, ge=0, description="kubernetes: finished Jobs are deleted after this long."
    )
    runner_pid: int | None = Field(
        None,
        ge=1,
        description="Set by squarenet-trainer: the job runner /readyz checks (None: not checked).",
    )
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024)

    @field_validator("max_event_streams")
    @classmethod
    def _streams_leave_threads_free(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A worker whose every thread holds a stream answers nothing else, probes included."""
        threads = info.data.get("threads")
        if value is not None and threads is not None and value >= threads:
            raise ValueError(
                f"must be below threads ({threads}): the threads left over answer probes "
                "and API calls"
            )
        return value

    @property
    def event_streams_per_worker(self) -> int:
        """How many event streams one worker holds at once."""
        return self.max_event_streams or max(1, self.threads * 3 // 4)

    @field_validator("model_store")
    @classmethod
    def _absolute_store(cls, value: Path) -> Path:
        """Workers and the job runner must agree on the folder whatever their cwd."""
        return value.expanduser().resolve()

    @field_validator("api_token")
    @classmethod
    def _clean_token(cls, value: SecretStr | None) -> SecretStr | None:
        """Stripped as the client strips it; empty means "no token", never "the empty token"."""
        token = clean_token(value.get_secret_value() if value is not None else None)
        return SecretStr(token) if token is not None else None


def prepare_store(settings: Settings) -> None:
    """Create the store folder if needed and prove it is writable, or raise ``OSError``."""
    root = settings.model_store
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".write-probe-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
