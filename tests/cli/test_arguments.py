"""Argument parsing: flags to request bodies, environment defaults, usage errors (exit 2)."""

from __future__ import annotations

import pytest

from squarenet.cli.errors import ExitCode
from squarenet.cli.hyperparameters import HYPERPARAMETERS, job_body
from squarenet.cli.main import DEFAULT_PREDICTOR, DEFAULT_TRAINER, build_parser, run


def test_train_sends_only_the_flags_given() -> None:
    args = build_parser({}).parse_args(["train", "--epochs", "5", "--mid-range", "4.5"])
    assert job_body(args) == {"epochs": 5, "mid_range": 4.5}
    assert job_body(build_parser({}).parse_args(["train"])) == {}


def test_every_hyperparameter_has_a_flag() -> None:
    argv = ["train"]
    values = {"init": "glorot", "model_name": "other"}
    for item in HYPERPARAMETERS:
        argv += [item.flag, values.get(item.name, "3")]
    body = job_body(build_parser({}).parse_args(argv))
    assert set(body) == {item.name for item in HYPERPARAMETERS}
    assert body["n_samples"] == 3 and body["learning_rate"] == 3.0 and body["init"] == "glorot"


def test_connection_defaults_and_environment() -> None:
    args = build_parser({}).parse_args(["jobs"])
    assert (args.trainer, args.predictor, args.token) == (DEFAULT_TRAINER, DEFAULT_PREDICTOR, None)
    env = {
        "SQUARENET_TRAINER_URL": "http://trainer:9000",
        "SQUARENET_PREDICTOR": "predictor:6000",
        "SQUARENET_API_TOKEN": "s3cret",
    }
    args = build_parser(env).parse_args(["jobs"])
    assert (args.trainer, args.predictor, args.token) == (
        "http://trainer:9000",
        "predictor:6000",
        "s3cret",
    )
    args = build_parser(env).parse_args(["--trainer", "http://other:1", "jobs"])
    assert args.trainer == "http://other:1"


def test_predict_takes_negative_numbers_as_values() -> None:
    args = build_parser({}).parse_args(["predict", "-10", "-7.5", "0", "2.5", "--version", "3"])
    assert args.xs == [-10.0, -7.5, 0.0, 2.5]
    assert args.version == 3


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "COMMAND"),
        (["fly"], "invalid choice"),
        (["train", "--epochs", "many"], "--epochs"),
        (["train", "--learning-rate", "nan"], "must be finite"),
        (["train", "--mid-range", "inf"], "must be finite"),
        (["predict"], "X"),
        (["predict", "two"], "invalid float"),
        (["predict", "1", "--version", "0"], "at least 1"),
        (["watch", "--count", "-1"], "--count"),
        (["--timeout", "0", "jobs"], "--timeout"),
        (["job"], "ID"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        run(argv, env={})
    assert stopped.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--trainer", "localhost:8080", "jobs"], "invalid trainer URL"),
        (["--trainer", "ftp://host/", "models"], "invalid trainer URL"),
        (["--predictor", "localhost", "predict", "1"], "invalid predictor address"),
        (["--predictor", "host:99999", "watch"], "invalid predictor address"),
        (["job", ".."], "invalid identifier"),
    ],
)
def test_bad_addresses_are_usage_errors(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv, env={}) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
