from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetConfigRequest(_message.Message):
    __slots__ = ("access_key",)
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    access_key: str
    def __init__(self, access_key: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("bytes_per_second", "events_per_second")
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    bytes_per_second: int
    events_per_second: int
    def __init__(self, bytes_per_second: _Optional[int] = ..., events_per_second: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("stream", "sinks")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SINKS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    sinks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stream: _Optional[str] = ..., sinks: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentConfigResponse(_message.Message):
    __slots__ = ("access_key", "enabled", "shards", "limits", "routes", "version")
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    access_key: str
    enabled: bool
    shards: int
    limits: Limits
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    version: int
    def __init__(self, access_key: _Optional[str] = ..., enabled: _Optional[bool] = ..., shards: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...
