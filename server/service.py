"""The SearchService servicer: validate, embed, search, vote, convert.

Errors map to status codes in one place (`_call`): bad input -> INVALID_ARGUMENT, a
label filter naming a label the index does not hold -> NOT_FOUND,
no index loaded -> UNAVAILABLE (a retry can succeed), an unlabelled index asked to
predict -> FAILED_PRECONDITION, an expired deadline -> DEADLINE_EXCEEDED, anything
else -> INTERNAL with the details logged, not sent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from importlib import metadata

import grpc
import numpy as np

from siamese_search.core.abstention import predict_queries
from siamese_search.core.errors import DamagedArtifactError, UserError
from siamese_search.indexer.metadata import Filter, FilterError, MetadataError
from siamese_search.indexer.store import (
    BackendUnavailableError,
    Hit,
    ServedVersion,
    UnknownLabelError,
)
from siamese_search.server import scrolling
from siamese_search.server import validation as check
from siamese_search.server.answer_size import AnswerSize
from siamese_search.server.batching import Batcher, CallGone
from siamese_search.server.collections import (
    Collection,
    CollectionNotFound,
    CollectionRefused,
    Collections,
)
from siamese_search.server.config import Limits
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from siamese_search.server.metrics import Metrics
from siamese_search.server.scroll_holds import ScrollHolds
from siamese_search.server.space_map import TEXT_CHARS, SpaceMaps
from siamese_search.server.state import Serving
from siamese_search.server.writes import Committer, WritesBacklogged, WritesUnavailable

log = logging.getLogger("siamese.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SearchService"].full_name


def _abstention_rule(rule) -> pb.AbstentionRule | None:
    """GetInfo's view of a model's abstention rule (None: the model has none)."""
    if rule is None:
        return None
    return pb.AbstentionRule(
        threshold=rule.threshold,
        threshold_rule=rule.threshold_rule,
        domain_meaning=rule.domain_meaning if rule.domain_meaning is not None else 0.0,
        domain_served=rule.domain_served if rule.domain_served is not None else 0.0,
        domain_rule=rule.domain_rule,
        source=rule.source,
        features=list(rule.features),
    )


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _neighbor(hit: Hit) -> pb.Neighbor:
    neighbor = pb.Neighbor(
        id=hit.id, text=hit.text, label=hit.label, score=hit.score, distance=1.0 - hit.score
    )
    if hit.metadata:
        neighbor.metadata.update(hit.metadata)
    return neighbor


def _stored_examples(
    index: ServedVersion, rows, with_vectors: bool, size: AnswerSize
) -> list[pb.StoredExample]:
    """GetExamples' and Scroll's answer: the rows, with their vectors when asked, as
    many as fit `size` (the first one always: a page of long texts is cut short, not
    refused; a stored text is at most 16 MB, well within what the server sends)."""
    vectors = (
        index.vectors_at(np.array([row.position for row in rows], dtype=np.int64))
        if with_vectors
        else None
    )
    examples: list[pb.StoredExample] = []
    for i, row in enumerate(rows):
        example = pb.StoredExample(id=row.id, text=row.text, label=row.label)
        if row.metadata:
            example.metadata.update(row.metadata)
        if vectors is not None:
            example.vector.extend(vectors[i].tolist())
        if not size.fits(example) and examples:
            break
        examples.append(example)
    return examples


def _reason(decision, abstention, threshold: float | None, neighbours: int = 1) -> str:
    """Why Predict abstained, in words ("" when it did not); `neighbours`: how many the
    search found."""
    if not decision.abstained:
        return ""
    if decision.out_of_domain:
        return (
            "too far from the training texts: no neighbour is as close as the model's "
            "domain bar asks, so none of the labels fits"
        )
    bar = threshold if threshold is not None else getattr(abstention, "threshold", None)
    if not neighbours:
        return "no neighbour was found: the index holds no example (that the filter passes)"
    if not decision.voted:
        return "no neighbour could vote (none above min_score)"
    said = f" {bar:.2f}" if bar is not None else ""
    return (
        f"the vote was too unsure: {decision.voted!r} has confidence "
        f"{decision.confidence:.2f}, under the threshold{said}"
    )


def _server_version() -> str:
    try:
        return metadata.version("siamese-search")
    except metadata.PackageNotFoundError:
        return "unknown"


class SearchService(pb_grpc.SearchServiceServicer):
    def __init__(
        self,
        collections: Collections,
        limits: Limits,
        batcher: Batcher,
        workers: int = 8,
        metrics: Metrics | None = None,
        max_send_bytes: int = 64 * 1024 * 1024,
    ):
        self.collections = collections
        self.limits = limits
        #: the largest answer gRPC sends (ServerConfig.max_send_bytes): a Scroll page is
        #: cut to fit it, any other answer over it refused with what to ask instead
        self.max_send_bytes = max_send_bytes
        self.batcher = batcher
        self.metrics = metrics
        #: threads that run unary calls (gRPC's pool): with several collections, one may
        #: hold all but a share of them (_admit)
        self.workers = workers
        self._in_flight: dict[str, int] = {}
        self._in_flight_lock = threading.Lock()
        self._local = threading.local()  # the snapshots the current call holds
        self.version = _server_version()
        self.maps = SpaceMaps()  # GetMap's, per collection and version
        #: the versions scrolls under way read, kept from pruning for a while
        self.scroll_holds = ScrollHolds()

    # ---- plumbing -----------------------------------------------------------
    def _call(self, context: grpc.ServicerContext, work: Callable, request=None):
        """Run `work` and map what it raises to a gRPC status. With `request`, the
        collection it names is resolved first and `work(collection)` runs within that
        collection's share of the server's threads (admit)."""
        acquired: list[Serving] = []
        self._local.acquired = acquired
        admitted = None
        try:
            if request is None:
                return work()
            collection = self.collections.get(request.collection)
            admitted = self._admit(collection)
            if collection.metrics is not None:
                collection.metrics.called(type(request).__name__.removesuffix("Request"))
            return self._within_send_limit(work(collection))
        except (check.InvalidRequest, FilterError, MetadataError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except (UnknownLabelError, CollectionNotFound) as error:
            # NOT_FOUND, not INVALID_ARGUMENT: the same filter is valid once the index
            # holds the label (gRPC keeps INVALID_ARGUMENT for requests wrong whatever
            # the state), and REST clients and fuzzers read 404 as "not there (now)"
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except CollectionRefused as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        except BackendUnavailableError as error:
            log.error("backend_unavailable", extra={"fields": {"error": str(error)[:500]}})
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error)[:1000])
        except scrolling.VersionGone as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except _Abort as error:
            context.abort(error.code, str(error))
        except DamagedArtifactError as error:  # a served file changed on disk since its load
            log.error("damaged_artifact", extra={"fields": {"error": str(error)[:1000]}})
            context.abort(grpc.StatusCode.DATA_LOSS, str(error)[:1000])
        except UserError as error:  # a lifecycle call's model or index problem
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except Exception:
            log.exception("internal_error")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            for serving in acquired:  # a replaced version closes after its last call
                serving.exit()
            if admitted is not None:
                with self._in_flight_lock:
                    self._in_flight[admitted] -= 1

    def _within_send_limit(self, response):
        """`response`, or OUT_OF_RANGE when gRPC would refuse to send it: stored texts
        (of any length in an index) or vectors can make k neighbours or a batch of
        examples larger than the limit, and gRPC's own refusal is a RESOURCE_EXHAUSTED
        that clients retry as if the server were busy."""
        size = response.ByteSize()
        if size > self.max_send_bytes:
            raise self._too_large(f"would be {size / 2**20:.1f} MiB")
        return response

    def _too_large(self, what: str) -> _Abort:
        """OUT_OF_RANGE for an answer over the send limit; `what` says how far it got."""
        return _Abort(
            grpc.StatusCode.OUT_OF_RANGE,
            f"the answer {what}; the server sends at most {self.max_send_bytes / 2**20:.0f} "
            "MiB an answer (its stored texts are long): ask for fewer neighbours (k), texts "
            "or ids a call",
        )

    def _neighbors(self, found: list[list[Hit]]) -> list[list[pb.Neighbor]]:
        """Each query's hits as the answer's neighbours, built within the send limit
        (server.answer_size: an answer holds a stored text and its metadata once per
        query that found the row, so it is never built whole to be measured)."""
        size = AnswerSize(self.max_send_bytes)
        total = sum(len(hits) for hits in found)
        lists: list[list[pb.Neighbor]] = []
        for hits in found:
            neighbors = []
            for hit in hits:
                neighbors.append(_neighbor(hit))
                if not size.fits(neighbors[-1]):
                    made = sum(map(len, lists)) + len(neighbors)
                    raise self._too_large(f"passed the limit at neighbour {made:,} of {total:,}")
            lists.append(neighbors)
        return lists

    def _admit(self, collection: Collection) -> str:
        """Count the call against its collection; refused (RESOURCE_EXHAUSTED) when the
        collection already holds its share of the worker threads, so that one busy
        collection leaves threads for the others (with one collection: all of them)."""
        others = len(self.collections) - 1
        if not others:
            return self._count(collection.name)  # alone: gRPC's own admission decides
        share = max(1, self.workers - min(others, self.workers // 2))
        with self._in_flight_lock:
            held = self._in_flight.get(collection.name, 0)
            if held >= share:
                raise _Abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"collection {collection.name} has {held} calls in flight, its share of "
                    "this server; retry with backoff",
                )
            self._in_flight[collection.name] = held + 1
        return collection.name

    def _count(self, name: str) -> str:
        with self._in_flight_lock:
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
        return name

    def _serving(self, collection: Collection) -> Serving:
        """The snapshot this call uses, held until the call ends (see `_call`)."""
        holder = collection.holder
        serving = holder.acquire() if holder is not None else None
        if serving is None:
            cause = collection.problem or "no index version was found"
            raise _Abort(
                grpc.StatusCode.UNAVAILABLE,
                f"nothing is serving in collection {collection.name} from "
                f"{collection.source.location} yet: {cause[:500]}. Build a version with "
                "siamese-index build (or fix what the cause names), then retry",
            )
        self._local.acquired.append(serving)
        return serving

    @staticmethod
    def _deadline(context: grpc.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    def _search(
        self,
        serving: Serving,
        texts: list[str],
        k: int,
        labels: list[str],
        min_score: float,
        context,
        where: Filter | None = None,
    ) -> list[list[Hit]]:
        return self._batched(serving, texts, k, labels, min_score, context, where)[1]

    @staticmethod
    def _where(serving: Serving, request) -> Filter | None:
        """The request's filter checked against the served version's fields."""
        spec = check.filter_of(request)
        if spec is None:
            return None
        index = serving.index
        return index.parse_filter(spec)

    def _embed(self, serving: Serving, texts: list[str], context) -> np.ndarray:
        return self._batched(serving, texts, 0, [], -1.0, context)[0]

    def _batched(self, serving, texts, k, labels, min_score, context, where=None):
        """Check the token limits, then hand the work to the batcher, which shares
        one encode + search with concurrent calls and drops it once the caller is
        gone (cancelled, disconnected, out of time)."""
        check.check_tokens(serving.model, texts, self.limits)
        try:
            return self.batcher.search(
                serving,
                texts,
                k,
                labels,
                min_score,
                context.is_active,
                self._deadline(context),
                where,
            )
        except CallGone as gone:
            if gone.expired:
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from None
            raise _Abort(
                grpc.StatusCode.CANCELLED, "the call was cancelled; work stopped"
            ) from None

    def _predict(
        self,
        serving: Serving,
        texts: list[str],
        k: int,
        min_score: float,
        context,
        where: Filter | None = None,
    ) -> list[pb.PredictResponse]:
        if not serving.index.has_labels:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"index version {serving.index.name} has no labels, so it cannot "
                "predict; rebuild it with --label-column, or use Search",
            )
        results = []
        threshold = None if math.isinf(min_score) else min_score  # unset: the model's rule
        abstention = serving.model.abstention
        vectors, found = self._batched(serving, texts, k, [], -1.0, context, where)
        votes = [([h.label for h in hits], [h.score for h in hits]) for hits in found]
        decisions = predict_queries(serving.model, votes, vectors, texts, threshold)
        neighbors = self._neighbors(found)
        for hits, decision, shown in zip(found, decisions, neighbors, strict=True):
            results.append(
                pb.PredictResponse(
                    label=decision.label,
                    confidence=decision.confidence,
                    scores=[
                        pb.LabelScore(label=lab, score=s) for lab, s in decision.scores.items()
                    ],
                    neighbors=shown,
                    index_version=serving.index.name,
                    abstained=decision.abstained,
                    voted_label=decision.voted,
                    out_of_domain=decision.abstained and decision.out_of_domain,
                    abstention_reason=_reason(decision, abstention, threshold, len(hits)),
                )
            )
        return results

    # ---- RPCs -----------------------------------------------------------------
    def Search(self, request, context):
        def work(collection: Collection):
            if request.id and request.text:
                raise check.InvalidRequest("send a text or an id to search by, not both")
            text = None if request.id else check.check_text(request.text, self.limits)
            k = check.check_k(request.k, self.limits)
            min_score = check.check_min_score(request)
            labels = check.check_labels(request.labels)
            serving = self._serving(collection)
            where = self._where(serving, request)
            if text is None:
                hits = self._search_by_id(serving, request.id, k, labels, min_score, where)
            else:
                hits = self._search(serving, [text], k, labels, min_score, context, where)[0]
            (neighbors,) = self._neighbors([hits])
            return pb.SearchResponse(neighbors=neighbors, index_version=serving.index.name)

        return self._call(context, work, request)

    def _search_by_id(self, serving, row_id, k, labels, min_score, where) -> list[Hit]:
        """ "More like this": the stored row's own vector as the query, the row left out."""
        check.check_ids([row_id], self.limits)
        index = serving.index
        position = index.positions_of([row_id]).get(row_id)
        if position is None:
            raise _Abort(
                grpc.StatusCode.NOT_FOUND,
                f"the index holds no example with id {check.echo(row_id)} (version "
                f"{index.name}); GetExamples reads what it holds",
            )
        vector = index.vectors_at(np.array([position]))
        return index.search(vector, k, labels, min_score, where=where, exclude=[position])[0]

    def GetExamples(self, request, context):
        def work(collection: Collection):
            ids = check.check_ids(list(request.ids), self.limits)
            serving = self._serving(collection)
            index = serving.index
            rows = index.get(ids)
            size = AnswerSize(self.max_send_bytes)
            examples = _stored_examples(index, rows, request.with_vectors, size)
            if len(examples) < len(rows):
                raise self._too_large(
                    f"passed the limit at example {len(examples) + 1} of {len(rows)}"
                )
            return pb.GetExamplesResponse(examples=examples, index_version=index.name)

        return self._call(context, work, request)

    def Scroll(self, request, context):
        def work(collection: Collection):
            limit = request.limit or self.limits.max_batch
            if limit > self.limits.max_batch:
                raise check.InvalidRequest(
                    f"limit is {limit}; a page holds at most {self.limits.max_batch} examples"
                )
            serving = self._serving(collection)
            current = serving.index
            version, after = scrolling.read_token(request.page_token, current)
            with scrolling.version_for(current, version, collection.source) as index:
                where = index.parse_filter(check.filter_of(request))
                rows, last = index.scroll(where, limit, after)
                size = AnswerSize(self.max_send_bytes // 2)
                examples = _stored_examples(index, rows, request.with_vectors, size)
                if len(examples) < len(rows):  # the rest of the page on the next one
                    last = rows[len(examples) - 1].position
                if last is not None:  # the next page reads this version too
                    self.scroll_holds.keep(collection.source, index.name)
                return pb.ScrollResponse(
                    examples=examples,
                    next_page_token=scrolling.token(index, last) if last is not None else "",
                    index_version=index.name,
                )

        return self._call(context, work, request)

    def SearchBatch(self, request, context):
        def work(collection: Collection):
            texts = check.check_texts(request.texts, self.limits)
            k = check.check_k(request.k, self.limits)
            min_score = check.check_min_score(request)
            labels = check.check_labels(request.labels)
            serving = self._serving(collection)
            where = self._where(serving, request)
            name = serving.index.name
            found = self._search(serving, texts, k, labels, min_score, context, where)
            results = [
                pb.SearchResponse(neighbors=neighbors, index_version=name)
                for neighbors in self._neighbors(found)
            ]
            return pb.SearchBatchResponse(results=results, index_version=name)

        return self._call(context, work, request)

    def Predict(self, request, context):
        def work(collection: Collection):
            text = check.check_text(request.text, self.limits)
            k = check.check_k(request.k, self.limits)
            min_score = check.check_min_score(request)
            serving = self._serving(collection)
            where = self._where(serving, request)
            return self._predict(serving, [text], k, min_score, context, where)[0]

        return self._call(context, work, request)

    def PredictBatch(self, request, context):
        def work(collection: Collection):
            texts = check.check_texts(request.texts, self.limits)
            k = check.check_k(request.k, self.limits)
            min_score = check.check_min_score(request)
            serving = self._serving(collection)
            where = self._where(serving, request)
            results = self._predict(serving, texts, k, min_score, context, where)
            return pb.PredictBatchResponse(results=results, index_version=serving.index.name)

        return self._call(context, work, request)

    def Embed(self, request, context):
        def work(collection: Collection):
            texts = check.check_texts(request.texts, self.limits)
            serving = self._serving(collection)
            vectors = self._embed(serving, texts, context)
            return pb.EmbedResponse(
                embeddings=[pb.Embedding(values=row.tolist()) for row in vectors],
                dim=int(vectors.shape[1]),
                model_fingerprint=serving.model.fingerprint,
            )

        return self._call(context, work, request)

    def GetInfo(self, request, context):
        def work(collection: Collection):
            serving = self._serving(collection)
            model, index = serving.model, serving.index
            fingerprint = model.manifest["encoder"]["fingerprint"]
            counts = (index.manifest.get("labels") or {}).get("counts", {})
            return pb.GetInfoResponse(
                model_fingerprint=model.fingerprint,
                model_directory=str(model.directory),
                encoder_name=str(fingerprint.get("name")),
                encoder_version=str(fingerprint.get("version")),
                encoder_weights_sha256=str(fingerprint.get("weights_sha256")),
                index_version=index.name,
                index_directory=collection.source.location,
                index_type=index.kind,
                count=index.count,
                dim=index.dim,
                labels=[
                    pb.LabelCount(label=lab, count=counts.get(lab, 0)) for lab in index.label_names
                ],
                index_params={k: str(v) for k, v in index.manifest["index"]["params"].items()},
                max_k=self.limits.max_k,
                max_text_chars=self.limits.max_text_chars,
                max_batch=self.limits.max_batch,
                max_text_tokens=self.limits.max_text_tokens,
                max_call_tokens=self.limits.max_call_tokens,
                max_call_chars=self.limits.max_call_chars,
                last_reload_error=collection.problem
                if collection.error
                else (collection.holder.last_error or "" if collection.holder else ""),
                last_reload_error_at=collection.holder.last_error_at or ""
                if collection.holder
                else "",
                **self._write_status(collection),
                server_version=self.version,
                loaded_at=serving.loaded_at,
                abstention=_abstention_rule(model.abstention),
                retained_versions=collection.source.retained_versions(),
            )

        return self._call(context, work, request)

    # ---- writes ---------------------------------------------------------------
    @staticmethod
    def _write_status(collection: Collection) -> dict:
        """GetInfo's write fields: what is pending and why commits fail, if they do."""
        writes = collection.writes
        if not isinstance(writes, Committer):
            return {}
        since = writes.failing_since
        return {
            "pending_writes": len(writes.journal.records) if writes.journal else 0,
            "last_commit_error": writes.last_failure[:2000] if since else "",
            "last_commit_error_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
            if since
            else "",
        }

    @staticmethod
    def _committer(collection: Collection) -> Committer:
        if not isinstance(collection.writes, Committer):
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                collection.writes
                or collection.problem
                or "this server takes no writes (started with --no-writes)",
            )
        return collection.writes

    @staticmethod
    def _labelled(collection: Collection) -> bool:
        serving = collection.holder.current if collection.holder is not None else None
        if serving is None:
            raise _Abort(
                grpc.StatusCode.UNAVAILABLE,
                f"no index version of collection {collection.name} is serving yet: build one "
                "with siamese-index build first",
            )
        return serving.index.has_labels

    def _written(self, committer: Committer, seq: int, wait: bool, context) -> tuple[bool, str]:
        """(committed, version): at once, or once a served version holds write `seq`."""
        if not wait:
            return False, ""
        try:
            return True, committer.wait_for(seq, context.time_remaining(), context.is_active)
        except TimeoutError:
            raise _Abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the write is durable but was not served before the deadline; it will be",
            ) from None
        except RuntimeError as error:
            raise _Abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the write is durable but its commit failed ({str(error)[:300]}); the "
                "server retries it",
            ) from None

    @staticmethod
    def _submit(committer: Committer, changes: list) -> int:
        """Journal the changes (durable from here on); the last one's sequence number."""
        seq = 0
        try:
            for change in changes:
                seq = committer.submit(change)
        except WritesUnavailable as error:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, str(error)) from None
        except WritesBacklogged as error:
            raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from None
        except OSError as error:  # the journal could not take it (disk full, size limit)
            raise _Abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the write was not recorded (the write journal failed: {error}); "
                "nothing of it was kept: retry it later",
            ) from None
        return seq

    def Upsert(self, request, context):
        def work(collection: Collection):
            committer = self._committer(collection)
            change, ids = check.check_upsert(request, self.limits, self._labelled(collection))
            assert collection.holder is not None
            check.check_tokens(collection.holder.model, list(change.texts), self.limits)
            seq = self._submit(committer, [change])
            committed, version = self._written(committer, seq, request.wait, context)
            return pb.UpsertResponse(ids=ids, committed=committed, index_version=version)

        return self._call(context, work, request)

    def Delete(self, request, context):
        def work(collection: Collection):
            committer = self._committer(collection)
            self._labelled(collection)  # an index must be serving
            seq = self._submit(committer, check.check_delete(request, self.limits))
            committed, version = self._written(committer, seq, request.wait, context)
            return pb.DeleteResponse(committed=committed, index_version=version)

        return self._call(context, work, request)

    def Reload(self, request, context):
        def work(collection: Collection):
            if collection.holder is None:
                raise _Abort(grpc.StatusCode.UNAVAILABLE, collection.problem)
            outcome = collection.holder.reload(forced=True)
            return pb.ReloadResponse(
                changed=outcome.changed,
                index_version=outcome.version or "",
                message=outcome.message,
            )

        return self._call(context, work, request)

    def GetMap(self, request, context):
        def work(collection: Collection):
            serving = self._serving(collection)
            found = self.maps.of(collection.name, serving.index)
            return pb.MapResponse(
                points=[
                    pb.MapPoint(
                        id=row.id,
                        label=row.label,
                        text=row.text[:TEXT_CHARS],
                        x=float(x),
                        y=float(y),
                    )
                    for row, (x, y) in zip(found.rows, found.xy, strict=True)
                ],
                mean=found.mean.tolist(),
                axis_x=found.axes[0].tolist(),
                axis_y=found.axes[1].tolist(),
                index_version=serving.index.name,
                count=found.count,
                sampled=len(found.rows),
            )

        return self._call(context, work, request)

    # ---- collections (server.collections) -------------------------------------------------
    def ListCollections(self, request, context):
        def work():
            return pb.ListCollectionsResponse(
                collections=[self._describe(c) for c in self.collections.all()]
            )

        return self._call(context, work)

    def CreateCollection(self, request, context):
        def work():
            collection = self.collections.create(
                request.name, request.model_directory, request.index_type, request.labels
            )
            return self._describe(collection)

        return self._call(context, work)

    def DropCollection(self, request, context):
        def work():
            return pb.DropCollectionResponse(remaining=self.collections.drop(request.name))

        return self._call(context, work)

    def _describe(self, collection: Collection) -> pb.CollectionInfo:
        """ListCollections' view of one collection."""
        info = pb.CollectionInfo(
            name=collection.name,
            is_default=collection.name == self.collections.default,
            health="SERVING" if collection.serving else "NOT_SERVING",
            error=collection.problem[:2000],
        )
        holder = collection.holder
        serving = holder.current if holder is not None else None
        if holder is not None:
            info.model_directory = str(holder.model.directory)
            info.model_fingerprint = holder.model.fingerprint
        if serving is not None:
            index = serving.index
            counts = (index.manifest.get("labels") or {}).get("counts", {})
            info.count = index.count
            info.index_version = index.name
            info.index_type = index.kind
            info.labels.extend(
                pb.LabelCount(label=lab, count=counts.get(lab, 0)) for lab in index.label_names
            )
        return info
