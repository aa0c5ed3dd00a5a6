# Sluice: `make dev` runs the embedded stack, `make test` runs the tests. Both install first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEV_ARGS ?= --demo

.PHONY: install browser dev test test-slow bench proto proto-check typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml ingress/_scan.c streams/_decode.c streams/_aggregate.c streams/_columns.c streams/_native.c streams/_jsonl.c streams/buffer.h sluice/protowire.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps opentelemetry-exporter-prometheus-remote-write==0.66b1
	touch $@

# The console's browser tests need Debian's headless Chromium and its driver (installed as root,
# as CI runs); `make dev` does not.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

## dev: install, then run Tansu + gateway + worker + chDB on this machine (Ctrl-C stops)
dev: $(STAMP)
	$(BIN)/sluice dev $(DEV_ARGS)

## test: install, type-check, then run the whole suite (unit + integration on real Tansu and chDB)
test: $(STAMP) browser
	$(BIN)/mypy sluice bench
	$(BIN)/python -m pytest

## test-slow: the long fault and soak runs
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

## bench: side-by-side benchmarks of every scenario (about 10 minutes); writes bench/RESULTS.md
bench: $(STAMP)
	$(BIN)/python -m sluice.cli.main bench

## proto: regenerate the Python code of proto/ (committed; a test fails when it is stale)
proto: $(STAMP)
	$(BIN)/python -m sluice.cli.protogen

typecheck: $(STAMP)
	$(BIN)/mypy sluice bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
