"""Property-based check of the running service against its own /openapi.json (schemathesis).

Generated valid and invalid requests must never get a 5xx, and every answer must match the
documented status codes, content types, headers and schemas. Schema-valid bodies may still
get 422: the rules that join fields (batch_size at most the training rows, ...) cannot be
written in JSON Schema and the document says so. The event stream is left out here: the
stream of a live job lasts as long as the job; test_events checks its events.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rest.rest_helpers import run_schemathesis
from squarenet.stack import running_trainer

pytestmark = pytest.mark.slow


def test_the_running_service_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    with running_trainer(
        tmp_path / "store", tmp_path / "trainer.log", "--max-queued-jobs", "3"
    ) as trainer:
        run = run_schemathesis(trainer.base_url, tmp_path, "--max-examples", "15")
        server_log = trainer.log()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
    assert "Traceback" not in server_log, server_log
    assert "request failed" not in server_log, server_log
