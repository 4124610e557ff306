"""A small typed client for the trainer's REST API (httpx), mapping failures to exit codes.

Problem responses (RFC 9457) become one readable line: ``title: detail`` followed by the
field errors, so ``squarenet train --epochs 0`` tells the user which flag to change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse

from squarenet.cli.errors import CliError, ExitCode
from squarenet.tokens import InvalidToken, clean_token

JobDocument = dict[str, Any]

TERMINAL_STATES: Final = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
DEFAULT_TIMEOUT: Final = 10.0
# An epoch of the article's configuration takes well under a second; a silent minute means
# the stream is stuck, and the follower reconnects (or reads the job) instead of hanging.
STREAM_READ_TIMEOUT: Final = 60.0
#: A label move may measure its version first (a SavedModel loaded in a child process).
GATE_READ_TIMEOUT: Final = 180.0
#: The trainer answers a cancel at once (202 while the runner stops a running job): the
#: client follows the job (or sweep) this long for its end, then reports it as it is.
CANCEL_FOLLOW_SECONDS: Final = 10.0
CANCEL_POLL_SECONDS: Final = 0.2


class StreamBusy(CliError):
    """The trainer holds as many event streams as it can (503): try again after a pause."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, ExitCode.SERVICE_ERROR)
        self.retry_after = retry_after


def retry_after_seconds(response: httpx.Response, default: float = 1.0) -> float:
    """The ``Retry-After`` pause in seconds (delay form), at most a minute."""
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.0), 60.0)
    except ValueError:
        return default


def describe_problem(response: httpx.Response) -> str:
    """One line from an HTTP error: the problem's title, detail and field errors when present."""
    try:
        problem = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        problem = None
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()
    title = str(problem.get("title") or response.reason_phrase or "error")
    detail = problem.get("detail")
    text = f"{title}: {detail}" if detail and detail != title else title
    errors = problem.get("errors")
    if isinstance(errors, list):
        fields = [
            f"{item.get('field', '?')}: {item.get('message', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in errors
        ]
        unsaid = [field for field in fields if field not in text]  # detail may list them already
        if unsaid:
            text = f"{text} ({'; '.join(unsaid)})"
    return f"HTTP {response.status_code} {text}"


class TrainerClient:
    """Calls the trainer at ``base_url``; the token is sent as Bearer on mutating calls only."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            self._token = clean_token(token)  # the trainer reads its token by the same rule
        except InvalidToken as exc:
            raise CliError(f"SQUARENET_API_TOKEN / --token: {exc}", ExitCode.USAGE) from exc
        try:
            self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
            url = httpx.URL(self.base_url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise CliError(f"invalid trainer URL {base_url!r}: {exc}", ExitCode.USAGE) from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise CliError(
                f"invalid trainer URL {base_url!r}: expected http://HOST:PORT", ExitCode.USAGE
            )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> TrainerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- the API ------------------------------------------------------------------------

    def submit_job(self, params: Mapping[str, Any]) -> JobDocument:
        """POST /v1/jobs: queue a training job with only the given hyperparameters."""
        return self._json_object(self._request("POST", "/v1/jobs", json=dict(params)))

    def list_jobs(self) -> list[JobDocument]:
        """GET /v1/jobs: every job, newest first."""
        return self._list(self._request("GET", "/v1/jobs"), "jobs")

    def get_job(self, job_id: str) -> JobDocument:
        """GET /v1/jobs/{id}."""
        return self._json_object(self._request("GET", f"/v1/jobs/{_segment(job_id)}"))

    def cancel_job(self, job_id: str, *, follow: float = CANCEL_FOLLOW_SECONDS) -> JobDocument:
        """POST /v1/jobs/{id}/cancel, then the job once it has ended (or as it is after
        ``follow`` seconds)."""
        job = self._json_object(self._request("POST", f"/v1/jobs/{_segment(job_id)}/cancel"))
        deadline = time.monotonic() + follow
        while job.get("state") not in TERMINAL_STATES and time.monotonic() < deadline:
            time.sleep(CANCEL_POLL_SECONDS)
            job = self.get_job(job_id)
        return job

    def list_models(self) -> list[JobDocument]:
        """GET /v1/models: every published version with its metadata."""
        return self._list(self._request("GET", "/v1/models"), "models")

    def submit_sweep(self, spec: Mapping[str, Any]) -> JobDocument:
        """POST /v1/sweeps: create a sweep from a Katib-style spec."""
        return self._json_object(self._request("POST", "/v1/sweeps", json=dict(spec)))

    def list_sweeps(self) -> list[JobDocument]:
        """GET /v1/sweeps: every sweep, newest first."""
        return self._list(self._request("GET", "/v1/sweeps"), "sweeps")

    def get_sweep(self, sweep_id: str) -> JobDocument:
        """GET /v1/sweeps/{id}."""
        return self._json_object(self._request("GET", f"/v1/sweeps/{_segment(sweep_id)}"))

    def sweep_trials(self, sweep_id: str) -> list[JobDocument]:
        """GET /v1/sweeps/{id}/trials."""
        path = f"/v1/sweeps/{_segment(sweep_id)}/trials"
        return self._list(self._request("GET", path), "trials")

    def cancel_sweep(self, sweep_id: str, *, follow: float = CANCEL_FOLLOW_SECONDS) -> JobDocument:
        """POST /v1/sweeps/{id}/cancel, then the sweep once it and its trials have ended (or
        as it is after ``follow`` seconds)."""
        path = f"/v1/sweeps/{_segment(sweep_id)}/cancel"
        sweep = self._json_object(self._request("POST", path))
        deadline = time.monotonic() + follow
        while not _settled(sweep) and time.monotonic() < deadline:
            time.sleep(CANCEL_POLL_SECONDS)
            sweep = self.get_sweep(sweep_id)
        return sweep

    def promote_sweep(self, sweep_id: str) -> JobDocument:
        """POST /v1/sweeps/{id}/promote: the best trial's model as a new served version."""
        path = f"/v1/sweeps/{_segment(sweep_id)}/promote"
        return self._json_object(self._request("POST", path))

    def list_labels(self) -> dict[str, dict[str, int]]:
        """GET /v1/models: each model's version labels."""
        labels = self._json_object(self._request("GET", "/v1/models")).get("labels")
        if not isinstance(labels, dict):
            raise CliError(
                f"trainer at {self.base_url} answered without a 'labels' object",
                ExitCode.SERVICE_ERROR,
            )
        return {
            str(model): {str(k): v for k, v in found.items() if isinstance(v, int)}
            for model, found in labels.items()
            if isinstance(found, dict)
        }

    def set_label(
        self, model_name: str, label: str, version: int, *, force: bool = False
    ) -> JobDocument:
        """PUT /v1/models/{model}/labels/{label}: point the label at ``version``.

        The trainer gates the version first; measuring one published without a sealed
        measurement loads its SavedModel, so this call may take seconds the first time.
        """
        path = f"/v1/models/{_segment(model_name)}/labels/{_segment(label)}"
        body: dict[str, Any] = {"version": version}
        if force:
            body["force"] = True
        timeout = httpx.Timeout(self._http.timeout.connect, read=GATE_READ_TIMEOUT)
        return self._json_object(self._request("PUT", path, json=body, timeout=timeout))

    def history(self, model_name: str, at: str | None = None) -> JobDocument:
        """GET /v1/models/{model}/history[?at=]: every change, or the state at one time."""
        params = {"at": at} if at is not None else None
        path = f"/v1/models/{_segment(model_name)}/history"
        return self._json_object(self._request("GET", path, params=params))

    def traffic(self, model_name: str, method: str = "GET", document: Any = None) -> JobDocument:
        """GET, PUT (``document``) or DELETE /v1/models/{model}/traffic."""
        path = f"/v1/models/{_segment(model_name)}/traffic"
        kwargs = {"json": document} if method == "PUT" else {}
        return self._json_object(self._request(method, path, **kwargs))

    def get_plot(self, job_id: str, name: str) -> bytes:
        """GET /v1/jobs/{id}/plots/{name}: a PNG the trainer drew for the job."""
        response = self._request("GET", f"/v1/jobs/{_segment(job_id)}/plots/{_segment(name)}")
        return response.content

    def job_events(
        self, job_id: str, *, after_epoch: int = 0
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow GET /v1/jobs/{id}/events; yield (event name, JSON data) until the stream ends.

        ``after_epoch`` is sent as ``Last-Event-ID`` so a reconnect resumes where it left off.
        """
        path = f"/v1/jobs/{_segment(job_id)}/events"
        timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT)
        headers = {"Last-Event-ID": str(after_epoch)} if after_epoch else {}
        try:
            with connect_sse(self._http, "GET", path, timeout=timeout, headers=headers) as source:
                if source.response.is_error:
                    source.response.read()
                    if source.response.status_code == 503:
                        raise StreamBusy(
                            str(self._http_error(source.response).message),
                            retry_after_seconds(source.response),
                        )
                    raise self._http_error(source.response)
                for event in source.iter_sse():
                    if not event.data:
                        continue  # keep-alive
                    try:
                        data = json.loads(event.data)
                    except json.JSONDecodeError as exc:
                        raise CliError(
                            f"trainer at {self.base_url} sent a malformed {event.event!r} event",
                            ExitCode.SERVICE_ERROR,
                        ) from exc
                    if isinstance(data, dict):
                        yield event.event, data
        except SSEError as exc:
            raise CliError(
                f"trainer at {self.base_url} did not answer with an event stream: {exc}",
                ExitCode.SERVICE_ERROR,
            ) from exc
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    # --- plumbing -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if method != "GET" and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise self._http_error(response)
        return response

    def _unreachable(self, exc: httpx.TransportError) -> CliError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            reason = f"no answer in time ({type(exc).__name__})"
        return CliError(
            f"cannot reach the trainer at {self.base_url}: {reason}", ExitCode.UNREACHABLE
        )

    def _http_error(self, response: httpx.Response) -> CliError:
        code = ExitCode.REJECTED if response.is_client_error else ExitCode.SERVICE_ERROR
        return CliError(f"trainer refused: {describe_problem(response)}", code)

    def _json_object(self, response: httpx.Response) -> JobDocument:
        try:
            document = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CliError(
                f"trainer at {self.base_url} answered {response.request.url.path} with non-JSON",
                ExitCode.SERVICE_ERROR,
            ) from exc
        if not isinstance(document, dict):
            raise CliError(
                f"trainer at {self.base_url} answered {response.request.url.path} with "
                f"{type(document).__name__}, expected an object",
                ExitCode.SERVICE_ERROR,
            )
        return document

    def _list(self, response: httpx.Response, key: str) -> list[JobDocument]:
        items = self._json_object(response).get(key)
        if not isinstance(items, list):
            raise CliError(
                f"trainer at {self.base_url} answered without a {key!r} list",
                ExitCode.SERVICE_ERROR,
            )
        return [item for item in items if isinstance(item, dict)]


def _segment(value: str) -> str:
    """A path segment with anything that could change the path (/, ?, #) escaped."""
    if value.strip(".") == "":
        raise CliError(f"invalid identifier {value!r}", ExitCode.USAGE)
    return quote(value, safe="")


def _settled(sweep: JobDocument) -> bool:
    """The sweep has ended and no trial of it waits or runs any more."""
    active = ("trialsPending", "trialsQueued", "trialsRunning")
    return sweep.get("state") in TERMINAL_STATES and not any(sweep.get(name) for name in active)
