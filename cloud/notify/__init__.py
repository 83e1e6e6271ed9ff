"""Notifications (通知): case events, reminders, escalations and risk alerts sent to each unit's channels.

Layers (one module each):
    channels  the message formats of each channel kind — a generic signed webhook, 企业微信 (WeCom) and 钉钉
              (DingTalk) group robots, an HTTP SMS gateway — as pure functions: event → (url, headers, body),
              and response → delivered or not
    queue     the durable queue in the cloud database: `fan_out` turns new case actions and risk alerts
              (read by cursor from their audit tables) into one row per (channel, event), in the same
              transaction that advances the cursor; `claim_due` / `mark_*` lease and settle rows
    sender    `deliver_due`: send what is due over HTTP with a timeout, retry with exponential backoff,
              record every attempt's outcome (the audit of what was sent)
    store     channel (subscription) records: per unit, or per user; scoped like everything else

Delivery is at least once to the receiver's door and exactly once in the audit: a row is marked sent only
after a 2xx (and, for the robots, errcode 0); every request carries the event's stable id
(``X-Kuaijian-Event``) so a receiver can drop a repeat after a lost response.

Does not: decide what happens to a case (cloud.cases) or when risk is high (cloud.risk).
"""
