# Two commands do everything: `make demo` and `make test`. Each creates its own venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench mosquitto mosquitto-clients clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,demo]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/factory-gateway demo

# The integration tests need Debian's mosquitto (they start it on a free port), its clients
# (a flood of commands is sent with mosquitto_pub) and socat.
mosquitto:
	@(command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto) && \
	  command -v mosquitto_pub >/dev/null 2>&1 && command -v socat >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    mosquitto mosquitto-clients socat)

# The benchmark counts messages with mosquitto_sub (C), independent of the gateway.
mosquitto-clients:
	@command -v mosquitto_sub >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Two workers, a test file each at a time (a file's tests may share a plant): the suite is
# mostly waiting on devices and brokers, so it takes about half the time on two cores.
pytest: $(BIN)/.installed mosquitto
	$(BIN)/pytest -q -n 2 --dist loadfile

test: lint typecheck pytest

# make bench SCENARIO=modbus-1000dev
SCENARIO ?= hot-path
bench: $(BIN)/.installed mosquitto mosquitto-clients
	$(BIN)/python -m bench $(SCENARIO)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
