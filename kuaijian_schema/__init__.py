"""Shared wire contract between the station gateway and the cloud (MQTT payloads, topics, signing,
and the pushed configuration: strip specs and enzyme profiles).

Does: pydantic models of every MQTT payload, topic helpers, canonical JSON + HMAC-SHA256 signing,
UUIDv7 result ids; `mqtt_client`: the socket settings (TCP_NODELAY) every MQTT client of the project gets;
`sqlite_append`: the one way both sides append a batch of rows to an SQLite table. It is the only module both
`gateway` and `cloud` import, so no schema (and none of these two setups) is duplicated.

Does not: any interpretation, or storage of its own (no schema, no connection: `sqlite_append` writes only
through a connection and transaction its caller holds).
"""

from kuaijian_schema.specs import (
    Calibration4PL,
    EnzymeSpec,
    StripSpec,
    TestLine,
)
from kuaijian_schema.wire import (
    PROTOCOL_VERSION,
    Ack,
    InstrumentRef,
    ProducerInfo,
    RawSignal,
    Rejection,
    Result,
    SampleRef,
    SampleRegistration,
    StationConfig,
    Status,
    TaskInfo,
    canonical_json,
    check_payload,
    new_result_id,
    payload_sha256,
    sign_payload,
    split_result_payload,
    topic,
    verify_payload,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Calibration4PL",
    "EnzymeSpec",
    "InstrumentRef",
    "ProducerInfo",
    "RawSignal",
    "Rejection",
    "Result",
    "SampleRef",
    "SampleRegistration",
    "StationConfig",
    "Status",
    "StripSpec",
    "TaskInfo",
    "TestLine",
    "canonical_json",
    "check_payload",
    "new_result_id",
    "payload_sha256",
    "sign_payload",
    "split_result_payload",
    "topic",
    "verify_payload",
]
