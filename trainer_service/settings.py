"""The trainer's configuration: one typed object read from ``SQUARENET_*`` variables.

Every ``squarenet-trainer`` flag has an environment variable of the same name
(``--max-concurrent-jobs`` is ``SQUARENET_MAX_CONCURRENT_JOBS``); a flag wins over the
variable. Bad values fail at start-up with a message naming the setting, not on the
first request.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from squarenet import __version__
from squarenet.cli.errors import CliError
from squarenet.cli.predictor_client import parse_target
from squarenet.tokens import clean_token
from trainer_service.params import field_error

MAX_BODY_BYTES = 64 * 1024
JOB_MOUNT_PATH = "/models"  # where a Kubernetes job's pod mounts the store claim
# Kubernetes' names and quantities, checked at start so a typo fails there, not at submit
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# each name setting: its pattern, and what the message that refuses a bad one calls it
OBJECT_NAMES = {
    "namespace": (DNS_LABEL, "namespace name (a DNS-1123 label)"),
    "store_claim": (DNS_SUBDOMAIN, "claim name (a DNS-1123 subdomain)"),
    "job_owner": (DNS_SUBDOMAIN, "Deployment name (a DNS-1123 subdomain)"),
    "queue_name": (DNS_SUBDOMAIN, "LocalQueue name (a DNS-1123 subdomain)"),
}
QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1), "m": Decimal("0.001"),
    **{suffix: Decimal(1000) ** power for power, suffix in enumerate("kMGTPE", start=1)},
    **{f"{suffix}i": Decimal(1024) ** power for power, suffix in enumerate("KMGTPE", start=1)},
}  # fmt: skip


def quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``1Gi``, ``2``) as a number; ValueError else."""
    match = QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")
    value = Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""]
    if value <= 0:
        raise ValueError(f"{text!r} must be above zero")
    return value


class Settings(BaseSettings):
    """What one trainer replica needs to know to serve the REST API and run jobs.

    Each field's docstring is its description, which ``squarenet-trainer --help`` shows.
    """

    model_config = SettingsConfigDict(
        env_prefix="SQUARENET_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    model_store: Path
    """Folder of the shared model store."""
    host: str = Field("127.0.0.1", min_length=1)
    """Address gunicorn binds to; unset: 0.0.0.0 when an API token is set, else loopback only"""
    port: int = Field(8080, ge=1, le=65_535)
    """TCP port of the REST API."""
    workers: int = Field(2, ge=1, le=64)
    """gunicorn worker processes."""
    threads: int = Field(32, ge=2, le=256)
    """Threads per worker: each open event stream holds one."""
    max_concurrent_jobs: int = Field(1, ge=1, le=64)
    """Jobs training at once, each in its own process."""
    max_queued_jobs: int = Field(16, ge=1, le=10_000)
    """Jobs waiting to run; beyond that POST /v1/jobs is 429."""
    keep_finished_jobs: int = Field(1000, ge=1, le=1_000_000)
    """Finished jobs kept; older ones are forgotten when a job is submitted."""
    api_token: SecretStr | None = None
    """When set, every POST needs `Authorization: Bearer <token>`."""
    graceful_timeout: int = Field(10, ge=1, le=600)
    """Seconds requests in flight get to finish on SIGTERM."""
    sse_keepalive: float = Field(15.0, gt=0, le=300)
    """Seconds between keep-alive comments on event streams."""
    sse_poll_interval: float = Field(0.25, gt=0, le=10)
    """Seconds between looks at a job's record while streaming."""
    max_event_streams: int | None = Field(None, ge=1, le=255)
    """Event streams one worker holds at once (default: three quarters of --threads); past
    that a stream is answered 503 at once. Below --threads, so probes and API calls always
    find a free thread."""
    max_train_seconds: int = Field(3600, ge=1, le=86_400)
    """Cap on a job's max_train_seconds; a job asking more is refused (422)."""
    executor: Literal["local", "kubernetes"] = "local"
    """Where jobs run: child processes here, or Kubernetes Jobs."""
    namespace: str | None = None
    """kubernetes: namespace of the Jobs (default: the pod's own, else 'default')."""
    job_image: str = Field(f"squarenet-trainer:{__version__}", min_length=1)
    """kubernetes: the Jobs' image, pulled if not present (never `:latest`)."""
    store_claim: str = Field("squarenet-models", min_length=1)
    """kubernetes: PersistentVolumeClaim of the store, mounted by every Job."""
    store_sub_path: str = ""
    """kubernetes: the store's folder inside --store-claim, mounted at /models in every Job
    (the volume's subPath; empty: the claim's root); mount the claim in the trainer the same
    way."""
    job_owner: str | None = None
    """kubernetes: the Deployment (the trainer's) that owns every Job: deleting it deletes its
    Jobs and their pods (none: Jobs outlive the trainer)."""
    kubeconfig: Path | None = None
    """kubernetes: kubeconfig outside a cluster (default: KUBECONFIG)."""
    job_cpu: str = Field("1", min_length=1)
    """kubernetes: a Job's CPU request."""
    job_cpu_limit: str = Field("2", min_length=1)
    """kubernetes: a Job's CPU limit."""
    job_memory: str = Field("1Gi", min_length=1)
    """kubernetes: a Job's memory request and limit."""
    job_ttl_seconds: int = Field(3600, ge=60)
    """kubernetes: finished Jobs are deleted after this long (at least 60 s, so the finalizer
    reads how a Job ended before it is gone)."""
    max_pending_seconds: int = Field(300, ge=1, le=86_400)
    """kubernetes: a job whose pod is unschedulable or cannot pull its image this long is
    FAILED with the pod's reason."""
    queue_name: str | None = None
    """kubernetes: a Kueue LocalQueue; Jobs are created suspended with its label so Kueue
    admits them (and they wait admitted, not pending)."""
    runner_pid: int | None = Field(None, ge=1)
    """Set by squarenet-trainer: the job runner /readyz checks (None: not checked)."""
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024)
    gate_max_floor_ratio: float = Field(50.0, gt=0, le=1e12)
    """A label moves only to a version whose in-domain MSE is at most this many times the
    floor of its width and domain (else 409 unless forced)."""
    gate_agreement_tolerance: float = Field(1e-4, gt=0, le=1.0)
    """Largest |model.tflite - SavedModel| on the gate's grid, as a fraction of the largest
    |y| there (at least 1)."""
    gate_max_regression: float = Field(2.0, ge=1.0, le=1e6)
    """A label moves only to a version whose MSE on the shared domain is at most this many
    times the MSE of the version holding the label now."""
    predictor: str | None = None
    """HOST:PORT of the predictors (their Service on a cluster): GET /v1/models/{model}/live
    and the dashboard ask it for the live exact error."""

    @field_validator("predictor")
    @classmethod
    def _predictor_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_target(value)
        except CliError as exc:
            raise ValueError(str(exc)) from exc

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

    @field_validator("job_cpu", "job_cpu_limit", "job_memory")
    @classmethod
    def _quantity(cls, value: str, info: ValidationInfo) -> str:
        """The API server refuses a Job whose limit is below its request: said at start."""
        size = quantity(value)
        request = info.data.get("job_cpu") if info.field_name == "job_cpu_limit" else None
        if request is not None and size < quantity(request):
            raise ValueError(f"must be at least job_cpu ({request})")
        return value

    @field_validator(*OBJECT_NAMES)
    @classmethod
    def _object_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern, what = OBJECT_NAMES[str(info.field_name)]
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a {what}")
        return value

    @field_validator("store_sub_path")
    @classmethod
    def _sub_path(cls, value: str) -> str:
        """A subPath the kubelet accepts: relative, inside the claim, no ``..``."""
        parts = [part for part in value.split("/") if part not in ("", ".")]
        if value.startswith("/") or ".." in parts:
            raise ValueError(f"{value!r} must be a relative folder inside the claim, without ..")
        return "/".join(parts)

    @field_validator("job_image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        """An untagged or ``:latest`` image may differ from pod to pod of one installation."""
        name = value.rsplit("/", 1)[-1]
        if "@" not in name and (":" not in name or name.endswith(":latest")):
            raise ValueError(f"{value!r} must name a tag other than latest, or a digest")
        return value

    @model_validator(mode="before")
    @classmethod
    def _every_interface_only_with_a_token(cls, data: Any) -> Any:
        """Without a token, anyone who reaches the port can submit and cancel jobs, so a
        trainer not told where to listen listens on loopback only; with a token, on every
        interface. The images set ``SQUARENET_HOST=0.0.0.0`` and the manifests a token."""
        if not isinstance(data, dict) or data.get("host") is not None:
            return data
        token = data.get("api_token")
        if isinstance(token, SecretStr):
            token = token.get_secret_value()
        try:
            has_token = isinstance(token, str) and clean_token(token) is not None
        except ValueError:
            return data  # the token's own validator names what is wrong with it
        return {**data, "host": "0.0.0.0" if has_token else "127.0.0.1"}  # noqa: S104

    @model_validator(mode="after")
    def _queue_bound_holds_through_the_slots(self) -> Self:
        """Under ``kubernetes``, API workers and replicas share no lock: the queue bound holds
        only through the Job slots, each QUEUED job holding one (QUEUED <= max_concurrent_jobs
        <= max_queued_jobs). With more slots than queue places racing submits could queue more
        than ``max_queued_jobs``: refused at start, naming both."""
        if self.executor == "kubernetes" and self.max_concurrent_jobs > self.max_queued_jobs:
            raise field_error(
                self,
                "max_concurrent_jobs",
                f"must be at most max_queued_jobs ({self.max_queued_jobs}) under --executor "
                f"kubernetes, got {self.max_concurrent_jobs}: the queue bound holds across "
                "workers and replicas only through the job slots; raise --max-queued-jobs "
                "or lower --max-concurrent-jobs",
            )
        return self

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
    check_writable(settings.model_store)


def store_problem(settings: Settings) -> str | None:
    """Why the store cannot be written (one line naming it and its owner), or None."""
    try:
        prepare_store(settings)
    except OSError as exc:
        return f"model store {settings.model_store} is not writable: {exc}"
    return None


def check_writable(root: Path) -> None:
    """Create ``root`` if needed and write a probe in it; ``OSError`` naming the owner else.

    A new NFS share (Filestore) is ``root:root 0755``, and not every CSI driver applies the
    pod's ``fsGroup``: the message says who owns the folder (or its nearest existing parent)
    and who we are, in one line.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except PermissionError as exc:
        place = root
        while not place.exists() and place != place.parent:
            place = place.parent
        try:
            stat = place.stat()
            owner = f"owned by uid {stat.st_uid} gid {stat.st_gid} mode {stat.st_mode & 0o7777:04o}"
        except OSError as error:
            owner = f"unreadable ({error.strerror})"
        problem = (
            f"{place} is not writable by uid {os.getuid()} gid {os.getgid()}: it is {owner}; "
            'make it writable by that uid (docs/deploying.md: "A store the pods can write")'
        )
        raise PermissionError(exc.errno, problem) from None
