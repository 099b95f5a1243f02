# The two set-up commands of the README: `make demo` and `make test`. Each creates the virtualenv,
# installs fraudstream, fetches Apache Kafka through Maven if it is not cached, and runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Test files run on this many pytest-xdist workers, each with its own broker (tests/conftest.py).
TEST_JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile
STAMP  := $(VENV)/.installed-dev

.PHONY: install demo test test-unit test-integration kafka-up kafka-down bench clean

# setup.py and the kernel source too: the install compiles the .pyx kernels in place.
$(STAMP): pyproject.toml setup.py features/_kernel.pyx online_models/_linear.pyx
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: local broker, generated traffic, worker, scores arriving, summary; stops it all.
demo: $(STAMP)
	$(BIN)/fraudstream demo

## The whole test suite; integration tests start their own broker (or use $$KAFKA_BOOTSTRAP).
test: $(STAMP)
	$(PYTEST)

test-unit: $(STAMP)
	$(PYTEST) tests/unit features online_models stream

test-integration: $(STAMP)
	$(PYTEST) tests/integration

kafka-up: $(STAMP)
	$(BIN)/fraudstream kafka up

kafka-down: $(STAMP)
	$(BIN)/fraudstream kafka down

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
