"""The declarative SOAP source file: the REST file's vocabulary (cursor, paginator, field map, limits, schedule)
plus what SOAP needs: a WSDL, operations and their arguments, where credentials go, where records sit in the
response, how payloads carried inside string elements are decoded, and how SOAP Faults are classified.

See ``docs/soap.md`` for the format with examples. Validated with ``extra="forbid"`` like every YAML here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.declarative.config import (
    CursorConfig,
    CursorKeysetPaginator,
    LimitsConfig,
    NormalizeConfig,
    OffsetPaginator,
    PageNumberPaginator,
    ScheduleConfig,
)
from connectors.edxml.normalize import EdxmlNormalizeConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- credentials -----------------------------------------------------------------------------------------


class NoCredentials(_Strict):
    type: Literal["none"]


class BodyCredentials(_Strict):
    """``OrganId`` + ``Token`` as arguments of every operation (eDoc hubs, many provincial services)."""

    type: Literal["body"]
    organ_id: str
    token: SecretStr
    organ_id_field: str = "OrganId"
    token_field: str = "Token"  # noqa: S105 - an element name, not a token


class HeaderCredentials(_Strict):
    """A SOAP header element ``{namespace}element`` whose children carry the credentials (ASMX style)."""

    type: Literal["soap_header"]
    namespace: str
    element: str
    fields: dict[str, str] = Field(default_factory=dict)  # plain values, e.g. UserName
    secret_fields: dict[str, SecretStr] = Field(default_factory=dict)  # write them as ${ENV} / ${file:...}


class WsSecurityCredentials(_Strict):
    """WS-Security UsernameToken (``PasswordText``, or ``PasswordDigest`` with ``digest: true``)."""

    type: Literal["ws_security"]
    username: str
    password: SecretStr
    digest: bool = False


SoapCredentials = Annotated[
    NoCredentials | BodyCredentials | HeaderCredentials | WsSecurityCredentials, Field(discriminator="type")
]


# --- payloads, records, faults ---------------------------------------------------------------------------


class PayloadConfig(_Strict):
    """How one record's element becomes a dict.

    ``encoding``: ``element`` (the record is the element itself), ``escaped_xml`` (the element's text is an XML
    document, as legacy .NET services return it in a ``string``), ``json`` (its text is JSON).
    ``parse`` (XML only): ``fields`` (element names -> keys, repeats -> lists, ``@attr`` for attributes) or
    ``edxml`` (a QCVN 102 packet, see :mod:`connectors.edxml`).
    """

    encoding: Literal["element", "escaped_xml", "json"] = "element"
    parse: Literal["fields", "edxml"] = "fields"


class FaultRule(_Strict):
    """Classify a SOAP Fault by its code and/or message (regular expressions, searched case-insensitively)."""

    code: str | None = None
    message: str | None = None
    action: Literal["retry", "fail", "auth", "quarantine"]

    @model_validator(mode="after")
    def _something_to_match(self) -> FaultRule:
        if self.code is None and self.message is None:
            raise ValueError("a fault rule needs 'code' or 'message'")
        return self


class JoinConfig(_Strict):
    """Per page, one batched call that attaches related items to the page's records under ``name``.

    The call passes the distinct values of the record field ``from`` (at most ``batch`` per call) as the
    repeated argument ``arg``; an item belongs to the records whose fields equal the item's (``match``:
    record path -> item path). ``many``: a list per record; else exactly one item, and a record without its
    item is quarantined when ``required``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    operation: str
    arg: str
    from_: str = Field(alias="from")
    args: dict[str, Any] = Field(default_factory=dict)
    batch: int = Field(default=100, ge=1, le=5_000)
    records: str
    payload: PayloadConfig = PayloadConfig()
    match: dict[str, str] = Field(min_length=1)
    many: bool = False
    required: bool = True


SoapPaginator = Annotated[PageNumberPaginator | OffsetPaginator | CursorKeysetPaginator, Field(discriminator="type")]


class SoapStreamConfig(_Strict):
    operation: str
    args: dict[str, Any] = Field(default_factory=dict)
    paginator: SoapPaginator | None = None
    records: str  # dotted element names below the response wrapper, e.g. GetTracesResult.Trace
    payload: PayloadConfig = PayloadConfig()
    key: str  # a path, or a template with {path} placeholders for a composite key
    cursor: CursorConfig | None = None
    joins: list[JoinConfig] = Field(default_factory=list)
    # How many join calls of one page may be in flight at once (1: one after another). Above 1 the calls are
    # pipelined on a small pool, e.g. GetDocument and GetTraces together, or a hub that takes one DocumentId
    # per call (``batch: 1``) fetched a few documents at a time; see connectors/soap/_joins.py.
    join_concurrency: int = Field(default=1, ge=1, le=16)
    normalize: NormalizeConfig | None = None
    edxml: EdxmlNormalizeConfig | None = None

    @model_validator(mode="after")
    def _one_normalizer(self) -> SoapStreamConfig:
        if (self.normalize is None) == (self.edxml is None):
            raise ValueError("a stream needs exactly one of 'normalize' (a field map) or 'edxml'")
        if isinstance(self.paginator, PageNumberPaginator | OffsetPaginator) and self.paginator.total_path:
            raise ValueError("total_path is not supported for SOAP streams; paging ends on a short page")
        if isinstance(self.paginator, CursorKeysetPaginator) and self.cursor is None:
            raise ValueError("cursor_keyset paging needs a 'cursor'")
        if self.join_concurrency > 1 and not self.joins:
            raise ValueError("join_concurrency applies to joins; this stream has none")
        return self


class SoapLimitsConfig(LimitsConfig):
    max_depth: int = Field(default=100, ge=8, le=255)


class SoapSourceConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: Literal["soap"]
    description: str = ""
    wsdl: str  # a URL (loaded once per process, same host only) or a file path relative to the source file
    service: str | None = None
    port: str | None = None
    address: str | None = None  # override the endpoint the WSDL names (e.g. a WSDL shipped as a file)
    id_system: str
    auth: SoapCredentials = NoCredentials(type="none")
    decode: Literal["lxml", "zeep"] = "lxml"
    faults: list[FaultRule] = Field(default_factory=list)
    limits: SoapLimitsConfig = SoapLimitsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    streams: dict[str, SoapStreamConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _connections_for_the_joins(self) -> SoapSourceConfig:
        wanted = max(s.join_concurrency for s in self.streams.values())
        if wanted > self.limits.max_connections:
            raise ValueError(
                f"join_concurrency {wanted} exceeds limits.max_connections {self.limits.max_connections}: "
                "calls would queue for a connection; raise max_connections or lower join_concurrency"
            )
        return self
