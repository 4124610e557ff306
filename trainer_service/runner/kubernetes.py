"""The ``kubernetes`` executor: each training job is one ``batch/v1`` Job on the cluster.

The API side (``KubernetesExecutor``, any worker of any replica) creates the Job, then writes
the job's record, so a record never exists without its Job; cancel records the request and
deletes the Job. The Job controller schedules, retries no failure (``backoffLimit: 0``),
enforces the time limit (``activeDeadlineSeconds``) and cleans up.

The runner side (``Finalizer``) acts only on the replica elected with a Lease: it settles
each unfinished job from its Job's status and the result its pod wrote on the store, keeping
no state of its own, taking no lock on the shared volume and comparing no clocks. What
clusters do to jobs:

- an API call unanswered within ``API_TIMEOUT`` is ``ExecutorUnavailable`` (503) for submit
  and cancel, a logged line for the finalizer, which settles each job on its own;
- a pod evicted, drained, pre-empted or otherwise stopped by SIGTERM is replaced
  (``podFailurePolicy`` ignores it) and resumes from its checkpoint: the job stays RUNNING,
  never CANCELLED; a Job that failed on a disruption anyway ends FAILED ``interrupted: ...``;
- a job whose pod has not started within ``max_pending_seconds`` is FAILED naming the pod's
  reason, and its Job deleted;
- a replica acts only while its last Lease renewal is recent (``holds_lease``), checked right
  before each state change, Job deletion and (``JobBook.still_leading``) sweep write; a
  trial's job id comes from ``<sweep>-<trial>-<attempt>``, so the next leader's release of
  the same trial is a no-op, not a twin job.
"""

from __future__ import annotations

import contextlib
import hashlib
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

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from trainer_service.errors import ExecutorUnavailable, TooManyJobs
from trainer_service.lifecycle import EndReason, RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.book import CANCELLED, TIME_LIMIT, Ending, Job, JobBook
from trainer_service.runner.job_process import EXIT_STOPPED
from trainer_service.settings import JOB_MOUNT_PATH, Settings

_log = logging.getLogger("trainer_service.runner")
JOB_ID_LABEL = "squarenet.io/job-id"
# the installation a Job belongs to: its store claim, so two installations in one namespace
# each settle (and clean up) their own Jobs and elect their own finalizer
INSTALLATION_LABEL = "squarenet.io/installation"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
LEASE_PREFIX = "squarenet-trainer-finalizer-"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
RECONCILE_SECONDS = 0.5
ORPHAN_GRACE_SECONDS = 60.0  # a Job without a record: its API call may still be writing it
LEASE_SECONDS, RENEW_SECONDS, RETRY_SECONDS = 15, 10, 2
# (connect, read) seconds of every API call: one call, its single connect retry included,
# ends within 9 s, below the Lease's renew deadline
API_TIMEOUT = (2.0, 5.0)
UNREACHABLE = (urllib3.exceptions.HTTPError,)  # MaxRetryError, timeouts, dropped connections
DISRUPTION = "DisruptionTarget"
JOB_CONTAINER = "train"
# a pod waiting for one of these never starts by itself: the job fails at its pending bound
STUCK_WAITING = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})  # fmt: skip
# every call the executor makes, as the Role in k8s/base grants it: (group, resource, verb)
PERMISSIONS = (
    *(("batch", "jobs", verb) for verb in ("create", "list", "delete")),
    ("", "pods", "list"),
    *(("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")),
    ("apps", "deployments", "get"),  # the Jobs' owner (--job-owner), read once for its uid
)


class TimedApiClient(client.ApiClient):
    """An API client whose every call has a timeout (``API_TIMEOUT``) unless it names one.

    The generated client waits forever by default: a black-holed API server would hold a
    request (and the finalizer's Lease renewal) for as long as the kernel keeps the socket.
    """

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = kwargs.get("_request_timeout") or API_TIMEOUT
        return super().call_api(*args, **kwargs)


def connect(settings: Settings) -> tuple[client.ApiClient, str]:
    """An API client and the namespace of the Jobs: in-cluster, or from a kubeconfig."""
    kubeconfig = settings.kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        namespace = IN_CLUSTER_NAMESPACE.read_text(encoding="utf-8").strip()
    else:
        path = str(kubeconfig) if kubeconfig else None
        config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]
        _, context = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
        namespace = context.get("context", {}).get("namespace") or "default"
    # a refused connection is tried once more; a request sent is never repeated, so one call
    # takes at most two connect timeouts and one read timeout
    configuration.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0)
    return TimedApiClient(configuration), settings.namespace or namespace


def unreachable(exc: Exception, what: str) -> ExecutorUnavailable:
    """The clear error for an API call that got no answer (stopped, black-holed, slow)."""
    return ExecutorUnavailable(
        f"the cluster's API server did not answer the call to {what} within "
        f"{API_TIMEOUT[0]:g} s to connect and {API_TIMEOUT[1]:g} s to reply "
        f"({type(exc).__name__}); retry later"
    )


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


def installation(settings: Settings) -> str:
    """The installation's name: its store claim (a label value: 63 characters at most)."""
    claim = settings.store_claim
    if len(claim) <= 63:
        return claim
    digest = hashlib.sha256(claim.encode()).hexdigest()[:8]
    return f"{claim[:54].rstrip('.-')}-{digest}"


def lease_name(settings: Settings) -> str:
    """The Lease this installation's replicas elect their finalizer with."""
    return LEASE_PREFIX + installation(settings)


def job_name(job_id: str) -> str:
    """The Job's name: the job id in DNS-1123 form."""
    return f"squarenet-{job_id.lower()}"


def job_manifest(
    job: Job, settings: Settings, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``batch/v1`` Job that trains ``job`` (Pod Security "restricted", no API token),
    owned by ``owner`` (an ownerReference) when the installation names one."""
    labels = {
        JOB_ID_LABEL: job.id,
        INSTALLATION_LABEL: installation(settings),
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
        "name": JOB_CONTAINER,
        "image": settings.job_image,
        "imagePullPolicy": "IfNotPresent",  # a pinned tag (checked at start) never changes
        # a process that fails before its result line (an unwritable store) says why here
        "terminationMessagePolicy": "FallbackToLogsOnError",
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
            {"name": "models", "mountPath": JOB_MOUNT_PATH}
            | ({"subPath": settings.store_sub_path} if settings.store_sub_path else {}),
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
    job_labels = dict(labels)
    if settings.queue_name is not None:  # Kueue admits the Job by unsuspending it
        job_labels[KUEUE_QUEUE_LABEL] = settings.queue_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # deleting the owner (the trainer's Deployment) deletes the Job and its pod
        "metadata": {"name": job_name(job.id), "labels": job_labels}
        | ({"ownerReferences": [owner]} if owner is not None else {}),
        "spec": {
            "suspend": settings.queue_name is not None,
            "backoffLimit": 0,
            # a pod the cluster took away (evicted, drained, pre-empted: DisruptionTarget; or
            # stopped by SIGTERM otherwise, e.g. deleted) is replaced without counting against
            # backoffLimit, and the new pod resumes from the job's checkpoint on the store
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": DISRUPTION, "status": "True"}],
                    },
                    {
                        "action": "Ignore",
                        "onExitCodes": {
                            "containerName": JOB_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_STOPPED],
                        },
                    },
                ]
            },
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
        self.apps = client.AppsV1Api(api_client)
        self._owner: dict[str, Any] | None = None

    def owner(self) -> dict[str, Any] | None:
        """The ownerReference of every Job: the ``--job-owner`` Deployment, read once for its
        uid (a Deployment made again has a new uid, but then so has this trainer's pod)."""
        name = self.settings.job_owner
        if name is None or self._owner is not None:
            return self._owner
        try:
            found = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise ExecutorUnavailable(
                    f"the Jobs' owner, Deployment {name} (--job-owner), does not exist in "
                    f"namespace {self.namespace}"
                ) from exc
            raise refusal(exc, f"get Deployment {name}", self.namespace) from exc
        except UNREACHABLE as exc:
            raise unreachable(exc, f"get Deployment {name}") from exc
        self._owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
            "uid": found.metadata.uid if found.metadata is not None else None,
            "blockOwnerDeletion": False,  # the Deployment goes at once; its Jobs follow
        }
        return self._owner

    def submit(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        """Create the job's Job (again is harmless), then record the job QUEUED."""
        if job_id is not None and (existing := self.book.files.read(job_id)) is not None:
            return existing  # a named job submitted again: the one we have
        owner = self.owner()
        job = self.book.new_job(params, job_id=job_id, sweep_id=sweep_id)
        slots = self.book.slots
        if slots is not None and not slots.take(job.id):
            raise TooManyJobs(slots.size)
        try:
            manifest: Any = job_manifest(job, self.settings, owner)  # plain dicts do too
            self.batch.create_namespaced_job(self.namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:  # AlreadyExists: made by an earlier try of this call
                self._give_back(job.id)
                raise refusal(exc, "create Jobs", self.namespace) from exc
        except UNREACHABLE as exc:  # a Job it may have made without a record is an orphan
            self._give_back(job.id)
            raise unreachable(exc, "create a Job") from exc
        self.book.record(job)
        return job

    def _give_back(self, job_id: str) -> None:
        if self.book.slots is not None:
            self.book.slots.release(job_id)

    def cancel(self, job_id: str) -> Job:
        """Record the request and delete the Job; the finalizer records CANCELLED later (the
        job is returned as it is now).

        With the API server away the request stays recorded (the finalizer deletes the Job
        once it answers again) and the caller gets ``ExecutorUnavailable``.
        """
        self.book.request_cancel(job_id)
        delete_job(self.batch, self.namespace, job_id)
        return self.book.cancelled_or_running(job_id)


def delete_job(batch: client.BatchV1Api, namespace: str, job_id: str) -> None:
    """Delete a job's Job and, first, its pod (foreground); a Job already gone is fine."""
    try:
        batch.delete_namespaced_job(job_name(job_id), namespace, propagation_policy="Foreground")
    except ApiException as exc:
        if exc.status != 404:
            raise refusal(exc, "delete Jobs", namespace) from exc
    except UNREACHABLE as exc:
        raise unreachable(exc, "delete a Job") from exc


class FencedLeaseLock(LeaseLock):
    """The client's Lease lock on our timed API client, remembering its last renewal.

    A call that gets no answer counts as a failed renewal (the client's lock knows only
    ``ApiException``), and ``renewed_at`` is when the last successful create or update was
    sent: the Lease is ours until at least ``LEASE_SECONDS`` after that.
    """

    def __init__(self, name: str, namespace: str, identity: str, api: client.ApiClient) -> None:
        super().__init__(name, namespace, identity)  # type: ignore[no-untyped-call]
        self.api_instance = client.CoordinationV1Api(api)
        self.renewed_at: float | None = None

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        """The Lease, or (False, the error): no answer is an error, not a crash."""
        try:
            found: tuple[bool, Any] = super().get(name, namespace)  # type: ignore[no-untyped-call]
            return found
        except UNREACHABLE as exc:
            return False, ApiException(status=0, reason=f"no answer ({type(exc).__name__})")

    def create(self, *args: Any, **kwargs: Any) -> bool:
        return self._renewing(super().create, *args, **kwargs)

    def update(self, *args: Any, **kwargs: Any) -> bool:
        return self._renewing(super().update, *args, **kwargs)

    def _renewing(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        sent = time.monotonic()
        with contextlib.suppress(*UNREACHABLE):
            if call(*args, **kwargs):
                self.renewed_at = sent
                return True
        return False


class Finalizer:
    """Settles jobs from their Jobs' status, on the one replica that holds the Lease."""

    def __init__(
        self, book: JobBook, settings: Settings, sweeps: Callable[[], None] | None = None
    ) -> None:
        self.book = book
        self.sweeps = sweeps  # the sweep controller's periodic pass, run while leading
        self.max_pending_seconds = settings.max_pending_seconds
        self.api, self.namespace = connect(settings)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.authz = client.AuthorizationV1Api(self.api)
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease = lease_name(settings)
        self.selector = f"{JOB_ID_LABEL},{INSTALLATION_LABEL}={installation(settings)}"
        self.lock = FencedLeaseLock(self.lease, self.namespace, self.identity, self.api)
        self.stopping = threading.Event()
        self.leading = threading.Event()
        self.orphans: dict[str, float] = {}
        self.pending: dict[str, float] = {}  # job id -> when first seen without a started pod
        self.problems: dict[str, str] = {}  # what is wrong now, logged once until it clears
        # the sweep pass this finalizer runs (its tick, and ``finish``'s listener) writes
        # through the same book: it stops with the Lease too
        book.still_leading = self.holds_lease

    def run(self) -> int:
        """Take part in the election until SIGTERM; lead (finalize) while elected."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        logging.getLogger("leaderelection").setLevel(logging.WARNING)  # a line every 2 s else
        try:
            self.report_missing_permissions()
        except UNREACHABLE as exc:
            self.problem(
                "permissions", f"cannot check permissions: no answer ({type(exc).__name__})"
            )
        threading.Thread(target=self._elect, name="leader-election", daemon=True).start()
        while not self.stopping.wait(1.0):
            pass
        _log.info("finalizer %s stopped", self.identity)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def holds_lease(self) -> bool:
        """True while elected and the last renewal was sent within the renew deadline.

        Checked before every state change: a replica whose calls hung or whose process was
        paused past the deadline may have lost the Lease without hearing of it, and another
        replica may act from ``LEASE_SECONDS`` after that renewal on.
        """
        renewed = self.lock.renewed_at
        return (
            self.leading.is_set()
            and renewed is not None
            and time.monotonic() - renewed < RENEW_SECONDS
        )

    def problem(self, key: str, message: str | None) -> None:
        """Log a problem once when it starts (or changes) and once when it clears."""
        if message is None:
            if self.problems.pop(key, None) is not None:
                _log.info("finalizer: %s: resolved", key)
        elif self.problems.get(key) != message:
            self.problems[key] = message
            _log.error("finalizer: %s: %s", key, message)

    def report_missing_permissions(self) -> None:
        """Log, as one clear error, what the ServiceAccount may not do.

        The Lease is read and renewed by name only (the Role's ``resourceNames``): those
        verbs are asked about this installation's Lease, the others about any object.
        """
        missing = []
        for group, resource, verb in PERMISSIONS:
            by_name = resource == "leases" and verb != "create"
            attributes = client.V1ResourceAttributes(
                namespace=self.namespace,
                group=group,
                resource=resource,
                verb=verb,
                name=self.lease if by_name else None,
            )
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
            )
            try:
                answer: Any = self.authz.create_self_subject_access_review(review)
            except ApiException as exc:
                _log.error("finalizer: cannot check permissions: %s %s", exc.status, exc.reason)
                return
            if not answer.status.allowed:
                missing.append(f"{verb} {resource}")
        if missing:
            _log.error(
                "finalizer: the ServiceAccount may not %s in namespace %s: bind the "
                "squarenet-trainer Role (k8s/base/rbac.yaml); jobs cannot run until then",
                ", ".join(missing),
                self.namespace,
            )

    def _elect(self) -> None:
        election = electionconfig.Config(  # type: ignore[no-untyped-call]
            self.lock, LEASE_SECONDS, RENEW_SECONDS, RETRY_SECONDS, self._lead, self._stop_leading
        )
        while not self.stopping.is_set():
            try:
                leaderelection.LeaderElection(election).run()  # type: ignore[no-untyped-call]
                self.problem("leader election", None)
            except Exception as exc:  # a bug or an odd answer: never leave the election
                self.problem("leader election", f"{type(exc).__name__}: {exc}; retrying")
            finally:
                self._stop_leading()  # however run() ended, this replica leads no more
            self.stopping.wait(RETRY_SECONDS)

    def _lead(self) -> None:
        self.leading.set()
        _log.info("finalizer %s: leading (Lease %s/%s)", self.identity, self.namespace, self.lease)
        while self.leading.is_set() and not self.stopping.is_set():
            self.tick()
            self.stopping.wait(RECONCILE_SECONDS)

    def tick(self) -> None:
        """One pass: settle the jobs, then the sweeps; any error is a logged line, not an end."""
        try:
            self.reconcile()
            self.problem("list Jobs", None)
        except ApiException as exc:
            self.problem("list Jobs", str(refusal(exc, "list Jobs", self.namespace)))
        except UNREACHABLE as exc:
            self.problem("list Jobs", str(unreachable(exc, "list Jobs")))
        except OSError as exc:
            self.problem("store", f"store error, retrying: {exc}")
        if self.sweeps is not None and self.holds_lease():
            try:
                self.sweeps()
                self.problem("sweeps", None)
            except Exception as exc:  # the next pass retries; the jobs go on meanwhile
                self.problem("sweeps", f"{type(exc).__name__}: {exc}")

    def _stop_leading(self) -> None:
        if self.leading.is_set():
            _log.warning("finalizer %s: lost the Lease, no longer leading", self.identity)
        self.leading.clear()

    def reconcile(self) -> None:
        """Settle every unfinished job from its Job; delete Jobs whose record never came.

        Each job is settled on its own: one whose settling fails (its API call, its files)
        is logged and retried on the next pass while the others are settled.
        """
        unfinished = self.book.unfinished()  # before listing: each record's Job exists by then
        listed: Any = self.batch.list_namespaced_job(self.namespace, label_selector=self.selector)
        jobs: dict[str, Any] = {item.metadata.labels[JOB_ID_LABEL]: item for item in listed.items}
        for job in unfinished:
            if not self.holds_lease():
                return
            try:
                self.settle(job, jobs.pop(job.id, None))
                self.problem(f"job {job.id}", None)
            except ApiException as exc:
                self.problem(f"job {job.id}", f"{exc.status} {exc.reason}")
            except (*UNREACHABLE, ExecutorUnavailable, OSError) as exc:
                self.problem(f"job {job.id}", f"{type(exc).__name__}: {exc}")
        for gone in set(self.pending) - {job.id for job in unfinished}:
            del self.pending[gone]
        self.free_stale_slots({job.id for job in unfinished})
        now = time.monotonic()
        for job_id, item in jobs.items():
            if self.book.files.read(job_id) is not None or item.metadata.deletion_timestamp:
                self.orphans.pop(job_id, None)
            elif now - self.orphans.setdefault(job_id, now) > ORPHAN_GRACE_SECONDS:
                if not self.holds_lease():
                    return
                _log.warning("Job %s has no job record: deleting it", item.metadata.name)
                delete_job(self.batch, self.namespace, job_id)
                self.orphans.pop(job_id, None)

    def free_stale_slots(self, unfinished: set[str]) -> None:
        """Free slots of jobs that ended, or whose record never came (the API call that took
        the slot died before writing it): after ``ORPHAN_GRACE_SECONDS``, as for Jobs."""
        slots = self.book.slots
        if slots is None:
            return
        now = time.monotonic()
        for slot, holder in slots.holders().items():
            key = f"slot:{holder}"
            if holder in unfinished:
                self.orphans.pop(key, None)
            elif now - self.orphans.setdefault(key, now) > ORPHAN_GRACE_SECONDS or (
                (record := self.book.files.read(holder)) is not None and record.state.finished
            ):
                _log.info("job slot %s of job %s freed: not queued or running", slot.name, holder)
                slot.unlink(missing_ok=True)
                self.orphans.pop(key, None)

    def _finish(self, job_id: str, ending: Ending) -> None:
        """End the job, unless the Lease may be lost: the pod list before this (up to ~9 s)
        can take a replica past its renew deadline, and another may lead by now."""
        if self.holds_lease():
            self.book.finish(job_id, ending)

    def _delete(self, job_id: str) -> bool:
        """Delete the job's Job if still leading (see ``_finish``); whether it did."""
        if not self.holds_lease():
            return False
        delete_job(self.batch, self.namespace, job_id)
        return True

    def settle(self, job: Job, item: Any | None) -> None:
        """One job: started, or ended, as its Job (or its absence) says.

        Every state change (and Job deletion) re-checks the Lease right before it.
        """
        if self.book.cancel_requested(job.id):  # the one place the cancel path reads
            deleting = item is not None and item.metadata.deletion_timestamp is None
            if deleting and not self._delete(job.id):
                return
            self._finish(job.id, CANCELLED)  # the fence makes this safe at once
            return
        if item is None:
            self._finish(job.id, Ending("exited", "lost: its Kubernetes Job is gone"))
            return
        status = item.status
        ended = next(
            (c for c in status.conditions or () if c.type in ("Complete", "Failed") and c.status == "True"),
            None,
        )  # fmt: skip
        if ended is None:
            if job.state is RunState.QUEUED and (status.ready or status.succeeded or status.failed):
                self.pending.pop(job.id, None)
                if self.holds_lease():
                    self.book.start(job.id)
            elif job.state is RunState.QUEUED and not item.spec.suspend:
                self.check_pending(job)  # a Job Kueue has not admitted yet waits its turn
            return
        if ended.type == "Complete":
            self._finish(job.id, Ending("exited", "its pod ended without a result"))
        elif ended.reason == "DeadlineExceeded":
            self._finish(job.id, TIME_LIMIT)
        elif DISRUPTION in (ended.message or ""):
            why = self.disruption(job.id) or ended.message
            self._finish(job.id, Ending("failed", disrupted_error(why), EndReason.INTERRUPTED))
        else:
            why = self.pod_failure(job.id) or f"{ended.reason}: {ended.message}"
            self._finish(job.id, Ending("exited", f"the job's pod failed: {why}"))

    def check_pending(self, job: Job) -> None:
        """Fail a job whose pod has not started within ``max_pending_seconds``, naming why.

        The wait is timed here from when this finalizer first saw the job waiting (a new
        leader starts the count again: it compares no clocks with the API server).
        """
        now = time.monotonic()
        if now - self.pending.setdefault(job.id, now) < self.max_pending_seconds:
            return
        why = pending_reason(self._pods(job.id))
        if why is None:
            return  # its pod is starting right now: the next pass sees it Ready
        if not self._delete(job.id):
            return  # the Lease may have lapsed during the pod list: the leader decides
        self.pending.pop(job.id, None)
        why = f"never started: its pod did not start within {self.max_pending_seconds} s: {why}"
        self._finish(job.id, Ending("failed", why))

    def _pods(self, job_id: str) -> list[Any]:
        listed: Any = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{JOB_ID_LABEL}={job_id}"
        )
        return list(listed.items)

    def disruption(self, job_id: str) -> str | None:
        """The pod's ``DisruptionTarget`` condition as ``reason: message``, if the pod is there."""
        for pod in self._pods(job_id):
            for condition in pod.status.conditions or ():
                if condition.type == DISRUPTION and condition.status == "True":
                    return f"{condition.reason}: {condition.message}".strip(": ")
        return None

    def pod_failure(self, job_id: str) -> str | None:
        """How the job's pod ended (its container's termination), if the pod is still there."""
        for pod in self._pods(job_id):
            for container in pod.status.container_statuses or ():
                ended = container.state.terminated if container.state else None
                if ended is not None:
                    message = f": {ended.message.strip()}" if ended.message else ""
                    return f"{ended.reason or 'terminated'}, exit code {ended.exit_code}{message}"
            if pod.status.reason or pod.status.message:
                return f"{pod.status.reason or 'failed'}: {pod.status.message or ''}".strip(": ")
        return None


def disrupted_error(why: str | None) -> str:
    """The error of a job whose pod the cluster took away (evicted, drained, pre-empted)."""
    return (
        f"interrupted: its pod was disrupted by the cluster ({why or DISRUPTION}) before it "
        "finished; nothing was published"
    )


def pending_reason(pods: list[Any]) -> str | None:
    """Why none of a Job's pods started (e.g. ``Unschedulable: 0/1 nodes are available: 1
    Insufficient cpu``); None when one is running or about to."""
    if not pods:
        return "no pod was created (a ResourceQuota, LimitRange or admission refused it)"
    for pod in pods:
        status = pod.status
        if status is None or status.phase in ("Running", "Succeeded", "Failed"):
            return None
        for container in [
            *(status.init_container_statuses or ()),
            *(status.container_statuses or ()),
        ]:
            waiting = container.state.waiting if container.state else None
            if waiting is not None and waiting.reason in STUCK_WAITING:
                return f"{waiting.reason}: {waiting.message or container.name}"
        for condition in status.conditions or ():
            if condition.type == "PodScheduled" and condition.status == "False":
                why = f"{condition.reason or 'Unschedulable'}: {condition.message or ''}"
                return why.strip(": ")
    return None  # scheduled and creating its containers (a large image pulls for a while)
