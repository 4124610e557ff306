from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("x", "version", "version_label")
    X_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    x: _containers.RepeatedScalarFieldContainer[float]
    version: int
    version_label: str
    def __init__(self, x: _Optional[_Iterable[float]] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("y", "version", "extrapolated")
    Y_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXTRAPOLATED_FIELD_NUMBER: _ClassVar[int]
    y: _containers.RepeatedScalarFieldContainer[float]
    version: int
    extrapolated: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, y: _Optional[_Iterable[float]] = ..., version: _Optional[int] = ..., extrapolated: _Optional[_Iterable[bool]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Model(_message.Message):
    __slots__ = ("version", "domain_min", "domain_max", "created_at", "job_id", "metrics", "loaded_versions", "labels", "serving_label", "model_name")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_MIN_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_MAX_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SERVING_LABEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    version: int
    domain_min: float
    domain_max: float
    created_at: str
    job_id: str
    metrics: _containers.ScalarMap[str, float]
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    labels: _containers.ScalarMap[str, int]
    serving_label: str
    model_name: str
    def __init__(self, version: _Optional[int] = ..., domain_min: _Optional[float] = ..., domain_max: _Optional[float] = ..., created_at: _Optional[str] = ..., job_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., labels: _Optional[_Mapping[str, int]] = ..., serving_label: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...
