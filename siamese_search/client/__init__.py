"""A typed Python client for siamese-search: `SearchClient` (blocking) and
`AsyncSearchClient` (asyncio), one method per RPC, plain dataclasses back.

    from siamese_search.client import SearchClient, Example

    with SearchClient("127.0.0.1:50051", token=..., tls=True, ca_cert="ca.pem") as client:
        hits = client.search("speed up the parser", k=5).neighbors
        label = client.predict("fix the NPE").label
        client.upsert([Example("a new example", label="billing")], wait=True)

Every call has a timeout (`timeout=` per client, overridable per call) and is retried
with exponential backoff and jitter when the server answers UNAVAILABLE (restarting,
Milvus unreachable) or RESOURCE_EXHAUSTED (admission control), as gRPC's retry
policy would: the writes too, since they are idempotent (an `Upsert` without ids gets
ids made here, so a retried upsert cannot add a row twice). Other errors raise
`grpc.RpcError` with the server's message. Large uploads and query lists are cut into
batches of the server's limit (`upsert`, `search_many`, `predict_many`).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import json_format

from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc

RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


# ---- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Neighbor:
    id: str
    text: str
    label: str  # "" when the index has no labels
    score: float  # cosine similarity, higher is nearer
    distance: float  # 1 - score
    metadata: dict = field(default_factory=dict)  # the example's fields


@dataclass(frozen=True)
class StoredExample:
    """An example as the index stores it (GetExamples, Scroll)."""

    id: str
    text: str
    label: str
    metadata: dict
    vector: np.ndarray | None  # when asked for


@dataclass(frozen=True)
class ScrollPage:
    examples: list[StoredExample]
    next_page_token: str  # "" on the last page
    index_version: str


@dataclass(frozen=True)
class SearchResult:
    neighbors: list[Neighbor]
    index_version: str


@dataclass(frozen=True)
class Prediction:
    label: str  # "" when abstaining ("none of these")
    confidence: float
    abstained: bool
    voted_label: str
    scores: dict[str, float]  # label -> share of the vote, highest first
    neighbors: list[Neighbor]
    index_version: str


@dataclass(frozen=True)
class Example:
    """A reference text to upsert; without an id, the client makes one (a UUID)."""

    text: str
    label: str = ""
    id: str = ""
    #: fields to filter on: strings, numbers, booleans or lists of these
    metadata: dict | None = None


@dataclass(frozen=True)
class WriteResult:
    ids: list[str]  # the ids written (upsert) or asked to delete
    committed: bool  # True when the call waited until a served version held it
    index_version: str  # that version ("" when not waited for)


@dataclass(frozen=True)
class ServerInfo:
    model_fingerprint: str
    index_version: str
    index_type: str
    count: int
    dim: int
    labels: dict[str, int]  # label -> examples in the index
    max_k: int
    max_batch: int
    max_text_chars: int
    raw: pb.GetInfoResponse = field(repr=False)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delays(self) -> Iterable[float]:
        """Full-jitter exponential backoff (AWS's and gRPC's retry design)."""
        ceiling = self.initial_backoff
        for _ in range(self.attempts - 1):
            yield random.uniform(0, ceiling)
            ceiling = min(ceiling * self.multiplier, self.max_backoff)


# ---- conversions (shared by both clients) ----------------------------------------------------
def _neighbor(n: pb.Neighbor) -> Neighbor:
    fields = json_format.MessageToDict(n.metadata) if n.HasField("metadata") else {}
    return Neighbor(n.id, n.text, n.label, float(n.score), float(n.distance), fields)


def _stored(e: pb.StoredExample) -> StoredExample:
    fields = json_format.MessageToDict(e.metadata) if e.HasField("metadata") else {}
    vector = np.array(e.vector, dtype=np.float32) if len(e.vector) else None
    return StoredExample(e.id, e.text, e.label, fields, vector)


def _page(r: pb.ScrollResponse) -> ScrollPage:
    return ScrollPage([_stored(e) for e in r.examples], r.next_page_token, r.index_version)


def _with_filter(request, where: dict | None):
    """`request` with a filter in Qdrant's shape (a dict, as in the REST body)."""
    if where:
        json_format.ParseDict(where, request.filter)
    return request


def _search_result(r: pb.SearchResponse) -> SearchResult:
    return SearchResult([_neighbor(n) for n in r.neighbors], r.index_version)


def _prediction(r: pb.PredictResponse) -> Prediction:
    return Prediction(
        label=r.label,
        confidence=float(r.confidence),
        abstained=r.abstained,
        voted_label=r.voted_label,
        scores={s.label: float(s.score) for s in r.scores},
        neighbors=[_neighbor(n) for n in r.neighbors],
        index_version=r.index_version,
    )


def _info(r: pb.GetInfoResponse) -> ServerInfo:
    return ServerInfo(
        model_fingerprint=r.model_fingerprint,
        index_version=r.index_version,
        index_type=r.index_type,
        count=int(r.count),
        dim=int(r.dim),
        labels={c.label: int(c.count) for c in r.labels},
        max_k=int(r.max_k),
        max_batch=int(r.max_batch),
        max_text_chars=int(r.max_text_chars),
        raw=r,
    )


def _search_request(text, k, labels, min_score, where=None, row_id="") -> pb.SearchRequest:
    request = pb.SearchRequest(text=text, k=k, labels=list(labels), id=row_id)
    if min_score is not None:
        request.min_score = min_score
    return _with_filter(request, where)


def _search_batch_request(texts, k, labels, min_score, where=None) -> pb.SearchBatchRequest:
    request = pb.SearchBatchRequest(texts=list(texts), k=k, labels=list(labels))
    if min_score is not None:
        request.min_score = min_score
    return _with_filter(request, where)


def _predict_request(text, k, min_score, where=None) -> pb.PredictRequest:
    request = pb.PredictRequest(text=text, k=k)
    if min_score is not None:
        request.min_score = min_score
    return _with_filter(request, where)


def _predict_batch_request(texts, k, min_score, where=None) -> pb.PredictBatchRequest:
    request = pb.PredictBatchRequest(texts=list(texts), k=k)
    if min_score is not None:
        request.min_score = min_score
    return _with_filter(request, where)


def _scroll_request(where, limit, page_token, with_vectors) -> pb.ScrollRequest:
    request = pb.ScrollRequest(limit=limit, page_token=page_token, with_vectors=with_vectors)
    return _with_filter(request, where)


def _delete_requests(
    ids: Sequence[str], label: str, wait: bool, batch_size: int
) -> list[pb.DeleteRequest]:
    """One DeleteRequest per `batch_size` ids (the label goes with the last one)."""
    parts = [list(part) for part in _chunks(list(ids), batch_size)] or [[]]
    return [
        pb.DeleteRequest(ids=part, label=label if last else "", wait=wait)
        for last, part in ((n == len(parts) - 1, part) for n, part in enumerate(parts))
    ]


def _with_ids(examples: Sequence[Example | str]) -> list[Example]:
    """Examples with an id each (made here when missing, so retries are idempotent)."""
    out = []
    for example in examples:
        if isinstance(example, str):
            example = Example(example)
        out.append(
            example
            if example.id
            else Example(example.text, example.label, uuid.uuid4().hex, example.metadata)
        )
    return out


def _upsert_request(examples: Sequence[Example], wait: bool) -> pb.UpsertRequest:
    request = pb.UpsertRequest(wait=wait)
    for e in examples:
        example = request.examples.add(id=e.id, text=e.text, label=e.label)
        if e.metadata:
            example.metadata.update(e.metadata)
    return request


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), max(size, 1)):
        yield items[start : start + size]


def _channel_credentials(tls: bool, ca_cert: str | Path | None):
    if not tls and ca_cert is None:
        return None
    root = Path(ca_cert).read_bytes() if ca_cert is not None else None
    return grpc.ssl_channel_credentials(root_certificates=root)


def _name_collection(request, collection: str) -> None:
    """Requests name the client's collection unless they name one already."""
    if collection and "collection" in request.DESCRIPTOR.fields_by_name and not request.collection:
        request.collection = collection


#: a response may be as large as the server chooses to send (siamese-serve: 64 MiB):
#: gRPC's default of 4 MiB made every Search whose neighbours held one long stored text
#: fail (RESOURCE_EXHAUSTED on the client, then retried as if the server were busy)
RECEIVE_ANY_SIZE = ("grpc.max_receive_message_length", -1)


def _channel_options(options: Sequence[tuple[str, object]]) -> list[tuple[str, object]]:
    """The caller's channel options, receiving responses of any size unless they say."""
    given = list(options)
    if any(name == RECEIVE_ANY_SIZE[0] for name, _ in given):
        return given
    return [RECEIVE_ANY_SIZE, *given]


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


# ---- the blocking client ---------------------------------------------------------------------
class SearchClient:
    """Blocking client; thread-safe (one channel, shared)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        ca_cert: str | Path | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        batch_size: int = 256,
        options: Sequence[tuple[str, object]] = (),
        collection: str = "",
    ):
        """`collection`: the collection every call names (empty: the server's default)."""
        credentials = _channel_credentials(tls, ca_cert)
        self._channel = (
            grpc.secure_channel(target, credentials, options=_channel_options(options))
            if credentials is not None
            else grpc.insecure_channel(target, options=_channel_options(options))
        )
        self._stub = pb_grpc.SearchServiceStub(self._channel)
        self._metadata = _metadata(token)
        self.timeout = timeout
        self.retry = retry
        self.batch_size = batch_size
        self.collection = collection

    def _call(self, method: Callable, request, timeout: float | None):
        _name_collection(request, self.collection)
        delays = iter(self.retry.delays())
        while True:
            try:
                return method(
                    request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata,
                )
            except grpc.RpcError as error:
                delay = next(delays, None)
                if error.code() not in RETRIED or delay is None:
                    raise
                time.sleep(delay)

    # ---- queries ----
    def search(
        self,
        text: str,
        k: int = 10,
        labels: Sequence[str] = (),
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> SearchResult:
        return _search_result(
            self._call(
                self._stub.Search, _search_request(text, k, labels, min_score, filter), timeout
            )
        )

    def search_many(
        self,
        texts: Sequence[str],
        k: int = 10,
        labels: Sequence[str] = (),
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> list[SearchResult]:
        """Any number of texts, in batches of `batch_size`; results in order."""
        results: list[SearchResult] = []
        for part in _chunks(list(texts), self.batch_size):
            request = _search_batch_request(part, k, labels, min_score, filter)
            response = self._call(self._stub.SearchBatch, request, timeout)
            results += [_search_result(r) for r in response.results]
        return results

    def predict(
        self,
        text: str,
        k: int = 10,
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> Prediction:
        return _prediction(
            self._call(self._stub.Predict, _predict_request(text, k, min_score, filter), timeout)
        )

    def predict_many(
        self,
        texts: Sequence[str],
        k: int = 10,
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> list[Prediction]:
        results: list[Prediction] = []
        for part in _chunks(list(texts), self.batch_size):
            request = _predict_batch_request(part, k, min_score, filter)
            response = self._call(self._stub.PredictBatch, request, timeout)
            results += [_prediction(r) for r in response.results]
        return results

    def search_like(
        self,
        id: str,
        k: int = 10,
        labels: Sequence[str] = (),
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> SearchResult:
        """The examples most like the stored one with this id (which is left out)."""
        request = _search_request("", k, labels, min_score, filter, row_id=id)
        return _search_result(self._call(self._stub.Search, request, timeout))

    def get(
        self, ids: Sequence[str], with_vectors: bool = False, timeout: float | None = None
    ) -> list[StoredExample]:
        """The stored examples with these ids, in order (ids not held: left out)."""
        found: list[StoredExample] = []
        for part in _chunks(list(ids), self.batch_size):
            request = pb.GetExamplesRequest(ids=list(part), with_vectors=with_vectors)
            found += [
                _stored(e) for e in self._call(self._stub.GetExamples, request, timeout).examples
            ]
        return found

    def scroll(
        self,
        filter: dict | None = None,
        limit: int = 0,
        page_token: str = "",
        with_vectors: bool = False,
        timeout: float | None = None,
    ) -> ScrollPage:
        """One page of the stored examples that pass `filter`."""
        request = _scroll_request(filter, limit, page_token, with_vectors)
        return _page(self._call(self._stub.Scroll, request, timeout))

    def scroll_all(
        self, filter: dict | None = None, limit: int = 0, with_vectors: bool = False
    ) -> Iterable[StoredExample]:
        """Every stored example that passes `filter`, each once (one index version)."""
        token = ""
        while True:
            page = self.scroll(filter, limit, token, with_vectors)
            yield from page.examples
            if not page.next_page_token:
                return
            token = page.next_page_token

    def embed(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        rows = []
        for part in _chunks(list(texts), self.batch_size):
            response = self._call(self._stub.Embed, pb.EmbedRequest(texts=list(part)), timeout)
            rows += [list(e.values) for e in response.embeddings]
        return np.asarray(rows, dtype=np.float32)

    def info(self, timeout: float | None = None) -> ServerInfo:
        return _info(self._call(self._stub.GetInfo, pb.GetInfoRequest(), timeout))

    # ---- admin ----
    def reload(self, timeout: float | None = None) -> pb.ReloadResponse:
        return self._call(self._stub.Reload, pb.ReloadRequest(), timeout)

    def upsert(
        self, examples: Sequence[Example | str], wait: bool = False, timeout: float | None = None
    ) -> WriteResult:
        """Add or replace examples (by id), in batches of `batch_size`; `wait`: return
        once a served version holds them (else once the server has them durably)."""
        prepared = _with_ids(examples)
        version = ""
        committed = True
        for part in _chunks(prepared, self.batch_size):
            response = self._call(self._stub.Upsert, _upsert_request(part, wait), timeout)
            version, committed = response.index_version, committed and response.committed
        return WriteResult([e.id for e in prepared], committed and wait, version)

    def delete(
        self,
        ids: Sequence[str] = (),
        label: str = "",
        wait: bool = False,
        timeout: float | None = None,
    ) -> WriteResult:
        """Remove examples by id (in calls of at most `batch_size` ids, the server's
        limit), and/or every example of `label`."""
        responses = [
            self._call(self._stub.Delete, request, timeout)
            for request in _delete_requests(ids, label, wait, self.batch_size)
        ]
        committed = all(r.committed for r in responses)
        return WriteResult(list(ids), committed, responses[-1].index_version)

    # ---- collections ----
    def collections(self, timeout: float | None = None) -> list[pb.CollectionInfo]:
        """The collections the server serves."""
        request = pb.ListCollectionsRequest()
        return list(self._call(self._stub.ListCollections, request, timeout).collections)

    def create_collection(
        self,
        name: str,
        model_directory: str,
        index_type: str = "",
        labels: bool = True,
        timeout: float | None = None,
    ) -> pb.CollectionInfo:
        """A new, empty collection with this model (a directory on the server); admin."""
        request = pb.CreateCollectionRequest(
            name=name, model_directory=str(model_directory), index_type=index_type, labels=labels
        )
        return self._call(self._stub.CreateCollection, request, timeout)

    def drop_collection(self, name: str, timeout: float | None = None) -> list[str]:
        """Stop serving a collection and remove its files; the ones left. Admin."""
        request = pb.DropCollectionRequest(name=name)
        return list(self._call(self._stub.DropCollection, request, timeout).remaining)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---- the asyncio twin ------------------------------------------------------------------------
class AsyncSearchClient:
    """The same calls as `SearchClient`, as coroutines (grpc.aio); use in one event loop."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        ca_cert: str | Path | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        batch_size: int = 256,
        options: Sequence[tuple[str, object]] = (),
        collection: str = "",
    ):
        """`collection`: the collection every call names (empty: the server's default)."""
        credentials = _channel_credentials(tls, ca_cert)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=_channel_options(options))
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=_channel_options(options))
        )
        self._stub = pb_grpc.SearchServiceStub(self._channel)
        self._metadata = _metadata(token)
        self.timeout = timeout
        self.retry = retry
        self.batch_size = batch_size
        self.collection = collection

    async def _call(self, method: Callable, request, timeout: float | None):
        _name_collection(request, self.collection)
        delays = iter(self.retry.delays())
        while True:
            try:
                return await method(
                    request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata,
                )
            except grpc.RpcError as error:
                delay = next(delays, None)
                if error.code() not in RETRIED or delay is None:
                    raise
                await asyncio.sleep(delay)

    async def search(
        self,
        text: str,
        k: int = 10,
        labels: Sequence[str] = (),
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> SearchResult:
        request = _search_request(text, k, labels, min_score, filter)
        return _search_result(await self._call(self._stub.Search, request, timeout))

    async def search_many(
        self,
        texts: Sequence[str],
        k: int = 10,
        labels: Sequence[str] = (),
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> list[SearchResult]:
        results: list[SearchResult] = []
        for part in _chunks(list(texts), self.batch_size):
            request = _search_batch_request(part, k, labels, min_score, filter)
            response = await self._call(self._stub.SearchBatch, request, timeout)
            results += [_search_result(r) for r in response.results]
        return results

    async def predict(
        self,
        text: str,
        k: int = 10,
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> Prediction:
        request = _predict_request(text, k, min_score, filter)
        return _prediction(await self._call(self._stub.Predict, request, timeout))

    async def predict_many(
        self,
        texts: Sequence[str],
        k: int = 10,
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> list[Prediction]:
        results: list[Prediction] = []
        for part in _chunks(list(texts), self.batch_size):
            request = _predict_batch_request(part, k, min_score, filter)
            response = await self._call(self._stub.PredictBatch, request, timeout)
            results += [_prediction(r) for r in response.results]
        return results

    async def search_like(
        self,
        id: str,
        k: int = 10,
        labels: Sequence[str] = (),
        min_score=None,
        timeout: float | None = None,
        filter: dict | None = None,
    ) -> SearchResult:
        request = _search_request("", k, labels, min_score, filter, row_id=id)
        return _search_result(await self._call(self._stub.Search, request, timeout))

    async def get(
        self, ids: Sequence[str], with_vectors: bool = False, timeout: float | None = None
    ) -> list[StoredExample]:
        found: list[StoredExample] = []
        for part in _chunks(list(ids), self.batch_size):
            request = pb.GetExamplesRequest(ids=list(part), with_vectors=with_vectors)
            response = await self._call(self._stub.GetExamples, request, timeout)
            found += [_stored(e) for e in response.examples]
        return found

    async def scroll(
        self,
        filter: dict | None = None,
        limit: int = 0,
        page_token: str = "",
        with_vectors: bool = False,
        timeout: float | None = None,
    ) -> ScrollPage:
        request = _scroll_request(filter, limit, page_token, with_vectors)
        return _page(await self._call(self._stub.Scroll, request, timeout))

    async def scroll_all(
        self, filter: dict | None = None, limit: int = 0, with_vectors: bool = False
    ) -> AsyncIterator[StoredExample]:
        """Every stored example that passes `filter`, each once (one index version)."""
        token = ""
        while True:
            page = await self.scroll(filter, limit, token, with_vectors)
            for example in page.examples:
                yield example
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def embed(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        rows = []
        for part in _chunks(list(texts), self.batch_size):
            request = pb.EmbedRequest(texts=list(part))
            response = await self._call(self._stub.Embed, request, timeout)
            rows += [list(e.values) for e in response.embeddings]
        return np.asarray(rows, dtype=np.float32)

    async def info(self, timeout: float | None = None) -> ServerInfo:
        return _info(await self._call(self._stub.GetInfo, pb.GetInfoRequest(), timeout))

    async def reload(self, timeout: float | None = None) -> pb.ReloadResponse:
        return await self._call(self._stub.Reload, pb.ReloadRequest(), timeout)

    async def upsert(
        self, examples: Sequence[Example | str], wait: bool = False, timeout: float | None = None
    ) -> WriteResult:
        prepared = _with_ids(examples)
        version = ""
        committed = True
        for part in _chunks(prepared, self.batch_size):
            request = _upsert_request(part, wait)
            response = await self._call(self._stub.Upsert, request, timeout)
            version, committed = response.index_version, committed and response.committed
        return WriteResult([e.id for e in prepared], committed and wait, version)

    async def delete(
        self,
        ids: Sequence[str] = (),
        label: str = "",
        wait: bool = False,
        timeout: float | None = None,
    ) -> WriteResult:
        responses = [
            await self._call(self._stub.Delete, request, timeout)
            for request in _delete_requests(ids, label, wait, self.batch_size)
        ]
        committed = all(r.committed for r in responses)
        return WriteResult(list(ids), committed, responses[-1].index_version)

    async def collections(self, timeout: float | None = None) -> list[pb.CollectionInfo]:
        request = pb.ListCollectionsRequest()
        return list((await self._call(self._stub.ListCollections, request, timeout)).collections)

    async def create_collection(
        self,
        name: str,
        model_directory: str,
        index_type: str = "",
        labels: bool = True,
        timeout: float | None = None,
    ) -> pb.CollectionInfo:
        request = pb.CreateCollectionRequest(
            name=name, model_directory=str(model_directory), index_type=index_type, labels=labels
        )
        return await self._call(self._stub.CreateCollection, request, timeout)

    async def drop_collection(self, name: str, timeout: float | None = None) -> list[str]:
        request = pb.DropCollectionRequest(name=name)
        return list((await self._call(self._stub.DropCollection, request, timeout)).remaining)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncSearchClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
