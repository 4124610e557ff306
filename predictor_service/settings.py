"""The predictor's configuration: one typed object, read from flags and SQUARENET_* variables.

Validated at start-up so a bad value stops the process with a clear message instead of
surfacing later as a failed call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from squarenet.store import DEFAULT_MODEL_NAME, validate_label, validate_model_name

Runtime = Literal["litert", "tensorflow"]

#: Bytes a request may carry beyond its values: the version field and framing.
_REQUEST_OVERHEAD_BYTES = 1024
#: Upper bound of one encoded value: a double plus its tag when sent unpacked.
_BYTES_PER_VALUE = 9


class PredictorSettings(BaseSettings):
    """Everything ``squarenet-predictor`` can be told; each field is also ``SQUARENET_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SQUARENET_", extra="ignore", frozen=True)

    model_store: Path = Field(description="Root of the model store (may be mounted read-only).")
    host: str = Field("0.0.0.0", description="Address the gRPC server binds to.")  # noqa: S104
    port: int = Field(50051, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(
        9102, ge=0, le=65535, description="Prometheus metrics port; 0 turns metrics off."
    )
    model_name: str = Field(DEFAULT_MODEL_NAME, description="Which model of the store to serve.")
    runtime: Runtime = Field(
        "litert", description="'litert' runs model.tflite; 'tensorflow' the SavedModel."
    )
    versions: int = Field(1, ge=1, le=100, description="Newest good versions kept loaded.")
    max_batch: int = Field(100_000, ge=1, le=1_000_000, description="Most values per call.")
    poll_interval: float = Field(
        0.5, gt=0, le=3600, description="Seconds between looks at the store."
    )
    grace_period: float = Field(
        10.0, ge=0, le=300, description="Seconds in-flight calls get after SIGTERM."
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the port.")
    threads: int = Field(
        32,
        ge=2,
        le=1024,
        description="Threads per process answering large calls (the event loop answers the rest).",
    )

    max_connection_age: float = Field(
        0.0,
        ge=0,
        le=86400,
        description=(
            "Seconds after which a client connection is asked to reconnect (0: never), so "
            "clients behind a plain Kubernetes Service spread over new replicas."
        ),
    )
    serve_label: str = Field(
        "",
        description=(
            "Serve this version label's version to calls that name none (the newest while "
            "the label is not set); empty: serve the newest."
        ),
    )
    eject_window: int = Field(
        200, ge=1, le=100_000, description="Calls per route in the live MSE ejection judges."
    )
    eject_min_calls: int = Field(
        50, ge=1, le=100_000, description="Calls a route and the primary need before ejection."
    )
    eject_factor: float = Field(
        10.0,
        gt=1.0,
        le=1e9,
        description="Eject a weighted route whose live in-domain MSE exceeds the primary "
        "route's by this factor (per replica, until traffic.json changes).",
    )
    eject_failures: int = Field(
        5, ge=1, le=10_000, description="Failed calls in a row that eject a route."
    )
    reuse_port: bool = Field(
        False, description="Share the port with sibling processes (set by --workers)."
    )

    @field_validator("model_name")
    @classmethod
    def _model_name_is_safe(cls, value: str) -> str:
        return validate_model_name(value)

    @field_validator("serve_label")
    @classmethod
    def _serve_label_is_a_label(cls, value: str) -> str:
        return validate_label(value) if value else value

    @property
    def max_receive_message_length(self) -> int:
        """Largest request accepted: any encoding of ``max_batch`` values fits, more does not."""
        return self.max_batch * _BYTES_PER_VALUE + _REQUEST_OVERHEAD_BYTES

    @property
    def max_watchers(self) -> int:
        """WatchModel streams allowed at once (half the threads): each holds memory and a wake-up."""
        return max(1, self.threads // 2)

    @property
    def max_send_message_length(self) -> int:
        """Largest response: ``max_batch`` predictions and as many flags."""
        return self.max_batch * (_BYTES_PER_VALUE + 2) + _REQUEST_OVERHEAD_BYTES
