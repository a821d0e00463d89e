# cityid — the two commands: `make run` (demo) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck translations system-deps bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(BIN)/pip install -q -e '.[dev]'
	$(MAKE) translations
	touch $(STAMP)

translations: $(BIN)/python
	@if ls idp/translations/*/LC_MESSAGES/messages.po >/dev/null 2>&1; then \
		$(BIN)/pybabel compile -q -d idp/translations; fi

extract-messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -o idp/translations/messages.pot .
	$(BIN)/pybabel update -i idp/translations/messages.pot -d idp/translations

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Debian packages the tests use as real components (SoftHSM2, Chromium, OpenSSL).
system-deps:
	@bash scripts/system-deps.sh

run: $(STAMP)
	$(BIN)/cityid demo --data-dir ./.cityid-data

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy pki/ attestation/ policies/ smartcard/
	$(BIN)/pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy pki/ attestation/ policies/ smartcard/

bench: $(STAMP)
	@for b in token login attestation ca smartcard; do \
		if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(BIN)/python -m bench.$$b || exit 1; fi; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
