"""The declarative source file: a closed set of component kinds, validated with ``extra="forbid"``.

One YAML file describes one source system: where it is, how to authenticate, and per stream how to page, where
the records are, what their key and cursor are, and how a record becomes a canonical work item. No import paths,
no code: what cannot be said here is a Python connector.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connectors.auth_config import ClientCertificateAuth, HmacHeadersAuth
from gateway.types import EventKind, ItemKind, Role


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- authentication --------------------------------------------------------------------------------------


class NoAuth(_Strict):
    type: Literal["none"]


class LoginTokenAuth(_Strict):
    """Log in with a request, read a token from the response, send it as a header; refresh on expiry or 401."""

    type: Literal["login_token"]
    path: str
    method: Literal["POST", "GET"] = "POST"
    body: dict[str, Any] = Field(default_factory=dict)
    username: str | None = None
    password: SecretStr | None = None
    username_field: str = "username"
    password_field: str = "password"  # noqa: S105 - a field name, not a password
    token_path: str = "data.token"  # noqa: S105 - a JSON path, not a token
    expires_in_path: str | None = None
    default_ttl: float = 300.0
    refresh_before: float = 30.0
    header: str = "X-Authentication-Token"
    prefix: str = ""


class ApiKeyAuth(_Strict):
    type: Literal["api_key"]
    header: str = "X-API-Key"
    api_key: SecretStr


class BasicAuth(_Strict):
    type: Literal["basic"]
    username: str
    password: SecretStr


class OAuth2ClientCredentials(_Strict):
    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    client_auth: Literal["form", "basic"] = "form"
    refresh_before: float = 60.0


AuthConfig = Annotated[
    NoAuth
    | LoginTokenAuth
    | ApiKeyAuth
    | BasicAuth
    | OAuth2ClientCredentials
    | HmacHeadersAuth  # these two are defined in connectors.auth_config, shared with Python connectors
    | ClientCertificateAuth,
    Field(discriminator="type"),
]


# --- envelope, pagination, cursor ------------------------------------------------------------------------


class Envelope(_Strict):
    """``status.code == "0"`` means success even when HTTP says 200 for an error (iOffice style)."""

    status_path: str
    success: list[str]
    message_path: str | None = None
    auth_failure: list[str] = Field(default_factory=list)


class PageNumberPaginator(_Strict):
    type: Literal["page_number"]
    page_param: str = "page"
    size_param: str = "size"
    size: int = Field(default=100, ge=1, le=10_000)
    start: int = 1
    total_path: str | None = None
    max_pages: int = 1_000_000


class OffsetPaginator(_Strict):
    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    size: int = Field(default=100, ge=1, le=10_000)
    total_path: str | None = None
    max_pages: int = 1_000_000


class NextLinkPaginator(_Strict):
    """A token or URL for the next page sits in the response (``next_path``)."""

    type: Literal["next_link"]
    next_path: str
    token_param: str | None = None  # None: the value is a URL to GET
    max_pages: int = 1_000_000


class CursorKeysetPaginator(_Strict):
    """The source filters by an inclusive lower bound on the cursor field and sorts by it.

    Each next page is asked from the last cursor value seen (dropping records already seen at that value),
    so records that change while we page cannot shift others out of view. A run of equal values longer than
    a page is walked with ``page_param``.
    """

    type: Literal["cursor_keyset"]
    page_param: str = "page"
    size_param: str = "size"
    size: int = Field(default=500, ge=1, le=10_000)
    start: int = 1
    max_pages: int = 1_000_000


PaginatorConfig = Annotated[
    PageNumberPaginator | OffsetPaginator | NextLinkPaginator | CursorKeysetPaginator,
    Field(discriminator="type"),
]


class CursorConfig(_Strict):
    field: str
    param: str
    format: str = "iso"  # "iso", "epoch", or a pattern such as "dd/MM/yyyy HH:mm:ss" (read as Vietnam time)
    lookback: str = "0s"  # e.g. "15m", "2h", "1d"
    start: str  # first run's lower bound, in ``format``
    sorted: bool = False  # the source returns records ascending by this field


class SubRequest(_Strict):
    """A per-record GET whose result is attached to the record under ``name`` (e.g. an activity log)."""

    name: str
    path: str  # may use {field} placeholders from the record
    records: str = "data"
    concurrency: int = Field(default=8, ge=1, le=32)
    skip_if_present: bool = True  # a list that already embeds ``name`` needs no sub-request


# --- field map -------------------------------------------------------------------------------------------


class FieldSpec(_Strict):
    path: str
    format: str | None = None  # a date pattern, "iso" or "epoch"
    end_of_day: bool = False  # a date-only deadline means the end of that day
    map: dict[str, str] | None = None
    default: Any = None


Field_ = str | FieldSpec


class ParticipantSpec(_Strict):
    role: Role
    user: str | None = None
    users: str | None = None  # path to a list of user ids


class EventSpec(_Strict):
    source: str  # path to the list of events in the record (after sub-requests)
    kind: FieldSpec
    at: FieldSpec
    actor: Field_ | None = None
    target: Field_ | None = None
    due_at: FieldSpec | None = None
    note: Field_ | None = None

    @field_validator("kind")
    @classmethod
    def _kinds_known(cls, spec: FieldSpec) -> FieldSpec:
        known = {k.value for k in EventKind}
        bad = sorted(v for v in (spec.map or {}).values() if v not in known)
        if bad:
            raise ValueError(f"unknown event kinds {bad}; use one of {sorted(known)}")
        return spec


class NormalizeConfig(_Strict):
    kind: ItemKind
    key: str  # template with {field} placeholders; the canonical work-item key
    agency: Field_
    unit: Field_ | None = None
    title: Field_ | None = None
    doc_type: Field_ | None = None
    number_symbol: Field_ | None = None
    status: Field_ | None = None
    received_at: FieldSpec | None = None
    due_at: FieldSpec | None = None
    done_at: FieldSpec | None = None
    revoked_when: dict[str, list[str]] | None = None  # {path: [values meaning revoked]}
    participants: list[ParticipantSpec] = Field(default_factory=list)
    events: EventSpec | None = None
    attributes: dict[str, Field_] = Field(default_factory=dict)


class StreamConfig(_Strict):
    path: str
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str] = Field(default_factory=dict)
    paginator: PaginatorConfig | None = None
    records: str
    key: str
    cursor: CursorConfig | None = None
    sub_requests: list[SubRequest] = Field(default_factory=list)
    normalize: NormalizeConfig


class LimitsConfig(_Strict):
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    deadline: float = 60.0
    max_bytes: int = 32 * 1024 * 1024
    max_connections: int = 10


class ScheduleConfig(_Strict):
    """Every ``interval`` seconds, or at the times of ``cron`` (5 fields, Vietnam time); plus up to ``jitter`` s."""

    interval: float = Field(default=60.0, gt=0)
    jitter: float = Field(default=5.0, ge=0)
    cron: str | None = None
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron_valid(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (minute hour day month weekday)")
        return value


class RestSourceConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: Literal["rest"]
    description: str = ""
    base_url: str
    id_system: str
    auth: AuthConfig
    envelope: Envelope | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    limits: LimitsConfig = LimitsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    streams: dict[str, StreamConfig]
