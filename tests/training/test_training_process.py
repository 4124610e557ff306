"""train_and_publish in a fresh process, the way a job's child process runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, logging, sys
from pathlib import Path
import tensorflow as tf
from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.training import train_and_publish

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s %(message)s")
params = TrainingParams.model_validate(
    {"n_samples": 200, "epochs": 3, "batch_size": 20, "mid_range": 4.0, "seed": 1}
)
outcome = train_and_publish(
    params, ModelStore(sys.argv[1]), job_id="job-42", artifacts_dir=Path(sys.argv[2])
)
print(json.dumps({
    "version": outcome.version.version,
    "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
}))
"""


@pytest.mark.slow
def test_a_fresh_process_trains_on_one_thread_and_logs_one_line_per_event(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "store"), str(tmp_path / "artifacts")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *log_lines, last = result.stdout.strip().splitlines()
    assert json.loads(last) == {"version": 1, "intra_op_threads": 1}
    events = [line for line in log_lines if line.startswith("trainer_service.training")]
    assert [line.split(": ", 1)[1].split(" ", 1)[0] for line in events] == [
        "training",
        "3",
        "published",
    ]
    assert all("job job-42" in line for line in events)
    assert "version 1" in events[-1]
    # TensorFlow's own INFO lines (e.g. "Assets written to") stay out of the job's log.
    assert all(line.startswith("trainer_service.training") for line in log_lines), log_lines
