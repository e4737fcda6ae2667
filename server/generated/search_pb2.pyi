from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Filter(_message.Message):
    __slots__ = ("must", "should", "must_not", "key", "match", "range")
    MUST_FIELD_NUMBER: _ClassVar[int]
    SHOULD_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    must: _containers.RepeatedCompositeFieldContainer[Filter]
    should: _containers.RepeatedCompositeFieldContainer[Filter]
    must_not: _containers.RepeatedCompositeFieldContainer[Filter]
    key: str
    match: Match
    range: Range
    def __init__(self, must: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., should: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., must_not: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., key: _Optional[str] = ..., match: _Optional[_Union[Match, _Mapping]] = ..., range: _Optional[_Union[Range, _Mapping]] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("value", "any")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    value: _struct_pb2.Value
    any: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., any: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("gt", "gte", "lt", "lte")
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    gt: float
    gte: float
    lt: float
    lte: float
    def __init__(self, gt: _Optional[float] = ..., gte: _Optional[float] = ..., lt: _Optional[float] = ..., lte: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "k", "min_score", "labels", "filter", "id", "collection")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    text: str
    k: int
    min_score: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    id: str
    collection: str
    def __init__(self, text: _Optional[str] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., id: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("id", "text", "label", "score", "distance", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    label: str
    score: float
    distance: float
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., distance: _Optional[float] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("neighbors", "index_version")
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    index_version: str
    def __init__(self, neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("texts", "k", "min_score", "labels", "filter", "collection")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    k: int
    min_score: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    collection: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., collection: _Optional[str] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results", "index_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    index_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("text", "k", "min_score", "filter", "collection")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    text: str
    k: int
    min_score: float
    filter: Filter
    collection: str
    def __init__(self, text: _Optional[str] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., collection: _Optional[str] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("label", "confidence", "scores", "neighbors", "index_version", "abstained", "voted_label", "out_of_domain", "abstention_reason")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    ABSTAINED_FIELD_NUMBER: _ClassVar[int]
    VOTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ABSTENTION_REASON_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    index_version: str
    abstained: bool
    voted_label: str
    out_of_domain: bool
    abstention_reason: str
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., index_version: _Optional[str] = ..., abstained: _Optional[bool] = ..., voted_label: _Optional[str] = ..., out_of_domain: _Optional[bool] = ..., abstention_reason: _Optional[str] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("texts", "k", "min_score", "filter", "collection")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    k: int
    min_score: float
    filter: Filter
    collection: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., collection: _Optional[str] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("results", "index_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PredictResponse]
    index_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[PredictResponse, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class LabelCount(_message.Message):
    __slots__ = ("label", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    count: int
    def __init__(self, label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("model_fingerprint", "model_directory", "encoder_name", "encoder_version", "encoder_weights_sha256", "index_version", "index_directory", "index_type", "count", "dim", "labels", "index_params", "max_k", "max_text_chars", "max_batch", "server_version", "loaded_at", "max_text_tokens", "max_call_tokens", "last_reload_error", "last_reload_error_at", "max_call_chars", "pending_writes", "last_commit_error", "last_commit_error_at", "abstention", "retained_versions")
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
    ABSTENTION_FIELD_NUMBER: _ClassVar[int]
    RETAINED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
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
    abstention: AbstentionRule
    retained_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_fingerprint: _Optional[str] = ..., model_directory: _Optional[str] = ..., encoder_name: _Optional[str] = ..., encoder_version: _Optional[str] = ..., encoder_weights_sha256: _Optional[str] = ..., index_version: _Optional[str] = ..., index_directory: _Optional[str] = ..., index_type: _Optional[str] = ..., count: _Optional[int] = ..., dim: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[LabelCount, _Mapping]]] = ..., index_params: _Optional[_Mapping[str, str]] = ..., max_k: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_batch: _Optional[int] = ..., server_version: _Optional[str] = ..., loaded_at: _Optional[str] = ..., max_text_tokens: _Optional[int] = ..., max_call_tokens: _Optional[int] = ..., last_reload_error: _Optional[str] = ..., last_reload_error_at: _Optional[str] = ..., max_call_chars: _Optional[int] = ..., pending_writes: _Optional[int] = ..., last_commit_error: _Optional[str] = ..., last_commit_error_at: _Optional[str] = ..., abstention: _Optional[_Union[AbstentionRule, _Mapping]] = ..., retained_versions: _Optional[_Iterable[str]] = ...) -> None: ...

class AbstentionRule(_message.Message):
    __slots__ = ("threshold", "threshold_rule", "domain_meaning", "domain_served", "domain_rule", "source", "features")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_RULE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_MEANING_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_SERVED_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_RULE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    threshold_rule: str
    domain_meaning: float
    domain_served: float
    domain_rule: str
    source: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, threshold: _Optional[float] = ..., threshold_rule: _Optional[str] = ..., domain_meaning: _Optional[float] = ..., domain_served: _Optional[float] = ..., domain_rule: _Optional[str] = ..., source: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "collection")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    collection: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., collection: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("id", "text", "label", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    label: str
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetExamplesRequest(_message.Message):
    __slots__ = ("ids", "with_vectors", "collection")
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    with_vectors: bool
    collection: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., with_vectors: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

class StoredExample(_message.Message):
    __slots__ = ("id", "text", "label", "metadata", "vector")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    label: str
    metadata: _struct_pb2.Struct
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class GetExamplesResponse(_message.Message):
    __slots__ = ("examples", "index_version")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[StoredExample]
    index_version: str
    def __init__(self, examples: _Optional[_Iterable[_Union[StoredExample, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("filter", "limit", "page_token", "with_vectors", "collection")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    limit: int
    page_token: str
    with_vectors: bool
    collection: str
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., with_vectors: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("examples", "next_page_token", "index_version")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[StoredExample]
    next_page_token: str
    index_version: str
    def __init__(self, examples: _Optional[_Iterable[_Union[StoredExample, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., index_version: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("examples", "wait", "collection")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    wait: bool
    collection: str
    def __init__(self, examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., wait: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("ids", "label", "wait", "collection")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    label: str
    wait: bool
    collection: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ..., wait: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("committed", "index_version")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    index_version: str
    def __init__(self, committed: _Optional[bool] = ..., index_version: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "is_default", "model_directory", "model_fingerprint", "count", "labels", "index_version", "index_type", "health", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_default: bool
    model_directory: str
    model_fingerprint: str
    count: int
    labels: _containers.RepeatedCompositeFieldContainer[LabelCount]
    index_version: str
    index_type: str
    health: str
    error: str
    def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., model_directory: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., count: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[LabelCount, _Mapping]]] = ..., index_version: _Optional[str] = ..., index_type: _Optional[str] = ..., health: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "model_directory", "index_type", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_directory: str
    index_type: str
    labels: bool
    def __init__(self, name: _Optional[str] = ..., model_directory: _Optional[str] = ..., index_type: _Optional[str] = ..., labels: _Optional[bool] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("remaining",)
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    remaining: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, remaining: _Optional[_Iterable[str]] = ...) -> None: ...

class GetMapRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class MapPoint(_message.Message):
    __slots__ = ("id", "label", "text", "x", "y")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    text: str
    x: float
    y: float
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., text: _Optional[str] = ..., x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class MapResponse(_message.Message):
    __slots__ = ("points", "mean", "axis_x", "axis_y", "index_version", "count", "sampled")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    AXIS_X_FIELD_NUMBER: _ClassVar[int]
    AXIS_Y_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[MapPoint]
    mean: _containers.RepeatedScalarFieldContainer[float]
    axis_x: _containers.RepeatedScalarFieldContainer[float]
    axis_y: _containers.RepeatedScalarFieldContainer[float]
    index_version: str
    count: int
    sampled: int
    def __init__(self, points: _Optional[_Iterable[_Union[MapPoint, _Mapping]]] = ..., mean: _Optional[_Iterable[float]] = ..., axis_x: _Optional[_Iterable[float]] = ..., axis_y: _Optional[_Iterable[float]] = ..., index_version: _Optional[str] = ..., count: _Optional[int] = ..., sampled: _Optional[int] = ...) -> None: ...
