"""The ``kubernetes`` executor: each training job is one ``batch/v1`` Job on the cluster.

The API side (``KubernetesExecutor``, any worker of any replica) creates the Job, then
writes the job's record, so a record never exists without its Job; cancel records the
request and deletes the Job (foreground propagation). The API server is the single point of
truth for what runs: the Job controller claims, schedules, retries nothing
(``backoffLimit: 0``), enforces the time limit (``activeDeadlineSeconds``) and cleans up
(``ttlSecondsAfterFinished``).

The runner side (``Finalizer``) runs in every replica's runner process, but only the replica
elected with a ``coordination.k8s.io/v1`` Lease (the client's leader election) acts: it
reads the unfinished records, lists the Jobs by their ``squarenet.io/job-id`` label, and
settles each job from its Job's status and the result its pod wrote on the store. It keeps
no state of its own, so a restarted or newly elected finalizer picks up where the last
one stopped. Nothing here takes a lock on the shared volume or compares two hosts' clocks.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from trainer_service.errors import ExecutorUnavailable, JobAlreadyFinished
from trainer_service.params import TrainingParams
from trainer_service.runner.book import CANCELLED, TIME_LIMIT, Ending, Job, JobBook, JobState
from trainer_service.settings import JOB_MOUNT_PATH, Settings

_log = logging.getLogger("trainer_service.runner")
JOB_ID_LABEL = "squarenet.io/job-id"
LEASE_NAME = "squarenet-trainer-finalizer"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
RECONCILE_SECONDS = 0.5
ORPHAN_GRACE_SECONDS = 60.0  # a Job without a record: its API call may still be writing it
LEASE_SECONDS, RENEW_SECONDS, RETRY_SECONDS = 15, 10, 2
# what the executor needs, as the Role in k8s/base grants it: (group, resource, verb)
PERMISSIONS = (
    *(("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")),
    *(("", "pods", verb) for verb in ("get", "list", "watch")),
    ("", "pods/log", "get"),
    *(("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")),
)


def connect(settings: Settings) -> tuple[client.ApiClient, str]:
    """An API client and the namespace of the Jobs: in-cluster, or from a kubeconfig."""
    kubeconfig = settings.kubeconfig or os.environ.get("KUBECONFIG")
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        namespace = IN_CLUSTER_NAMESPACE.read_text(encoding="utf-8").strip()
    else:
        path = str(kubeconfig) if kubeconfig else None
        config.load_kube_config(config_file=path)  # type: ignore[no-untyped-call]
        _, context = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
        namespace = context.get("context", {}).get("namespace") or "default"
    return client.ApiClient(), settings.namespace or namespace


def configuration_problem(settings: Settings) -> str | None:
    """Why no cluster can be reached from here, or None; the trainer checks it at start, so a
    trainer outside a cluster without a kubeconfig exits with a message, not a traceback in
    every worker."""
    try:
        connect(settings)
    except (config.ConfigException, OSError) as exc:
        return (
            f"no cluster configuration found ({exc}); inside a pod it is found by itself, "
            "outside one give --kubeconfig or KUBECONFIG"
        )
    return None


def job_name(job_id: str) -> str:
    """The Job's name: the job id in DNS-1123 form."""
    return f"squarenet-{job_id.lower()}"


def job_manifest(job: Job, settings: Settings) -> dict[str, Any]:
    """The ``batch/v1`` Job that trains ``job`` (Pod Security "restricted", no API token)."""
    labels = {
        JOB_ID_LABEL: job.id,
        "app.kubernetes.io/name": "squarenet",
        "app.kubernetes.io/component": "training-job",
        "app.kubernetes.io/part-of": "squarenet",
    }
    command = [
        "python",
        *("-m", "trainer_service.runner.job_process", "--model-store", JOB_MOUNT_PATH),
        *("--job-id", job.id, "--params", job.params.model_dump_json()),
    ]
    container = {
        "name": "train",
        "image": settings.job_image,
        "command": command,
        "env": [
            {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},  # noqa: S108 - its own emptyDir
        ],
        "resources": {
            "requests": {"cpu": settings.job_cpu, "memory": settings.job_memory},
            "limits": {"cpu": settings.job_cpu_limit, "memory": settings.job_memory},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "models", "mountPath": JOB_MOUNT_PATH},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir of its own
        ],
    }
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": settings.store_claim}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job.id), "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": job.params.max_train_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def refusal(exc: ApiException, what: str, namespace: str) -> ExecutorUnavailable:
    """The clear error for an API call the cluster refused (most often: RBAC)."""
    if exc.status in (401, 403):
        return ExecutorUnavailable(
            f"the cluster refused to {what} in namespace {namespace} ({exc.status} "
            f"{exc.reason}): the trainer's ServiceAccount needs the squarenet-trainer Role "
            "(k8s/base/rbac.yaml)"
        )
    return ExecutorUnavailable(f"the cluster could not {what} ({exc.status} {exc.reason})")


class KubernetesExecutor:
    """The API's side of the ``kubernetes`` executor."""

    def __init__(self, book: JobBook, settings: Settings) -> None:
        self.book = book
        self.settings = settings
        api_client, self.namespace = connect(settings)
        self.batch = client.BatchV1Api(api_client)

    def submit(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        """Create the job's Job (again is harmless), then record the job QUEUED."""
        if job_id is not None and (existing := self.book.files.read(job_id)) is not None:
            return existing  # a named job submitted again: the one we have
        job = self.book.new_job(params, job_id=job_id, sweep_id=sweep_id)
        try:
            manifest: Any = job_manifest(job, self.settings)  # the client takes plain dicts too
            self.batch.create_namespaced_job(self.namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:  # AlreadyExists: made by an earlier try of this call
                raise refusal(exc, "create Jobs", self.namespace) from exc
        self.book.record(job)
        return job

    def cancel(self, job_id: str, *, wait: float | None = None) -> Job:
        """Record the request and delete the Job; the finalizer records CANCELLED."""
        self.book.request_cancel(job_id)
        delete_job(self.batch, self.namespace, job_id)
        job = self.book.wait_until_finished(
            job_id, self.settings.cancel_wait if wait is None else wait
        )
        if job.state.finished and job.state is not JobState.CANCELLED:
            raise JobAlreadyFinished(job)
        return job


def delete_job(batch: client.BatchV1Api, namespace: str, job_id: str) -> None:
    """Delete a job's Job and, first, its pod (foreground); a Job already gone is fine."""
    try:
        batch.delete_namespaced_job(job_name(job_id), namespace, propagation_policy="Foreground")
    except ApiException as exc:
        if exc.status != 404:
            raise refusal(exc, "delete Jobs", namespace) from exc


class Finalizer:
    """Settles jobs from their Jobs' status, on the one replica that holds the Lease."""

    def __init__(
        self, book: JobBook, settings: Settings, sweeps: Callable[[], None] | None = None
    ) -> None:
        self.book = book
        self.sweeps = sweeps  # the sweep controller's periodic pass, run while leading
        api_client, self.namespace = connect(settings)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.authz = client.AuthorizationV1Api(api_client)
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stopping = threading.Event()
        self.leading = threading.Event()
        self.orphans: dict[str, float] = {}

    def run(self) -> int:
        """Take part in the election until SIGTERM; lead (finalize) while elected."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.report_missing_permissions()
        threading.Thread(target=self._elect, name="leader-election", daemon=True).start()
        while not self.stopping.wait(1.0):
            pass
        _log.info("finalizer %s stopped", self.identity)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def report_missing_permissions(self) -> list[str]:
        """Log, as one clear error, what the ServiceAccount may not do; return it."""
        missing = []
        for group, resource, verb in PERMISSIONS:
            name, _, subresource = resource.partition("/")
            attributes = client.V1ResourceAttributes(
                namespace=self.namespace,
                group=group,
                resource=name,
                subresource=subresource or None,
                verb=verb,
            )
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
            )
            try:
                answer: Any = self.authz.create_self_subject_access_review(review)
            except ApiException as exc:
                _log.error("finalizer: cannot check permissions: %s %s", exc.status, exc.reason)
                return []
            if not answer.status.allowed:
                missing.append(f"{verb} {resource}")
        if missing:
            _log.error(
                "finalizer: the ServiceAccount may not %s in namespace %s: bind the "
                "squarenet-trainer Role (k8s/base/rbac.yaml); jobs cannot run until then",
                ", ".join(missing),
                self.namespace,
            )
        return missing

    def _elect(self) -> None:
        lock = LeaseLock(LEASE_NAME, self.namespace, self.identity)  # type: ignore[no-untyped-call]
        election = electionconfig.Config(  # type: ignore[no-untyped-call]
            lock, LEASE_SECONDS, RENEW_SECONDS, RETRY_SECONDS, self._lead, self._stop_leading
        )
        while not self.stopping.is_set():
            try:
                leaderelection.LeaderElection(election).run()  # type: ignore[no-untyped-call]
            except Exception:  # the API server away, or a bug: never leave the election
                _log.exception("finalizer: leader election failed; retrying")
            self.stopping.wait(RETRY_SECONDS)

    def _lead(self) -> None:
        self.leading.set()
        _log.info("finalizer %s: leading (Lease %s/%s)", self.identity, self.namespace, LEASE_NAME)
        while self.leading.is_set() and not self.stopping.is_set():
            try:
                self.reconcile()
                if self.sweeps is not None:
                    self.sweeps()
            except ApiException as exc:
                _log.error("finalizer: %s", refusal(exc, "list Jobs", self.namespace))
            except OSError as exc:
                _log.error("finalizer: store error, retrying: %s", exc)
            self.stopping.wait(RECONCILE_SECONDS)

    def _stop_leading(self) -> None:
        if self.leading.is_set():
            _log.warning("finalizer %s: lost the Lease, no longer leading", self.identity)
        self.leading.clear()

    def reconcile(self) -> None:
        """Settle every unfinished job from its Job; delete Jobs whose record never came."""
        unfinished = self.book.unfinished()  # before listing: each record's Job exists by then
        listed: Any = self.batch.list_namespaced_job(self.namespace, label_selector=JOB_ID_LABEL)
        jobs: dict[str, Any] = {item.metadata.labels[JOB_ID_LABEL]: item for item in listed.items}
        for job in unfinished:
            self.settle(job, jobs.pop(job.id, None))
        now = time.monotonic()
        for job_id, item in jobs.items():
            if self.book.files.read(job_id) is not None or item.metadata.deletion_timestamp:
                self.orphans.pop(job_id, None)
            elif now - self.orphans.setdefault(job_id, now) > ORPHAN_GRACE_SECONDS:
                _log.warning("Job %s has no job record: deleting it", item.metadata.name)
                delete_job(self.batch, self.namespace, job_id)
                self.orphans.pop(job_id, None)

    def settle(self, job: Job, item: Any | None) -> None:
        """One job: started, or ended, as its Job (or its absence) says."""
        if self.book.cancel_requested(job.id):  # the one place the cancel path reads
            if item is not None and item.metadata.deletion_timestamp is None:
                delete_job(self.batch, self.namespace, job.id)
            self.book.finish(job.id, CANCELLED)  # the fence makes this safe at once
            return
        if item is None:
            self.book.finish(job.id, Ending("exited", "lost: its Kubernetes Job is gone"))
            return
        status = item.status
        ended = next(
            (c for c in status.conditions or () if c.type in ("Complete", "Failed") and c.status == "True"),
            None,
        )  # fmt: skip
        if ended is None:
            if job.state is JobState.QUEUED and (status.ready or status.succeeded or status.failed):
                self.book.start(job.id)
            return
        if ended.type == "Complete":
            self.book.finish(job.id, Ending("exited", "its pod ended without a result"))
        elif ended.reason == "DeadlineExceeded":
            self.book.finish(job.id, TIME_LIMIT)
        else:
            why = self.pod_failure(job.id) or f"{ended.reason}: {ended.message}"
            self.book.finish(job.id, Ending("exited", f"the job's pod failed: {why}"))

    def pod_failure(self, job_id: str) -> str | None:
        """How the job's pod ended (its container's termination), if the pod is still there."""
        listed: Any = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{JOB_ID_LABEL}={job_id}"
        )
        pods: list[Any] = listed.items
        for pod in pods:
            for container in pod.status.container_statuses or ():
                ended = container.state.terminated if container.state else None
                if ended is not None:
                    message = f": {ended.message.strip()}" if ended.message else ""
                    return f"{ended.reason or 'terminated'}, exit code {ended.exit_code}{message}"
            if pod.status.reason or pod.status.message:
                return f"{pod.status.reason or 'failed'}: {pod.status.message or ''}".strip(": ")
        return None
