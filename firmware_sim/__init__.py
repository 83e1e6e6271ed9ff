"""Simulated analyzers: a physical signal model with exact ground truth (`firmware_sim.signal_model`)
and instrument firmware that speaks the real protocols on pseudo-terminals and TCP ports, with fault
injection (garbled frames, bad checksums, truncation, silence, unplug/replug, slow devices).

Does not: import `gateway` or `cloud`; it is a stand-in for hardware, used by tests, demo and benchmarks.
"""
