"""The explicit hostile table against the real trainer over real HTTP (gunicorn + Flask).

Every request here is one a fuzzer is unlikely to build: bodies past the limit (announced
and chunked), deep nesting, odd content types and charsets, path tricks and unicode in job
ids and plot names, method and header tricks. Each row names its answer; none may be a 5xx,
and answers that come from the API are RFC 9457 problems. Requests a client library would
refuse or normalise go over a raw socket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support import service_env

from hostile.hostile_support import API_TOKEN
from hostile.raw_http import RawResponse, exchange, request_bytes
from squarenet.stack import Trainer, running_trainer

pytestmark = pytest.mark.slow

PROBLEM_TYPE = "application/problem+json"
LIMIT = 65536
AUTH = ("Authorization", f"Bearer {API_TOKEN}")
JSON = ("Content-Type", "application/json")
#: Shaped like a job id, so it passes the id check and must be looked up (and not found).
UNKNOWN_ID = "20261129T051500Z-3f9a1c2b"
#: Valid JSON the API parses and then refuses by value: a parsed body gets 422, not a job.
PARSED_BUT_INVALID = b'{"epochs": 0}'


@dataclass(frozen=True)
class Case:
    """One hostile request and the answers it may get."""

    request: bytes
    statuses: frozenset[int]
    #: True when the API itself answers (a problem document); False when gunicorn refuses
    #: the request before the app sees it (its own short error page).
    problem: bool = True
    headers: dict[str, str] = field(default_factory=dict)


def post(target: str, body: bytes, *headers: tuple[str, str], auth: bool = True) -> bytes:
    """A POST with a Content-Length; the token unless ``auth`` is False."""
    extra = [*([AUTH] if auth else []), *headers, ("Content-Length", str(len(body)))]
    return request_bytes("POST", target, extra, body)


def chunked(body: bytes, size: int = 8192) -> bytes:
    """``body`` in chunked transfer coding."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def get(target: str, *headers: tuple[str, str]) -> bytes:
    return request_bytes("GET", target, list(headers))


def case(request: bytes, *statuses: int, problem: bool = True, **headers: str) -> Case:
    return Case(request, frozenset(statuses), problem, headers)


DEEP = 30_000  # 60 KB of brackets: under the body limit, so the parser meets it
HUGE_JSON = b'{"seed": 1, "pad": "' + b"x" * (4 * LIMIT) + b'"}'

CASES: dict[str, Case] = {
    # --- huge bodies ------------------------------------------------------------------
    "body-over-limit-announced": case(post("/v1/jobs", HUGE_JSON, JSON), 413),
    "body-one-byte-over-limit": case(post("/v1/jobs", b" " * LIMIT + b"{}", JSON), 413),
    "body-over-limit-chunked": case(
        request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Transfer-Encoding", "chunked")])
        + chunked(HUGE_JSON),
        413,
    ),
    "content-length-claims-a-terabyte": case(
        request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Content-Length", str(10**12))]) + b"{}",
        413,
    ),
    "content-length-not-a-number": case(
        request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Content-Length", "12abc")]) + b"{}",
        400,
        problem=False,
    ),
    "content-length-negative": case(
        request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Content-Length", "-1")]) + b"{}",
        400,
        problem=False,
    ),
    "content-length-twice-disagreeing": case(
        request_bytes(
            "POST", "/v1/jobs", [AUTH, JSON, ("Content-Length", "2"), ("Content-Length", "13")]
        )
        + PARSED_BUT_INVALID,
        400,
        problem=False,
    ),
    "chunked-and-content-length-smuggling": case(
        request_bytes(
            "POST",
            "/v1/jobs",
            [AUTH, JSON, ("Content-Length", "4"), ("Transfer-Encoding", "chunked")],
        )
        + chunked(PARSED_BUT_INVALID),
        400,
        problem=False,
    ),
    "chunked-without-the-last-chunk": case(
        request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Transfer-Encoding", "chunked")])
        + b"d\r\n"
        + PARSED_BUT_INVALID
        + b"\r\n",
        400,
        problem=False,
    ),
    "chunked-with-a-huge-chunk-size": case(
        request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Transfer-Encoding", "chunked")])
        + b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        400,
        413,
        problem=False,
    ),
    "chunked-then-gzip-coding": case(
        request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Transfer-Encoding", "gzip, chunked")])
        + chunked(PARSED_BUT_INVALID),
        400,
        415,
        422,  # gunicorn reads the chunks and ignores the gzip coding: the body is parsed
        501,
        problem=False,
    ),
    # --- deep and strange JSON ------------------------------------------------------
    "deep-arrays": case(post("/v1/jobs", b"[" * DEEP + b"]" * DEEP, JSON), 400),
    "deep-objects": case(
        post("/v1/jobs", b'{"a":' * (DEEP // 3) + b"1" + b"}" * (DEEP // 3), JSON), 400
    ),
    "deep-inside-a-field": case(
        post("/v1/jobs", b'{"seed": ' + b"[" * DEEP + b"]" * DEEP + b"}", JSON), 400
    ),
    "integer-of-50000-digits": case(
        post("/v1/jobs", b'{"seed": ' + b"9" * 50_000 + b"}", JSON), 400
    ),
    "duplicate-keys": case(post("/v1/jobs", b'{"epochs": 5, "epochs": 0}', JSON), 422),
    "utf8-bom": case(post("/v1/jobs", b"\xef\xbb\xbf" + PARSED_BUT_INVALID, JSON), 400),
    "lone-surrogate-escape": case(post("/v1/jobs", b'{"\\ud800": 1}', JSON), 422),
    "nul-in-key": case(post("/v1/jobs", b'{"epochs\\u0000": 1}', JSON), 422),
    "top-level-string": case(post("/v1/jobs", b'"' + b"a" * 1000 + b'"', JSON), 422),
    # --- content types and charsets ------------------------------------------------
    "no-content-type": case(post("/v1/jobs", PARSED_BUT_INVALID), 415),
    "text-plain": case(post("/v1/jobs", PARSED_BUT_INVALID, ("Content-Type", "text/plain")), 415),
    "xml": case(post("/v1/jobs", b"<epochs>0</epochs>", ("Content-Type", "application/xml")), 415),
    "form-urlencoded": case(
        post("/v1/jobs", b"epochs=0", ("Content-Type", "application/x-www-form-urlencoded")), 415
    ),
    "multipart": case(
        post(
            "/v1/jobs",
            b'--b\r\nContent-Disposition: form-data; name="epochs"\r\n\r\n0\r\n--b--\r\n',
            ("Content-Type", "multipart/form-data; boundary=b"),
        ),
        415,
    ),
    "json-lookalike-type": case(
        post("/v1/jobs", PARSED_BUT_INVALID, ("Content-Type", "application/jsonx")), 415
    ),
    "content-type-garbage": case(
        post("/v1/jobs", PARSED_BUT_INVALID, ("Content-Type", ";;;===")), 415
    ),
    "upper-case-json-type-is-json": case(
        post("/v1/jobs", PARSED_BUT_INVALID, ("Content-Type", "APPLICATION/JSON")), 422
    ),
    "problem-json-suffix-is-json": case(
        post("/v1/jobs", PARSED_BUT_INVALID, ("Content-Type", "application/merge-patch+json")),
        422,
    ),
    "charset-utf8-is-json": case(
        post("/v1/jobs", PARSED_BUT_INVALID, ("Content-Type", "application/json; charset=utf-8")),
        422,
    ),
    "charset-utf16-body": case(
        post(
            "/v1/jobs",
            PARSED_BUT_INVALID.decode().encode("utf-16"),
            ("Content-Type", "application/json; charset=utf-16"),
        ),
        400,
    ),
    "charset-latin1-body": case(
        post(
            "/v1/jobs",
            '{"name": "café"}'.encode("latin-1"),
            ("Content-Type", "application/json; charset=iso-8859-1"),
        ),
        400,
    ),
    "charset-unknown": case(
        post("/v1/jobs", PARSED_BUT_INVALID, ("Content-Type", "application/json; charset=klingon")),
        422,
    ),
    # --- job ids and plot names -------------------------------------------------------
    "id-encoded-dot-dot-slash": case(get("/v1/jobs/..%2f..%2f..%2fetc%2fpasswd"), 404),
    "id-encoded-dot-dot": case(get("/v1/jobs/%2e%2e"), 404),
    "id-double-encoded": case(get("/v1/jobs/%252e%252e%252fjob.json"), 404),
    "id-raw-dot-dot": case(get("/v1/jobs/../../etc/passwd"), 404),
    "id-nul": case(get("/v1/jobs/" + UNKNOWN_ID + "%00"), 404),
    "id-nul-then-path": case(get("/v1/jobs/%00/../job.json"), 404),
    "id-backslashes": case(get("/v1/jobs/..%5c..%5cwindows"), 404),
    "id-very-long": case(get("/v1/jobs/" + "a" * 3000), 404),
    "id-longer-than-a-request-line": case(get("/v1/jobs/" + "a" * 20_000), 400, 414, problem=False),
    "id-rtl-override": case(get("/v1/jobs/" + "%E2%80%AE" + UNKNOWN_ID), 404),
    "id-emoji": case(get("/v1/jobs/%F0%9F%92%A3%F0%9F%92%A3"), 404),
    "id-invalid-utf8": case(get("/v1/jobs/%ff%fe"), 404),
    "id-fullwidth-digits": case(get("/v1/jobs/" + "%EF%BC%92" * 8 + "T051500Z-3f9a1c2b"), 404),
    "id-unknown-but-well-shaped": case(get("/v1/jobs/" + UNKNOWN_ID), 404),
    "id-shaped-with-newline": case(get("/v1/jobs/" + UNKNOWN_ID + "%0a"), 404),
    "events-of-a-path-trick": case(get("/v1/jobs/..%2f..%2f/events"), 404),
    "plot-dot-dot": case(get(f"/v1/jobs/{UNKNOWN_ID}/plots/..%2f..%2fjob.json.png"), 404),
    "plot-nul": case(get(f"/v1/jobs/{UNKNOWN_ID}/plots/loss%00.png"), 404),
    "plot-emoji": case(get(f"/v1/jobs/{UNKNOWN_ID}/plots/%F0%9F%93%88.png"), 404),
    "plot-without-png": case(get(f"/v1/jobs/{UNKNOWN_ID}/plots/loss"), 404),
    "plot-absolute": case(get(f"/v1/jobs/{UNKNOWN_ID}/plots/%2fetc%2fpasswd.png"), 404),
    "cancel-path-trick": case(post("/v1/jobs/..%2f..%2f/cancel", b""), 404),
    "cancel-nul-id": case(post("/v1/jobs/%00/cancel", b""), 404),
    "cancel-emoji-id": case(post("/v1/jobs/%F0%9F%92%A3/cancel", b""), 404),
    "query-limit-huge": case(get("/v1/jobs?limit=" + "9" * 3000), 422),
    "query-state-unicode": case(get("/v1/jobs?state=%E2%80%AEQUEUED"), 422),
    "query-repeated": case(get("/v1/jobs?limit=1&limit=x"), 200, 422),
    # --- methods --------------------------------------------------------------------
    "put-jobs": case(request_bytes("PUT", "/v1/jobs", [AUTH]), 405),
    "delete-job": case(request_bytes("DELETE", f"/v1/jobs/{UNKNOWN_ID}", [AUTH]), 405),
    "patch-jobs": case(request_bytes("PATCH", "/v1/jobs", [AUTH, JSON]), 405),
    "trace": case(request_bytes("TRACE", "/v1/jobs"), 405),
    "made-up-method": case(request_bytes("FROBNICATE", "/v1/jobs"), 405),
    "lower-case-method": case(request_bytes("get", "/healthz"), 400, problem=False),
    "post-to-a-read": case(post("/healthz", b""), 405),
    "get-cancel": case(get(f"/v1/jobs/{UNKNOWN_ID}/cancel"), 405),
    "method-override-header-ignored": case(
        get("/v1/jobs", ("X-HTTP-Method-Override", "DELETE")), 200, problem=False
    ),
    "connect": case(request_bytes("CONNECT", "127.0.0.1:22"), 400, 404, 405, problem=False),
    "absolute-form-target": case(get("http://evil.example/v1/jobs"), 200, problem=False),
    "asterisk-target": case(request_bytes("OPTIONS", "*"), 400, 404, problem=False),
    # --- headers ----------------------------------------------------------------------
    "header-too-large": case(get("/v1/jobs", ("X-Pad", "p" * 20_000)), 400, 431, problem=False),
    "too-many-headers": case(
        request_bytes("GET", "/v1/jobs", [(f"X-H{i}", "v") for i in range(200)]),
        400,
        431,
        problem=False,
    ),
    "header-without-colon": case(
        b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nnonsense\r\nConnection: close\r\n\r\n",
        400,
        problem=False,
    ),
    "header-name-with-space": case(get("/v1/jobs", ("Bad Name", "v")), 400, problem=False),
    "header-obs-fold": case(
        b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\nConnection: close\r\n\r\n",
        200,
        400,
        problem=False,
    ),
    "header-with-bare-lf": case(
        b"GET /v1/jobs HTTP/1.1\nHost: x\nConnection: close\n\n", 200, 400, problem=False
    ),
    "http-0.9-style": case(b"GET /v1/jobs\r\n\r\n", 400, problem=False),
    "http-version-2": case(b"GET /v1/jobs HTTP/2.0\r\nHost: x\r\n\r\n", 400, 505, problem=False),
    "no-host-header": case(
        b"GET /v1/jobs HTTP/1.1\r\nConnection: close\r\n\r\n", 200, 400, problem=False
    ),
    "expect-100-continue-on-a-huge-body": case(
        request_bytes(
            "POST",
            "/v1/jobs",
            [AUTH, JSON, ("Expect", "100-continue"), ("Content-Length", str(10**9))],
        ),
        413,
    ),
    "last-event-id-garbage": case(
        get(
            f"/v1/jobs/{UNKNOWN_ID}/events",
            ("Last-Event-ID", "\u202e-1e999".encode().decode("latin-1")),
        ),
        404,
    ),
    "auth-huge-bearer": case(
        post(
            "/v1/jobs",
            PARSED_BUT_INVALID,
            JSON,
            ("Authorization", "Bearer " + "t" * 7000),
            auth=False,
        ),
        401,
    ),
    "auth-latin1-bytes": case(
        post(
            "/v1/jobs",
            PARSED_BUT_INVALID,
            JSON,
            ("Authorization", "Bearer \xff\xfe\xfd"),
            auth=False,
        ),
        401,
    ),
    "auth-basic-scheme-with-the-token": case(
        post(
            "/v1/jobs",
            PARSED_BUT_INVALID,
            JSON,
            ("Authorization", f"Basic {API_TOKEN}"),
            auth=False,
        ),
        401,
    ),
    "auth-token-prefix": case(
        post(
            "/v1/jobs",
            PARSED_BUT_INVALID,
            JSON,
            ("Authorization", f"Bearer {API_TOKEN[:-1]}"),
            auth=False,
        ),
        401,
    ),
    "auth-token-with-suffix": case(
        post(
            "/v1/jobs",
            PARSED_BUT_INVALID,
            JSON,
            ("Authorization", f"Bearer {API_TOKEN}x"),
            auth=False,
        ),
        401,
    ),
    "auth-lower-case-scheme-is-fine": case(
        post(
            "/v1/jobs",
            PARSED_BUT_INVALID,
            JSON,
            ("Authorization", f"bearer {API_TOKEN}"),
            auth=False,
        ),
        422,
    ),
    "auth-token-in-query-string-is-not-a-token": case(
        post(f"/v1/jobs?access_token={API_TOKEN}", PARSED_BUT_INVALID, JSON, auth=False), 401
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_request_gets_its_defined_answer(guarded_trainer: Trainer, name: str) -> None:
    hostile = CASES[name]
    answer = exchange(guarded_trainer.base_url, hostile.request)
    assert answer.status < 500, (answer, guarded_trainer.log())
    assert answer.status in hostile.statuses, answer
    if hostile.problem and answer.status >= 400:
        assert_problem(answer)
    assert b"Traceback" not in answer.body
    assert API_TOKEN.encode() not in answer.body


def assert_problem(answer: RawResponse) -> None:
    """The answer is an RFC 9457 problem whose status matches the HTTP status."""
    assert answer.headers.get("content-type", "").startswith(PROBLEM_TYPE), answer
    document = json.loads(answer.body)
    assert document["status"] == answer.status
    assert {"type", "title", "detail", "instance"} <= document.keys()


def test_the_service_still_answers_after_the_table_and_logged_no_traceback(
    guarded_trainer: Trainer,
) -> None:
    """Runs after the table (same module, same server): nothing broke or leaked."""
    assert httpx.get(f"{guarded_trainer.base_url}/readyz", timeout=5).status_code == 200
    jobs = httpx.get(f"{guarded_trainer.base_url}/v1/jobs", timeout=5).json()["jobs"]
    assert jobs == []  # no hostile request created a job
    log = guarded_trainer.log()
    assert "Traceback" not in log
    assert " 500 " not in log


#: Chunked bodies whose framing is broken: gunicorn raises from inside the body read.
MALFORMED_CHUNKED = {
    "bad-chunk-size": b"zz\r\n{}\r\n0\r\n\r\n",
    "bad-chunk-extension": b"d;\x01\r\n" + PARSED_BUT_INVALID + b"\r\n0\r\n\r\n",
}


def test_a_malformed_chunked_body_is_400_not_500(tmp_path: Path) -> None:
    """Own trainer: the failure it shows must not spoil the shared trainer's log checks."""
    with running_trainer(
        tmp_path / "store",
        tmp_path / "trainer.log",
        env=service_env({"SQUARENET_API_TOKEN": API_TOKEN}),
    ) as trainer:
        statuses = {
            name: exchange(
                trainer.base_url,
                request_bytes("POST", "/v1/jobs", [AUTH, JSON, ("Transfer-Encoding", "chunked")])
                + body,
            ).status
            for name, body in MALFORMED_CHUNKED.items()
        }
        log = trainer.log()
    assert statuses == dict.fromkeys(MALFORMED_CHUNKED, 400)
    assert "Traceback" not in log


def test_random_paths_and_methods_add_no_metric_series(guarded_trainer: Trainer) -> None:
    """Unknown routes share one ``<unmatched>`` label: a scan cannot grow /metrics' memory."""
    base = guarded_trainer.base_url

    def series() -> set[str]:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        return {line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")}

    methods = ("GET", "POST", "BREW", "DELETE", "PROPFIND")
    for method in methods:  # each label combination a scan can reach, once
        exchange(base, request_bytes(method, "/warm-up"))
    series()  # the scrape itself is counted too
    before = series()
    for index in range(150):
        method = methods[index % len(methods)]
        exchange(base, request_bytes(method, f"/scan-{index}/%F0%9F%92%A3/{'x' * index}"))
    after = series()
    assert after - before == set()
    assert not any("scan-" in name or "warm-up" in name for name in after)
