"""Every gateway CLI verb and topic is described in the gateway guide (station TOML keys are checked
with all other config keys in tests/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_gateway_guide_mentions_verbs_and_topics() -> None:
    guide = (DOCS / "gateway.md").read_text(encoding="utf-8")
    for verb in ("run", "status", "check-config", "rejected"):
        assert f"kuaijian gateway {verb}" in guide
    for kind in ("result", "ack", "status", "config"):
        assert f"kj/v1/{{station}}/{kind}" in guide
