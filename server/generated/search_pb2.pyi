from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchRequest(_message.Message):
    __slots__ = ("text", "k", "min_score", "labels")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    text: str
    k: int
    min_score: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("id", "text", "label", "score", "distance")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    label: str
    score: float
    distance: float
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., distance: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("neighbors", "index_version")
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    index_version: str
    def __init__(self, neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("texts", "k", "min_score", "labels")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    k: int
    min_score: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results", "index_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    index_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("text", "k", "min_score")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    text: str
    k: int
    min_score: float
    def __init__(self, text: _Optional[str] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("label", "confidence", "scores", "neighbors", "index_version", "abstained", "voted_label")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    ABSTAINED_FIELD_NUMBER: _ClassVar[int]
    VOTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    index_version: str
    abstained: bool
    voted_label: str
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., index_version: _Optional[str] = ..., abstained: _Optional[bool] = ..., voted_label: _Optional[str] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("texts", "k", "min_score")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    k: int
    min_score: float
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("results", "index_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PredictResponse]
    index_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[PredictResponse, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelCount(_message.Message):
    __slots__ = ("label", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    count: int
    def __init__(self, label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("model_fingerprint", "model_directory", "encoder_name", "encoder_version", "encoder_weights_sha256", "index_version", "index_directory", "index_type", "count", "dim", "labels", "index_params", "max_k", "max_text_chars", "max_batch", "server_version", "loaded_at", "max_text_tokens", "max_call_tokens", "last_reload_error", "last_reload_error_at", "max_call_chars", "pending_writes", "last_commit_error", "last_commit_error_at")
    class IndexParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    ENCODER_NAME_FIELD_NUMBER: _ClassVar[int]
    ENCODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODER_WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_CALL_CHARS_FIELD_NUMBER: _ClassVar[int]
    PENDING_WRITES_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMIT_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMIT_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    model_fingerprint: str
    model_directory: str
    encoder_name: str
    encoder_version: str
    encoder_weights_sha256: str
    index_version: str
    index_directory: str
    index_type: str
    count: int
    dim: int
    labels: _containers.RepeatedCompositeFieldContainer[LabelCount]
    index_params: _containers.ScalarMap[str, str]
    max_k: int
    max_text_chars: int
    max_batch: int
    server_version: str
    loaded_at: str
    max_text_tokens: int
    max_call_tokens: int
    last_reload_error: str
    last_reload_error_at: str
    max_call_chars: int
    pending_writes: int
    last_commit_error: str
    last_commit_error_at: str
    def __init__(self, model_fingerprint: _Optional[str] = ..., model_directory: _Optional[str] = ..., encoder_name: _Optional[str] = ..., encoder_version: _Optional[str] = ..., encoder_weights_sha256: _Optional[str] = ..., index_version: _Optional[str] = ..., index_directory: _Optional[str] = ..., index_type: _Optional[str] = ..., count: _Optional[int] = ..., dim: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[LabelCount, _Mapping]]] = ..., index_params: _Optional[_Mapping[str, str]] = ..., max_k: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_batch: _Optional[int] = ..., server_version: _Optional[str] = ..., loaded_at: _Optional[str] = ..., max_text_tokens: _Optional[int] = ..., max_call_tokens: _Optional[int] = ..., last_reload_error: _Optional[str] = ..., last_reload_error_at: _Optional[str] = ..., max_call_chars: _Optional[int] = ..., pending_writes: _Optional[int] = ..., last_commit_error: _Optional[str] = ..., last_commit_error_at: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "dim", "model_fingerprint")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    dim: int
    model_fingerprint: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., dim: _Optional[int] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("changed", "index_version", "message")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    index_version: str
    message: str
    def __init__(self, changed: _Optional[bool] = ..., index_version: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Example(_message.Message):
    __slots__ = ("id", "text", "label")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    label: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("examples", "wait")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    wait: bool
    def __init__(self, examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., wait: _Optional[bool] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("ids", "committed", "index_version")
    IDS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    committed: bool
    index_version: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., committed: _Optional[bool] = ..., index_version: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids", "label", "wait")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    label: str
    wait: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ..., wait: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("committed", "index_version")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    index_version: str
    def __init__(self, committed: _Optional[bool] = ..., index_version: _Optional[str] = ...) -> None: ...
