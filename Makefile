# One entry point for a fresh machine. `make demo` and `make test` both install first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench
install:
	bash scripts/bootstrap

demo: install
	$(VENV)/bin/kuaijian demo

test: install
	$(PY) -m pytest; rc=$$?; echo $$rc > $(VENV)/.pytest-exit; exit $$rc

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/interpret.py && $(PY) benchmarks/accuracy.py && $(PY) benchmarks/gateway.py && $(PY) benchmarks/cloud.py
