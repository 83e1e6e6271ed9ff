"""Station gateway: supervised acquisition per instrument, local interpretation (`gateway.interpret`),
durable SQLite outbox (store-and-forward), MQTT link with end-to-end application acks, config, CLI.

Does not: talk to the cloud's database or import `cloud`; drivers are used only through `drivers`.
"""
