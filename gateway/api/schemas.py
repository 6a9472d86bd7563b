"""Request and response models: the OpenAPI contract of ``/v1``. Routes serialize with orjson; tests check
conformance."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""Text a request body brings to the store: PostgreSQL text cannot hold NUL (it was a 500 there, and stored on
SQLite), so it is refused as an invalid value (422), like the 400 for one in a path or query string."""

_FACT_EXAMPLE: dict[str, Any] = {
    "id": 1042, "fact_key": "SKHCN:156/QĐ-SKHCN|P0012|drafter", "item_key": "SKHCN:156/QĐ-SKHCN",
    "person_id": "P0012", "role": "drafter", "agency": "SKHCN", "unit": "SKHCN.VP", "period": "2026-01",
    "product_code": "VB-QD", "catalog_version": "2026.1", "rule_id": "outgoing-decision", "units": "2.5000",
    "quantity": "1.0000", "assigned": True, "completed": True, "due_at": "2026-01-15T10:00:00+00:00",
    "done_at": "2026-01-14T08:30:00+00:00", "on_time": True, "delays": 0, "failed_reviews": 1, "exempt": False,
    "state": "active", "version": 2, "change_seq": 5120, "source": "eoffice", "stream": "outgoing",
    "record_key": "88231", "lineage": {"raw": {"source": "eoffice", "content_hash": "9f3a..."},
                                       "rule": {"id": "outgoing-decision", "file": "rules/skhcn.yaml", "line": 12}},
    "updated_at": "2026-01-14T08:31:02+00:00",
}  # fmt: skip


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class FactOut(BaseModel):
    """One person's credit for one product instance in one month. Units are exact decimal strings."""

    model_config = _examples(_FACT_EXAMPLE)
    id: int | None
    fact_key: str
    item_key: str
    person_id: str
    role: str
    agency: str
    unit: str | None
    period: str = Field(pattern=r"^\d{4}-\d{2}$")
    product_code: str
    catalog_version: str
    rule_id: str
    units: str = Field(description="converted standard units, exact decimal")
    quantity: str
    assigned: bool
    completed: bool
    due_at: str | None
    done_at: str | None
    on_time: bool | None
    delays: int
    failed_reviews: int
    exempt: bool
    state: Literal["active", "retracted"]
    version: int
    change_seq: int | None
    source: str
    stream: str
    record_key: str
    lineage: dict[str, Any]
    updated_at: str | None


class FactPage(BaseModel):
    model_config = _examples({"items": [_FACT_EXAMPLE], "next": "aWQ6MTA0Mg"})
    items: list[FactOut]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class ChangeOut(BaseModel):
    seq: int
    op: Literal["insert", "update", "retract"]
    fact_id: int
    fact_key: str
    agency: str
    period: str
    version: int
    committed_at: str
    fact: FactOut


class ChangePage(BaseModel):
    model_config = _examples({"items": [{"seq": 5120, "op": "update", "fact_id": 1042, "fact_key": "...",
                                         "agency": "SKHCN", "period": "2026-01", "version": 2,
                                         "committed_at": "2026-01-14T08:31:02+00:00", "fact": _FACT_EXAMPLE}],
                              "next": "c2VxOjUxMjA", "has_more": False})  # fmt: skip
    items: list[ChangeOut]
    next: str = Field(description="always present: keep polling with it (it does not move when nothing is new)")
    has_more: bool


class HistoryEntry(BaseModel):
    seq: int
    op: Literal["insert", "update", "retract"]
    version: int
    committed_at: str
    fact: FactOut


class SourceRecordOut(BaseModel):
    id: int
    source: str
    stream: str
    record_key: str
    content_hash: str
    fetched_at: str
    payload: Any


class ClosureOut(BaseModel):
    model_config = _examples({"agency": "SKHCN", "period": "2026-01", "closed_at": "2026-02-05T03:00:00+00:00",
                              "closed_by": "skhcn-admin", "closed_at_seq": 51200, "digest": "3b1f...",
                              "fact_count": 812, "policy": {"late_products": "deduct"}})  # fmt: skip
    agency: str
    period: str
    closed_at: str
    closed_by: str
    closed_at_seq: int
    digest: str = Field(description="SHA-256 of the period's fact snapshots in id order")
    fact_count: int
    policy: dict[str, Any] | None


class ClosureCheck(ClosureOut):
    digest_now: str = Field(description="the digest recomputed now: equal to `digest` while frozen")
    reproducible: bool


class ReopenIn(BaseModel):
    model_config = _examples({"reason": "đóng kỳ sớm: còn văn bản tháng 1 chưa cập nhật"})
    reason: Text = Field(min_length=3, max_length=1000, description="why the month is reopened (kept with it)")


class ReopeningOut(BaseModel):
    model_config = _examples({"id": 1, "agency": "SKHCN", "period": "2026-01", "closed_at": "2026-02-05T03:00:00+00:00",
                              "closed_by": "skhcn-admin", "closed_at_seq": 51200, "digest": "3b1f...",
                              "reopened_at": "2026-02-07T02:00:00+00:00", "reopened_by": "skhcn-admin",
                              "reason": "closed too early", "last_correction_id": 40, "facts_inserted": 1,
                              "facts_updated": 2, "facts_retracted": 1, "corrections_applied": 4})  # fmt: skip
    id: int
    agency: str
    period: str
    closed_at: str = Field(description="when the closure that this reopening ended was made")
    closed_by: str
    closed_at_seq: int
    digest: str = Field(description="the digest of that closure")
    reopened_at: str
    reopened_by: str
    reason: str
    last_correction_id: int = Field(description="corrections of the period up to this id have been applied")
    facts_inserted: int
    facts_updated: int
    facts_retracted: int
    corrections_applied: int | None = Field(default=None, description="given when the reopening is made")


class ReopeningPage(BaseModel):
    items: list[ReopeningOut]
    next: str | None


class CorrectionOut(BaseModel):
    id: int
    fact_id: int | None
    fact_key: str
    agency: str
    period: str
    op: Literal["insert", "update", "retract", "revert"]
    detected_at: str
    proposed: FactOut = Field(description="the fact as the source now gives it; the frozen fact is unchanged")
    settled_by_reopening: int | None = Field(
        default=None, description="the reopening that settled it (applied it, or found it superseded or stale); "
        "null while its month is still closed")  # fmt: skip


class CorrectionPage(BaseModel):
    items: list[CorrectionOut]
    next: str | None


class FactDetail(BaseModel):
    fact: FactOut
    history: list[HistoryEntry]
    source_record: SourceRecordOut | None
    rule: dict[str, Any] | None
    catalog_version: str
    person_resolution: dict[str, Any] | None
    closure: ClosureOut | None
    corrections: list[CorrectionOut]


class SummaryCounts(BaseModel):
    facts: int
    assigned: int
    completed: int
    on_time: int
    late: int
    delays: int
    failed_reviews: int = Field(description="failed quality reviews, returned drafts included when the policy says")
    facts_with_failed_reviews: int
    delayed: int
    exempt: int


class SummaryUnits(BaseModel):
    assigned: str
    completed: str
    completed_on_time: str
    completed_late: str
    quality: str = Field(description="completed units after 25% per failed review (exemptions honoured)")
    timeliness: str = Field(description="completed units on time, plus late ones after 25% per delay or 0 (policy)")
    quality_deducted: str
    timeliness_deducted: str


class Reference(BaseModel):
    label: str
    a_quantity_pct: str | None
    b_quality_pct: str | None
    c_timeliness_pct: str | None
    task_score_70: str | None


class SummaryOut(BaseModel):
    model_config = _examples({
        "agency": "SKHCN", "unit": "SKHCN.VP", "period": "2026-01", "months": ["2026-01"],
        "counts": {"facts": 40, "assigned": 38, "completed": 35, "on_time": 31, "late": 4, "delays": 5,
                   "failed_reviews": 3, "facts_with_failed_reviews": 2, "delayed": 4, "exempt": 1},
        "units": {"assigned": "52.0000", "completed": "48.5000", "completed_on_time": "43.0000",
                  "completed_late": "5.5000", "quality": "47.125000", "timeliness": "45.750000",
                  "quality_deducted": "1.375000", "timeliness_deducted": "2.750000"},
        "policies": [{"months": ["2026-01"], "late_products": "deduct"}],
        "reference": {"label": "REFERENCE ONLY ...", "a_quantity_pct": "93.27", "b_quality_pct": "90.63",
                      "c_timeliness_pct": "87.98", "task_score_70": "63.90"}})  # fmt: skip
    agency: str
    unit: str | None = None
    person_id: str | None = None
    period: str
    months: list[str]
    counts: SummaryCounts
    units: SummaryUnits
    policies: list[dict[str, Any]]
    reference: Reference


class SummaryPage(BaseModel):
    items: list[SummaryOut]
    next: str | None


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": "skhcn-frontend", "name": "KPI app of SKHCN", "agencies": ["SKHCN"], "roles": ["read_facts"]},
    ]})  # fmt: skip
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$")
    name: Text = Field(min_length=1, max_length=200)
    agencies: list[Text] = Field(min_length=1, max_length=200, description='agency codes, or ["*"] for all')
    roles: list[Literal["read_facts", "admin"]] = Field(min_length=1)
    rate_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)


class ClientOut(BaseModel):
    id: str
    name: str
    agencies: list[str]
    roles: list[str]
    rate_per_minute: int | None
    disabled: bool
    created_at: str


class KeyOut(BaseModel):
    key_id: str
    client_id: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class IssuedKey(KeyOut):
    key: str = Field(description="the full key: shown this once, only its hash is stored")


class AuditEntry(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next: str | None
