from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("timestamp", "source_id", "instance_id", "tags", "log", "counter", "gauge", "timer", "event", "span")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    GAUGE_FIELD_NUMBER: _ClassVar[int]
    TIMER_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    source_id: str
    instance_id: str
    tags: _containers.ScalarMap[str, str]
    log: Log
    counter: Counter
    gauge: Gauge
    timer: Timer
    event: Event
    span: Span
    def __init__(self, timestamp: _Optional[int] = ..., source_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., log: _Optional[_Union[Log, _Mapping]] = ..., counter: _Optional[_Union[Counter, _Mapping]] = ..., gauge: _Optional[_Union[Gauge, _Mapping]] = ..., timer: _Optional[_Union[Timer, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., span: _Optional[_Union[Span, _Mapping]] = ...) -> None: ...

class Log(_message.Message):
    __slots__ = ("payload", "type")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUT: _ClassVar[Log.Type]
        ERR: _ClassVar[Log.Type]
    OUT: Log.Type
    ERR: Log.Type
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    type: Log.Type
    def __init__(self, payload: _Optional[bytes] = ..., type: _Optional[_Union[Log.Type, str]] = ...) -> None: ...

class Counter(_message.Message):
    __slots__ = ("name", "delta", "total")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    delta: int
    total: int
    def __init__(self, name: _Optional[str] = ..., delta: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class GaugeValue(_message.Message):
    __slots__ = ("unit", "value")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    unit: str
    value: float
    def __init__(self, unit: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class Gauge(_message.Message):
    __slots__ = ("metrics",)
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: GaugeValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[GaugeValue, _Mapping]] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.MessageMap[str, GaugeValue]
    def __init__(self, metrics: _Optional[_Mapping[str, GaugeValue]] = ...) -> None: ...

class Timer(_message.Message):
    __slots__ = ("name", "start", "stop")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    name: str
    start: int
    stop: int
    def __init__(self, name: _Optional[str] = ..., start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("title", "body")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start", "end", "status", "status_message")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[Span.Kind]
        INTERNAL: _ClassVar[Span.Kind]
        SERVER: _ClassVar[Span.Kind]
        CLIENT: _ClassVar[Span.Kind]
        PRODUCER: _ClassVar[Span.Kind]
        CONSUMER: _ClassVar[Span.Kind]
    UNSPECIFIED: Span.Kind
    INTERNAL: Span.Kind
    SERVER: Span.Kind
    CLIENT: Span.Kind
    PRODUCER: Span.Kind
    CONSUMER: Span.Kind
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSET: _ClassVar[Span.Status]
        OK: _ClassVar[Span.Status]
        ERROR: _ClassVar[Span.Status]
    UNSET: Span.Status
    OK: Span.Status
    ERROR: Span.Status
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: Span.Kind
    start: int
    end: int
    status: Span.Status
    status_message: str
    def __init__(self, trace_id: _Optional[bytes] = ..., span_id: _Optional[bytes] = ..., parent_span_id: _Optional[bytes] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[Span.Kind, str]] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., status: _Optional[_Union[Span.Status, str]] = ..., status_message: _Optional[str] = ...) -> None: ...

class EnvelopeBatch(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: _containers.RepeatedCompositeFieldContainer[Envelope]
    def __init__(self, batch: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ...) -> None: ...
