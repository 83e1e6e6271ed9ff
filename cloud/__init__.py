"""Cloud service: MQTT ingest (validate, verify HMAC, store idempotently, ack), grid hierarchy
(county → town → village → station), cases with deadlines and escalation, reports, REST API and the
live dashboard.

Does not: import `gateway` or `drivers`; the only shared code is `kuaijian_schema`.
"""
