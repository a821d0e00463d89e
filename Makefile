# cityid — the two commands: `make run` (demo) and `make test`.
# The newest python3.x >= 3.11 on PATH (Debian 13: 3.13, Ubuntu 24.04: 3.12); `make PYTHON=…` to choose.
ifeq ($(origin PYTHON), undefined)
PYTHON := $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test fuzz lint typecheck translations messages system-deps bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python >= 3.11 (python3.13, python3.12, python3.11 or python3 on PATH)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(BIN)/pip install -q -e '.[dev]'
	$(MAKE) translations
	touch $(STAMP)

# Browser-test tooling (axe-core), for `make test` only: the demo needs no npm.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "need npm (Debian: apt-get install npm) for axe-core"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

translations: $(BIN)/python
	@if ls idp/translations/*/LC_MESSAGES/messages.po >/dev/null 2>&1; then \
		$(BIN)/pybabel compile -d idp/translations >/dev/null; fi

# Citizen-page texts: `make messages` after adding or changing any _() text, then translate the
# new entries in idp/translations/de/LC_MESSAGES/messages.po (tests/pages/test_i18n.py insists).
LOCALE_DIRS := de en tr ar uk
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -k N_ --sort-by-file --add-location=file -w 100 \
		--project=cityid --copyright-holder="cityid contributors" -o idp/translations/messages.pot .
	@for l in $(LOCALE_DIRS); do \
		if [ -f idp/translations/$$l/LC_MESSAGES/messages.po ]; then \
			$(BIN)/pybabel update -w 100 --no-fuzzy-matching --ignore-obsolete -i idp/translations/messages.pot \
				-d idp/translations -l $$l; \
		else \
			$(BIN)/pybabel init -w 100 -i idp/translations/messages.pot -d idp/translations -l $$l; fi; done
	$(BIN)/pybabel compile -d idp/translations --statistics

extract-messages: messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Debian packages the tests use as real components (SoftHSM2, Chromium, OpenSSL).
system-deps:
	@bash scripts/system-deps.sh

run: $(STAMP)
	$(BIN)/cityid demo --data-dir ./.cityid-data

test: $(STAMP) $(NODE_STAMP) system-deps translations
	$(BIN)/ruff check .
	$(BIN)/mypy pki/ attestation/ policies/ smartcard/ idp/ db/ signing/ walletsim/
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25

# The fuzz campaign's long profile (tests/fuzz; `make test` runs its short, fixed one): every
# endpoint under generated hostile requests for FUZZ_SECONDS (20 minutes), schemathesis against a
# live `cityid serve` among them; prints the requests sent per endpoint and the server errors (0).
FUZZ_SECONDS ?= 1200
fuzz: $(STAMP) translations
	CITYID_FUZZ_PROFILE=long CITYID_FUZZ_SECONDS=$(FUZZ_SECONDS) CITYID_FUZZ_REPORT=fuzz-report.json \
		$(BIN)/pytest -q -p no:cacheprovider tests/fuzz

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy pki/ attestation/ policies/ smartcard/ idp/ db/ signing/ walletsim/

# All benches as JSON lines (one object per line). The side-by-side run with the certified Node peer
# needs its harness set up in $(BENCH_PEER) (see bench/compare_peer.py); skipped when it is missing.
BENCH_PEER ?= /tmp/bench-peer
bench: $(STAMP)
	@for b in token layers login login_cost attestation ca smartcard wallet; do \
		if [ -f bench/$$b.py ]; then $(BIN)/python -m bench.$$b | grep '^{' || exit 1; fi; done
	@if [ -d $(BENCH_PEER)/peer/node_modules ]; then \
		$(BIN)/python -m bench.compare_peer --peer $(BENCH_PEER) --json; \
	else echo '{"bench": "compare_peer", "skipped": "peer harness not set up in $(BENCH_PEER)"}'; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
