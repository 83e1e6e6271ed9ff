"""Response/request models of the REST API (they define the OpenAPI schema).

Does not: validation of wire payloads (kuaijian_schema) or storage.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from kuaijian_schema import EnzymeSpec, StripSpec

T = TypeVar("T")
Verdict = Literal["negative", "positive", "suspect", "invalid"]


class Page(BaseModel, Generic[T]):
    total: int = Field(description="rows matching the filters (all pages)")
    limit: int
    offset: int
    items: list[T]


class InstrumentOut(BaseModel):
    serial: str
    model: str
    driver: str


class SampleOut(BaseModel):
    id: str
    product: str
    producer: str | None
    sampled_at: str | None


class ResultOut(BaseModel):
    id: str
    seq: int
    station: str
    station_name: str | None = Field(default=None, description="the station's name (in lists)")
    instrument: InstrumentOut
    sample: SampleOut
    method: str
    analyte: str
    channel: int
    measured_at: str
    verdict: Verdict
    values: dict[str, float | None]
    qc: list[str]
    algorithm: str
    config_version: str
    operator: str | None
    received_at: str
    has_raw: bool
    flags: list[str] = []
    """Set by ingest: `implausible_time` (measured_at is then the receive time; the station's own time is in
    `measured_at_sent`), `seq_jump`."""
    measured_at_sent: str | None = None


class ResultDetail(ResultOut):
    raw: dict[str, Any] | None


class StationOut(BaseModel):
    id: str
    name: str
    node_code: str
    village_code: str | None
    enrolled_at: str
    last_seen: str | None
    online: bool
    backlog: int | None = Field(description="outbox depth reported by the gateway")
    oldest_unsent_age_s: float | None
    free_disk_bytes: int | None
    config_version: str | None
    status_at: str | None
    high_seq: int
    open_gaps: int


class StationDetail(StationOut):
    status: dict[str, Any] | None


class People(BaseModel):
    grid_head: str | None
    information_officer: str | None
    co_manager: str | None


class NodeOut(BaseModel):
    code: str
    level: str
    name: str
    people: People


class TreeNode(NodeOut):
    children: list[TreeNode]


class Stats(BaseModel):
    tests: int
    positives: int
    suspects: int
    positive_rate: float
    open_cases: int
    stations: int
    stations_online: int


class RollupNode(Stats):
    code: str | None
    level: str
    name: str
    people: People | None


class Rollup(BaseModel):
    node: RollupNode
    children: list[RollupNode]


class CaseOut(BaseModel):
    id: int
    station: str
    level: str
    node_code: str = Field(description="currently responsible grid node")
    status: Literal["open", "assigned", "feedback", "closed"]
    reason: Literal["positive", "repeated_suspect"]
    result_id: str
    product: str
    analyte: str
    opened_at: str
    deadline: str
    assignee: str | None
    closed_at: str | None
    escalations: int
    reminded: str
    updated_at: str
    station_name: str | None = Field(default=None, description="the name of the station that reported it")
    overdue: bool = Field(default=False, description="not closed and past its deadline (in lists)")


class CaseAction(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    note: str | None
    data: dict[str, Any] | None


class CaseDetail(CaseOut):
    actions: list[CaseAction]
    sample: dict[str, Any] | None = Field(
        default=None,
        description="the registered sample: producer, batch, status, and every result line with values and QC flags",
    )
    results: list[dict[str, Any]] = Field(
        default_factory=list,
        description="every result of the case's sample at its station (values, qc, signal: raw-signal plot points)",
    )
    assignees: list[str] = Field(
        default_factory=list, description="users the case may be assigned to (its station or a level above)"
    )


class CaseActionIn(BaseModel):
    action: Literal["assign", "remind", "feedback", "escalate", "close", "note"]
    note: str | None = Field(default=None, max_length=2000)
    assignee: str | None = Field(
        default=None,
        max_length=200,
        description="for assign (交办): the name of a user responsible for the case's station",
    )
    feedback: (
        Literal[
            "retest_negative",
            "retest_positive",
            "product_held",
            "product_destroyed",
            "lab_confirmed",
            "lab_negative",
        ]
        | None
    ) = Field(default=None, description="for feedback (反馈)")
    data: dict[str, str | float | int | bool | None] | None = Field(
        default=None, description="extra facts, e.g. retest result id, lab report number, quantity held"
    )


class ConfigPushIn(BaseModel):
    target: str = Field(min_length=1, max_length=64, description="station id or grid node code")
    gold_kits: list[StripSpec] = Field(default_factory=list)
    enzyme_profiles: list[EnzymeSpec] = Field(default_factory=list)


class ConfigPushOut(BaseModel):
    version: str
    issued_at: str
    target: str
    stations: list[str]
    published: int = Field(description="stations whose retained config the broker has acknowledged so far")


class ConfigOut(BaseModel):
    id: int
    station: str
    version: str
    issued_at: str
    issued_by: str
    target: str
    published_at: str | None
    config: dict[str, Any]


class GapOut(BaseModel):
    id: int
    station: str
    first_seq: int
    last_seq: int
    detected_at: str
    closed_at: str | None


class DeadLetterOut(BaseModel):
    id: int
    received_at: str
    topic: str
    payload: str
    reason: str
    station: str | None
    result_id: str | None
    sha256: str | None = None
    """SHA-256 of the rejected item as received (canonical JSON)."""
    stored_sha256: str | None = None
    """Conflicting duplicate: the hash of the result already stored under that id."""
