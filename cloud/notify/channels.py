"""Channel formats: an event becomes an HTTP request for each channel kind; a response becomes sent or not.

Kinds:
    webhook   generic: POST application/json ``{"event": id, "kind", "title", "text", "data"}`` with
              ``X-Kuaijian-Event``, ``X-Kuaijian-Timestamp`` (unix seconds) and
              ``X-Kuaijian-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` when a secret is set
    wecom     企业微信 group robot: POST ``{"msgtype": "markdown", "markdown": {"content": …}}`` to the robot's
              webhook URL (…/cgi-bin/webhook/send?key=…); delivered when the JSON answer has errcode 0
    dingtalk  钉钉 group robot: POST ``{"msgtype": "markdown", "markdown": {"title": …, "text": …}}`` to
              …/robot/send?access_token=…; with a secret ("加签") the URL gets ``timestamp`` (ms) and
              ``sign`` = base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")); delivered when errcode is 0
    sms       an HTTP SMS gateway: POST ``{"phones": […], "text": …, "event": id}`` with
              ``Authorization: Bearer <secret>``; delivered on 2xx. Vendor SMS APIs sit behind such a gateway.

Does not: network I/O (cloud.notify.sender), or choose recipients (cloud.notify.queue).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from cloud.errors import Invalid

Kind = Literal["webhook", "wecom", "dingtalk", "sms"]
KINDS: tuple[Kind, ...] = ("webhook", "wecom", "dingtalk", "sms")
SMS_MAX_CHARS = 300


@dataclass(frozen=True)
class Event:
    key: str  # stable id, e.g. "case-action:42" or "risk:7"
    kind: str  # report|assign|remind|feedback|escalate|close|note|risk
    title: str
    text: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Channel:
    id: int
    kind: Kind
    url: str
    secret: str | None
    phones: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    url: str
    headers: dict[str, str]
    body: bytes


def check_url(url: str) -> str:
    """Accept only absolute http(s) URLs with a host; Invalid otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("a channel URL must be an absolute http:// or https:// URL")
    return url


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def build(channel: Channel, event: Event, now_s: float) -> Request:
    """The HTTP request that delivers `event` on `channel` at unix time `now_s`."""
    base = {"Content-Type": "application/json; charset=utf-8", "X-Kuaijian-Event": event.key}
    if channel.kind == "webhook":
        body = _json(
            {
                "event": event.key,
                "kind": event.kind,
                "title": event.title,
                "text": event.text,
                "data": event.data,
            }
        )
        headers = dict(base)
        ts = str(int(now_s))
        headers["X-Kuaijian-Timestamp"] = ts
        if channel.secret:
            mac = hmac.new(channel.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers["X-Kuaijian-Signature"] = f"sha256={mac}"
        return Request(channel.url, headers, body)
    if channel.kind == "wecom":
        content = f"**{event.title}**\n{event.text}"
        return Request(channel.url, base, _json({"msgtype": "markdown", "markdown": {"content": content}}))
    if channel.kind == "dingtalk":
        url = channel.url
        if channel.secret:
            ms = str(int(now_s * 1000))
            digest = hmac.new(
                channel.secret.encode(), f"{ms}\n{channel.secret}".encode(), hashlib.sha256
            ).digest()
            sign = urllib.parse.quote_plus(base64.b64encode(digest).decode())
            url += ("&" if "?" in url else "?") + f"timestamp={ms}&sign={sign}"
        text = f"#### {event.title}\n\n{event.text}"
        return Request(
            url, base, _json({"msgtype": "markdown", "markdown": {"title": event.title, "text": text}})
        )
    if channel.kind == "sms":
        headers = dict(base)
        if channel.secret:
            headers["Authorization"] = f"Bearer {channel.secret}"
        text = f"{event.title}：{event.text}"[:SMS_MAX_CHARS]
        return Request(
            channel.url, headers, _json({"phones": list(channel.phones), "text": text, "event": event.key})
        )
    raise Invalid(f"unknown channel kind {channel.kind!r}")


def delivered(kind: Kind, status: int, body: bytes) -> tuple[bool, str | None]:
    """(sent?, reason if not) from an HTTP answer: 2xx, and for the robots a JSON errcode of 0."""
    if not 200 <= status < 300:
        return False, f"HTTP {status}"
    if kind in ("wecom", "dingtalk"):
        try:
            answer = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return False, "robot answer is not JSON"
        code = answer.get("errcode") if isinstance(answer, dict) else None
        if code != 0:
            return False, f"errcode {code}: {answer.get('errmsg') if isinstance(answer, dict) else ''}"
    return True, None
