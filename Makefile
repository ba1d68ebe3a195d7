# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv and install what they need; a broker comes from Docker when an
# engine answers, else from the Kafka jars on Maven Central (cached, needs Java 17 + Maven).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KAFKA_PORT ?= 9092
export KAFKA_PORT

.PHONY: test soak demo kafka-up kafka-down kafka-status bench lint lock install clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "Python 3.10+ is required" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m ruff check walcore consumer tests benchmarks scripts
	$(PY) -m ruff format --check walcore consumer tests benchmarks scripts
	$(PY) -m mypy
	$(PY) -m pytest

# The soak/chaos tests at full length (e.g. 200 SIGKILL rounds instead of 6); `make test`
# runs the same tests bounded.
soak: $(VENV)/.installed
	TIDAL_SOAK=1 $(PY) -m pytest -m soak

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

kafka-up: $(VENV)/.installed
	@$(PY) scripts/kafka_local.py up --port $(KAFKA_PORT)

kafka-down: $(VENV)/.installed
	@$(PY) scripts/kafka_local.py down

kafka-status: $(VENV)/.installed
	@$(PY) scripts/kafka_local.py status

bench: $(VENV)/.installed
	$(PY) benchmarks/wal_bench.py
	$(PY) benchmarks/e2e_bench.py
	$(PY) benchmarks/ack_latency.py
	$(PY) benchmarks/memory_bench.py
	$(PY) benchmarks/delivery_cost.py
	$(PY) benchmarks/store_bench.py
	$(PY) benchmarks/scaling_bench.py
	$(PY) benchmarks/serving_bench.py

lint: $(VENV)/.installed
	$(PY) -m ruff check walcore consumer tests benchmarks scripts
	$(PY) -m ruff format --check walcore consumer tests benchmarks scripts
	$(PY) -m mypy

# The Docker image's pinned dependencies: a clean venv with the runtime and [librdkafka] only.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q '.[librdkafka]'
	{ echo "# The image's exact dependency versions (Dockerfile: pip install -c requirements.lock '.[librdkafka]')."; \
	  echo "# Regenerate after changing pyproject.toml's dependencies: make lock"; \
	  .lock-venv/bin/pip freeze --exclude tidal-consumer; } > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .kafka build *.egg-info benchmarks/results
