"""``make demo`` (scripts/demo.py) with a tiny job: the table, the plots, nothing left running."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import free_port, patient, wait_for

from squarenet.stack import processes_marked

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MARK = "SQUARENET_TEST_RUN"


def demo_env(marker: str, **job: str) -> dict[str, str]:
    """Free ports, a tiny job, and a marker every process the demo starts inherits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUARENET_")}
    env.update(
        {
            MARK: marker,
            "SQUARENET_DEMO_TRAINER_PORT": str(free_port()),
            "SQUARENET_DEMO_PREDICTOR_PORT": str(free_port()),
            "SQUARENET_DEMO_METRICS_PORT": str(free_port()),
            "SQUARENET_DEMO_N_SAMPLES": "200",
            "SQUARENET_DEMO_EPOCHS": "5",
            "SQUARENET_DEMO_BATCH_SIZE": "32",
            "SQUARENET_DEMO_SEED": "5",
            **{f"SQUARENET_DEMO_{k.upper()}": v for k, v in job.items()},
        }
    )
    return env


def marked_processes(marker: str) -> list[int]:
    """Every live process that descends from the demo (it inherited the marker)."""
    return processes_marked(marker, MARK)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_nothing_left(env: dict[str, str], output: str) -> None:
    assert marked_processes(env[MARK]) == []
    for pid in (int(p) for p in re.findall(r"\(pid (\d+),", output)):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for name in ("TRAINER_PORT", "PREDICTOR_PORT", "METRICS_PORT"):
        assert not listening(int(env[f"SQUARENET_DEMO_{name}"]))


@pytest.mark.slow
def test_demo_prints_the_table_writes_plots_and_stops_everything(tmp_path: Path) -> None:
    env = demo_env(secrets.token_hex(8))
    done = subprocess.run(
        [sys.executable, str(DEMO)], cwd=tmp_path, env=env, check=False, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "predictions of model version 1" in out
    rows = [line for line in out.splitlines() if line.rstrip(" │").endswith(("inside", "domain"))]
    assert len(rows) == 9
    outside = [line for line in rows if "outside training domain" in line]
    assert len(outside) == 4  # -10, -7.5, 7.5, 10; ±5 is the edge of the domain, inside
    assert "mse_in_domain" in out and "mse_out_of_domain" in out
    for name in ("loss.png", "fit.png"):
        assert (tmp_path / "var" / "plots" / name).read_bytes().startswith(PNG_MAGIC)
    assert "var/plots/loss.png" in out
    assert (tmp_path / "var" / "logs" / "trainer.log").stat().st_size > 0
    assert (tmp_path / "var" / "logs" / "predictor.log").stat().st_size > 0
    assert "stopped squarenet-trainer and squarenet-predictor" in out
    assert_nothing_left(env, out)


@pytest.mark.slow
def test_ctrl_c_during_training_stops_everything(tmp_path: Path) -> None:
    env = demo_env(secrets.token_hex(8), epochs="10000", batch_size="1")
    lines: list[str] = []
    demo = subprocess.Popen(
        [sys.executable, str(DEMO)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("submitted job"):
                break
        assert lines and lines[-1].startswith("submitted job"), "".join(lines)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=patient(120))
    finally:
        demo.kill()
    output = "".join(lines) + rest
    assert demo.returncode == 130, output
    assert "interrupted" in rest
    assert_nothing_left(env, output)


def test_a_busy_port_fails_at_once_with_a_clear_message(tmp_path: Path) -> None:
    env = demo_env(secrets.token_hex(8))
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", int(env["SQUARENET_DEMO_TRAINER_PORT"])))
        busy.listen()
        done = subprocess.run(
            [sys.executable, str(DEMO)], cwd=tmp_path, env=env, check=False, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"demo: failed: port {env['SQUARENET_DEMO_TRAINER_PORT']} is in use; stop what listens "
        "there or choose other ports (SQUARENET_DEMO_TRAINER_PORT, _PREDICTOR_PORT, "
        "_METRICS_PORT)\n"
    )
    assert "started" not in done.stdout
    wait_for(lambda: marked_processes(env[MARK]) == [], 5, "no process left")


def test_a_store_that_cannot_be_created_fails_with_a_clear_message(tmp_path: Path) -> None:
    env = demo_env(secrets.token_hex(8))
    (tmp_path / "occupied").write_text("a file where the store should go\n")
    env["SQUARENET_DEMO_STORE"] = "occupied"
    done = subprocess.run(
        [sys.executable, str(DEMO)], check=False, cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "demo: failed: cannot create occupied: File exists\n"
    assert "started" not in done.stdout
