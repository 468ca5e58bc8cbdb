# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CL_HOME ?= $(CURDIR)/var
export CL_HOME

.PHONY: run test test-quick test-scaleout bench bench-families install nginx browser clean

$(BIN)/activate: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(BIN)/activate

install: $(BIN)/activate

# The web server's buffering front is Debian's nginx (scripts/serve.sh): installed when missing,
# its system service left off.
run: install nginx
	@bash scripts/run.sh

nginx:
	@bash scripts/install-nginx.sh

# The whole suite on SQLite (browser and fault tests included), in two processes (pytest-xdist;
# a file's tests stay together, so its set-ups are shared), then the scale-out tests on
# PostgreSQL + Redis, which run on 127.0.0.1 on every project machine.
TEST_PROCESSES ?= 2
test: install nginx
	$(BIN)/python -m pytest -q -m "not scaleout" -n $(TEST_PROCESSES) --dist loadfile
	$(MAKE) --no-print-directory test-scaleout

# A few minutes' run for while you work: no slow tests, no browser, no PostgreSQL.
test-quick: install
	$(BIN)/python -m pytest -q -m "not slow and not browser and not scaleout" -n $(TEST_PROCESSES) --dist loadfile

test-scaleout: install
	DATABASE_URL=$${SCALEOUT_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} \
	REDIS_URL=$${SCALEOUT_REDIS_URL:-redis://127.0.0.1:6379/0} \
	$(BIN)/python -m pytest -q -m scaleout -p no:cacheprovider -n $(TEST_PROCESSES) --dist load

# Every benchmark beside its raw counterpart (bench/README.md; results in bench/results/), about
# 15 minutes on two cores. wrk (Debian's) loads the HTTP server from a process of its own.
bench: install nginx
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/fastpath.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/scoring.py
	$(BIN)/python bench/retraining.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/calibration.py

# The model-family comparison on seven tables (nested cross-validation, about 40 minutes, most of it the 327k-row flights; `--only TABLE` runs one).
bench-families: install
	$(BIN)/python bench/families.py

browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) var
