"""Device-driver layer for rapid-test analyzers.

Does: pure codecs (bytes/registers ⇄ typed frames, no I/O) per analyzer family, a small `Transport`
protocol (serial via pyserial, TCP, loopback), and one session layer per protocol that owns retries,
timeouts, request/response matching and reconnect. Drivers return typed, frozen readings
(`drivers.readings`).

Does not: interpret signals (that is `gateway.interpret`), store or publish anything, or import
`gateway` / `cloud`.
"""
