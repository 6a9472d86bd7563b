"""The national exchange axis (VXP) connector: list received messages, fetch their edXML packets, acknowledge them.

Per stream (``messagetype`` ``status`` or ``edoc``): ``getReceivedEdocList`` lists what the axis holds for this
system and has not been acknowledged; each message's packet is fetched with ``getEdoc`` (base64), decoded and
parsed with the hardened XML parser and read with :mod:`connectors.edxml`. Pages are ``page_size`` messages.
Every call carries ``XroadVnpt-*`` headers signed with HMAC-SHA256 (:mod:`connectors.auth`).

**Acknowledge after commit, never before.** The axis is a queue: a message acknowledged ``done`` disappears
from the list for good. If the connector acknowledged a page as soon as it had read it, a crash between the read
and the store's commit would lose that page. So acknowledgements ride in the cursor: each page's checkpoint is
the (cumulative, for this run) list of message ids read so far (``ack``) and of those that could not be read
(``fail``: the axis refused to deliver them, or their packet is unreadable; they are quarantined with what the
axis listed and sent, in the same transaction). The sync engine commits that checkpoint together with the page's
records and facts; the next ``read`` starts by sending ``updateStatus`` for the ids of the **committed** cursor
(``done`` / ``fail``), and only then lists again. Consequences:

- a crash before a commit: the page is not in the cursor, not acknowledged, and is listed and read again;
- a crash after a commit but before the acknowledgements: they are sent on the next run (``updateStatus`` is
  idempotent), and a message listed again meanwhile is stored again idempotently (same key, same content);
- a message therefore stays listed (unacknowledged) for up to one sync interval after it is stored; and a run
  reads at most ``max_per_run`` messages, which bounds the cursor's size.

When a run finds nothing new it still yields one empty page whose checkpoint clears the acknowledged ids.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import orjson

from connectors.auth import build_auth, tls_context
from connectors.edxml import EdxmlError, EdxmlNormalizeConfig, compile_edxml_normalizer, read_packet
from connectors.vxp.config import VxpSourceConfig
from connectors.xmlsafe import XmlError, XmlLimits
from gateway.connector import CheckResult, ConnectorContext, Normalize, NormalizerRecipe, Page, RecordProblem
from gateway.errors import AuthError, ProtocolError, SourceUnavailable
from gateway.http import HttpLimits, fetch
from gateway.types import VN_TZ, SourceRecord, WorkItem

__all__ = ["AxisRefused", "MalformedResponse", "VxpConnector"]


class MalformedResponse(SourceUnavailable):
    """The axis answered with a body that is not its JSON envelope: retried, then quarantined with the body."""

    def __init__(self, message: str, *, body: bytes, source: str, where: str) -> None:
        super().__init__(message, source=source, where=where)
        self.body = body


class AxisRefused(ProtocolError):
    """The axis answered its own envelope with ``FAIL`` for a call (not an HTTP-level error)."""


def _encode_cursor(ack: Sequence[str], fail: Sequence[str]) -> str:
    return orjson.dumps({"ack": list(ack), "fail": list(fail)}).decode()


def _decode_cursor(cursor: str | None) -> tuple[list[str], list[str]]:
    if not cursor:
        return [], []
    try:
        doc = orjson.loads(cursor)
        return [str(i) for i in doc.get("ack", [])], [str(i) for i in doc.get("fail", [])]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return [], []  # a cursor from another connector version: nothing to acknowledge


def _created(row: Mapping[str, Any]) -> str | None:
    text = row.get("created_time")
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=VN_TZ).isoformat()
    except ValueError:
        return None


def _shaped(record: SourceRecord) -> SourceRecord:
    """A VXP record in the shape the edXML normalizer reads: a document, or a status alone with the document it
    answers for, as far as it tells."""
    payload = record.payload
    status = payload.get("status")
    if isinstance(status, Mapping):
        rf = status.get("response_for") or {}
        stub: dict[str, Any] = {
            "kind": "document", "from": {"OrganId": rf.get("OrganId")}, "number_symbol": rf.get("Code"),
            "document_id": rf.get("DocumentId"), "to": [],
        }  # fmt: skip
        shaped: Mapping[str, Any] = {"document": stub, "statuses": [status]}
    else:
        shaped = {"document": payload.get("document"), "statuses": []}
    return SourceRecord(record.source, record.stream, record.key, shaped, record.cursor_value)


def vxp_normalizer(edxml: EdxmlNormalizeConfig, id_system: str) -> Normalize:
    """:meth:`VxpConnector.normalize` built from its edXML settings alone, in any process."""
    compiled = compile_edxml_normalizer(edxml, id_system=id_system)

    def normalize(record: SourceRecord) -> Sequence[WorkItem]:
        return [compiled(_shaped(record))]

    return normalize


class VxpConnector:
    config_model = VxpSourceConfig

    def __init__(self, *, name: str, config: Mapping[str, Any], context: ConnectorContext) -> None:
        self.cfg = config if isinstance(config, VxpSourceConfig) else VxpSourceConfig.model_validate(config)
        self.name = name
        self._ctx = context
        lim = self.cfg.limits
        self._limits = HttpLimits(lim.connect_timeout, lim.read_timeout, lim.deadline, lim.max_bytes,
                                  lim.max_connections)  # fmt: skip
        self._xml_limits = XmlLimits(max_bytes=lim.max_bytes, max_depth=64)
        self._auth = build_auth(self.cfg.auth)
        self._client: httpx.Client | None = None
        self._edxml = EdxmlNormalizeConfig(key=self.cfg.edxml.key, agencies=self.cfg.edxml.agencies)
        self._normalize = compile_edxml_normalizer(self._edxml, id_system=self.cfg.id_system)

    # -- plumbing ---------------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            extra: dict[str, Any] = {}
            if self.cfg.tls is not None:
                extra["verify"] = tls_context(self.cfg.tls, base_dir=self._ctx.config_dir)
            self._client = self._ctx.http_client(base_url=self.cfg.base_url.rstrip("/") + "/", limits=self._limits,
                                                 **extra)  # fmt: skip
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def call(self, method: str, headers: Mapping[str, str], *, operation: str) -> Any:
        """One signed, retried call of an axis method; returns the envelope's ``data``."""

        def attempt() -> Any:
            request = self.client.build_request("POST", method, headers=dict(headers))
            self._auth.apply(request, self._unsigned)
            started, outcome = time.perf_counter(), "failed"
            try:
                response, body = fetch(self.client, request, limits=self._limits, source=self.name)
                outcome = f"{response.status_code // 100}xx"
            finally:
                self._ctx.observe_request(self.name, operation, outcome, time.perf_counter() - started)
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise MalformedResponse(f"{method}: not JSON", body=body, source=self.name, where=method) from exc
            if not isinstance(doc, dict) or doc.get("status") != "OK":
                code = doc.get("ErrorCode") if isinstance(doc, dict) else None
                desc = doc.get("ErrorDesc") if isinstance(doc, dict) else None
                error = AuthError if str(code) in ("401", "403") else AxisRefused
                raise error(f"axis refused {method} (ErrorCode {code}: {desc})", source=self.name, where=method)
            return doc.get("data")

        return self._ctx.retry.call(f"{self.name}:{operation}", attempt)

    def _unsigned(self, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, bytes]:
        raise ProtocolError("signed-header auth makes no calls of its own", source=self.name)  # pragma: no cover

    def _listing(self, messagetype: str, operation: str) -> list[Mapping[str, Any]]:
        rows = self.call("getReceivedEdocList", {"messagetype": messagetype}, operation=operation)
        if not isinstance(rows, list):
            raise ProtocolError("getReceivedEdocList: data is not a list", source=self.name, stream=operation)
        return [r for r in rows if isinstance(r, Mapping) and r.get("docId")]

    def _acknowledge(self, ids: Sequence[str], status: str, stream: str) -> None:
        for doc_id in ids:
            try:
                self.call("updateStatus", {"docId": doc_id, "status": status}, operation=f"{stream}-ack")
            except ProtocolError as exc:  # the axis no longer knows it (expired): nothing left to acknowledge
                # HTTP 404 is refused by the guarded fetch before the envelope's ErrorCode is read
                if "ErrorCode 404" not in exc.message and exc.message != "HTTP 404":
                    raise

    # -- the connector protocol -------------------------------------------------------------------------

    def streams(self) -> Sequence[str]:
        return list(self.cfg.streams)

    def check(self) -> CheckResult:
        name, stream = next(iter(self.cfg.streams.items()))
        rows = self._listing(stream.messagetype, name)
        return CheckResult(True, f"signature accepted; {len(rows)} {stream.messagetype} messages waiting",
                           streams=self.streams())  # fmt: skip

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]:
        messagetype = self.cfg.streams[stream].messagetype
        ack, fail = _decode_cursor(cursor)
        self._acknowledge(ack, "done", stream)  # committed by the store: safe to let the axis forget them
        self._acknowledge(fail, "fail", stream)
        rows = self._listing(messagetype, stream)[: self.cfg.max_per_run]
        if not rows:
            if ack or fail:
                yield Page(records=[], checkpoint=_encode_cursor([], []))
            return
        done: list[str] = []
        failed: list[str] = []
        for start in range(0, len(rows), self.cfg.page_size):
            records, problems = self._fetch(stream, messagetype, rows[start : start + self.cfg.page_size])
            done.extend(r.key for r in records)
            failed.extend(p.key for p in problems)
            yield Page(records=records, checkpoint=_encode_cursor(done, failed), problems=problems)

    def _fetch(
        self, stream: str, messagetype: str, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[list[SourceRecord], list[RecordProblem]]:
        records: list[SourceRecord] = []
        problems: list[RecordProblem] = []
        field = "status" if messagetype == "status" else "document"
        for row in rows:
            doc_id = str(row["docId"])
            meta = dict(row)
            try:
                data = self.call("getEdoc", {"docId": doc_id}, operation=f"{stream}-get")
            except AxisRefused as exc:
                # The axis's own answer that it cannot deliver this message: it would block every run. An
                # HTTP-level error (a proxy's 4xx, a refused redirect, the size cap) says nothing about the
                # message, and acknowledging it "fail" could not be undone: those still fail the stream.
                problems.append(RecordProblem(key=doc_id, payload={"meta": meta},
                                              reason=f"the axis refused to deliver {doc_id}: {exc.message}",
                                              error_kind="ProtocolError"))  # fmt: skip
                continue
            try:
                raw = base64.b64decode(str(data), validate=True)
                packet = read_packet(raw, limits=self._xml_limits)
            except (binascii.Error, ValueError, XmlError, EdxmlError) as exc:
                reason = f"packet {doc_id} unreadable: {exc}"
                problems.append(RecordProblem(key=doc_id, payload={"meta": meta, "data": str(data)[:100_000]},
                                              reason=reason, error_kind="ProtocolError"))  # fmt: skip
                continue
            if packet.get("kind") != field:
                reason = f"expected a {field} packet, got {packet.get('kind')}"
                problems.append(RecordProblem(key=doc_id, payload={"meta": meta, "packet": packet}, reason=reason))
                continue
            payload = {"docId": doc_id, "meta": meta, field: packet}
            records.append(SourceRecord(self.name, stream, doc_id, payload, _created(row)))
        return records, problems

    def normalize(self, record: SourceRecord) -> Sequence[WorkItem]:
        return [self._normalize(_shaped(record))]

    def normalizer_recipe(self) -> NormalizerRecipe:
        return NormalizerRecipe(vxp_normalizer, (self._edxml, self.cfg.id_system))
