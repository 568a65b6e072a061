# Two commands do everything: `make demo` and `make test`. Each creates its own venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench test-tools proto clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,demo]'
	# The tests' independent Sparkplug decoder; its client pins paho-mqtt<2, which the tests
	# never use (they decode payloads only), so it comes without its dependencies.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'pysparkplug>=0.6'
	touch $@

# The Sparkplug B payload module, from Eclipse Tahu's sparkplug_b.proto (Debian's protoc).
SPARKPLUG := gateway/delivery/sparkplug
proto:
	@command -v protoc >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler)
	protoc --proto_path=$(SPARKPLUG) --python_out=$(SPARKPLUG) --pyi_out=$(SPARKPLUG) \
	  $(SPARKPLUG)/sparkplug_b.proto

# make demo FORMAT=sparkplug: the same plant as a Sparkplug B edge node
FORMAT ?= json
demo: $(BIN)/.installed
	$(BIN)/factory-gateway demo --format $(FORMAT)

# The integration tests need Debian's mosquitto (they start it on a free port), its clients
# (a flood of commands is sent with mosquitto_pub), socat, Prometheus and promtool (they scrape
# /metrics), systemd-analyze (it verifies the unit; systemd itself need not run), protoc (the
# Sparkplug module must be what `make proto` makes) and chromium with its driver (the status
# page is tested in a real browser) and rabbitmq-server (a three-node cluster, started by the
# test, for broker failover).
test-tools:
	@(command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto) && \
	  command -v mosquitto_pub >/dev/null 2>&1 && command -v socat >/dev/null 2>&1 && \
	  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && \
	  command -v systemd-analyze >/dev/null 2>&1 && command -v protoc >/dev/null 2>&1 && \
	  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && \
	  test -x /usr/lib/rabbitmq/bin/rabbitmq-server || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    mosquitto mosquitto-clients socat prometheus systemd protobuf-compiler \
	    chromium chromium-driver rabbitmq-server)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Two workers, a test file each at a time (a file's tests may share a plant): the suite is
# mostly waiting on devices and brokers, so it takes about half the time on two cores.
pytest: $(BIN)/.installed test-tools
	$(BIN)/pytest -q -n 2 --dist loadfile

test: lint typecheck pytest

# make bench SCENARIO=modbus-1000dev (it counts messages with mosquitto_sub, independent of
# the gateway)
SCENARIO ?= hot-path
bench: $(BIN)/.installed test-tools
	$(BIN)/python -m bench $(SCENARIO)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
