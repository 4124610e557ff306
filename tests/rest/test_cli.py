"""``squarenet-trainer`` refuses bad configuration before starting anything (exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from squarenet.stack import command_of
from trainer_service.api.app import create_app
from trainer_service.api.gunicorn_conf import gunicorn_options
from trainer_service.cli import FLAGS, parse_args
from trainer_service.settings import Settings


def test_every_flag_is_a_setting_and_so_an_environment_variable() -> None:
    for field, *_ in FLAGS.values():
        assert field in Settings.model_fields


def test_flags_given_override_only_what_they_name() -> None:
    given, level = parse_args(["--model-store", "/srv/store", "--workers", "3"])
    assert given == {"model_store": "/srv/store", "workers": 3}
    assert level == "INFO"


def test_environment_fills_what_flags_leave_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUARENET_MAX_CONCURRENT_JOBS", "2")
    monkeypatch.setenv("SQUARENET_PORT", "9000")
    settings = Settings.model_validate({"model_store": Path("store"), "port": 9100})
    assert settings.max_concurrent_jobs == 2
    assert settings.port == 9100
    assert settings.model_store.is_absolute()


@pytest.mark.parametrize(
    ("environment", "bound"),
    [
        ({}, "127.0.0.1"),  # no token: anyone who reaches the port could queue jobs
        ({"SQUARENET_API_TOKEN": "   "}, "127.0.0.1"),  # blank is no token
        ({"SQUARENET_API_TOKEN": "s3cret"}, "0.0.0.0"),
        ({"SQUARENET_HOST": "0.0.0.0"}, "0.0.0.0"),  # said outright: as the images do
        ({"SQUARENET_API_TOKEN": "s3cret", "SQUARENET_HOST": "::1"}, "[::1]"),
    ],
)
def test_without_a_token_the_trainer_listens_on_loopback_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environment: dict[str, str], bound: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.model_validate({"model_store": tmp_path})
    assert gunicorn_options(settings, "INFO")["bind"] == [f"{bound}:{settings.port}"]


def test_bad_configuration_exits_2_naming_the_setting(tmp_path: Path) -> None:
    bad_port = subprocess.run(
        [*command_of("squarenet-trainer"), "--model-store", str(tmp_path / "s"), "--port", "70000"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert bad_port.returncode == 2
    assert "port" in bad_port.stderr and "SQUARENET_PORT" in bad_port.stderr

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    bad_store = subprocess.run(
        [*command_of("squarenet-trainer"), "--model-store", str(not_a_folder)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert bad_store.returncode == 2
    assert "model store" in bad_store.stderr

    missing = subprocess.run(
        command_of("squarenet-trainer"),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert missing.returncode == 2
    assert "model_store" in missing.stderr


def test_kubernetes_executor_without_a_cluster_configuration_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "kubeconfig"
    empty.write_text("")
    outside = subprocess.run(
        [*command_of("squarenet-trainer"), "--model-store", str(tmp_path / "s"),
         "--executor", "kubernetes", "--kubeconfig", str(empty)],
        capture_output=True, check=False, text=True, timeout=60,
    )  # fmt: skip
    assert outside.returncode == 2, outside.stderr
    assert "--executor kubernetes" in outside.stderr and "--kubeconfig" in outside.stderr
    assert "Traceback" not in outside.stderr


def test_keep_finished_jobs_reaches_the_job_book(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQUARENET_KEEP_FINISHED_JOBS", "7")
    app = create_app(Settings.model_validate({"model_store": tmp_path / "store"}))
    assert app.extensions["squarenet"].book.keep_finished == 7
