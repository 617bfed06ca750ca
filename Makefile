# Two commands do everything: `make run` and `make test`. `make serve` runs the
# production web server alone (granian, as compose's backend).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DEBUG ?= 1

.PHONY: run serve test test-js lint format migrate venv clean
JS := clients/react

venv: $(STAMP)

# The runtime (requirements.txt), the tools tests and linting need, and the Python
# client with its `canary` command (clients/python, editable: .venv/bin/canary).
$(STAMP): requirements.txt requirements-dev.txt clients/python/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet -e clients/python
	touch $(STAMP)

migrate: venv
	$(BIN)/python manage.py migrate --noinput

run: migrate
	@echo "Demo login: demo / demo-password  (admin role); its API token is the line below."
	@$(BIN)/python manage.py canary_user demo --role admin --password demo-password --rotate-token | tail -n 1
	./scripts/run.sh

# DATABASE_URL, REDIS_URL, SECRET_KEY from the environment; migrates first.
serve: venv
	DEBUG=0 ./scripts/serve.sh

# pytest's exit code 5 (no tests collected) counts as a failure. The Python client's
# own tests run from its folder, as they do for anyone who installs it alone.
test: venv test-js
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; \
	if [ $$status -ne 0 ]; then exit $$status; fi; \
	cd clients/python && ../../$(BIN)/python -m pytest -q

# The React package (clients/react): typecheck and vitest, when node is installed.
# Dependencies come from the lockfile (npm ci), again only when it changed.
test-js:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: skipping the React package's tests (CI runs them)" >&2; exit 0; fi; \
	cd $(JS) && if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
		npm ci --no-audit --no-fund --loglevel=error; fi && npm test

# Style, then the architecture's contracts (.importlinter) and the types of the
# Django-free packages ([tool.mypy] in pyproject.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var db.sqlite3 staticfiles $(JS)/node_modules $(JS)/dist
