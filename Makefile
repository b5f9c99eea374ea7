# sensorpipe: two commands on a fresh machine.
#   make run    venv + install, run the streaming job on the bundled samples, print the summary
#   make test   venv + install, start what the tests need, run pytest (all tests, slow included)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The cluster's Python (emr-spark-8.0.0); the dependency archive is built for it.
CLUSTER_PYTHON_VERSION ?= 3.11
CLUSTER_PYTHON_PREFIX ?= /usr
PYTEST_ARGS ?=

.PHONY: run run-hospital watch test lint dist samples clean venv synth checkov-venv system-packages kinesis-up kinesis-down warehouse-up warehouse-down

venv: $(STAMP)

# Debian packages (Java, PostgreSQL and its JDBC driver, MIT Kerberos): installed when missing
# and root, otherwise the exact command is printed.
system-packages:
	@bash tools/install-system-packages.sh

$(STAMP): setup.py tools/setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dist]' -e tools/
	touch $(STAMP)

# kinesalite on a fixed port for make run; tests start their own on free ports.
KINESIS_PORT ?= 4567
LOCAL_AWS := AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Start kinesalite on KINESIS_PORT, create the stream (2 shards), publish the bundled samples.
kinesis-up: venv node_modules/.installed
	export $(LOCAL_AWS); \
	$(VENV)/bin/sensorpipe local stop kinesalite >/dev/null; \
	$(VENV)/bin/sensorpipe local start kinesalite --port $(KINESIS_PORT) && \
	$(VENV)/bin/sensorpipe produce --endpoint-url http://127.0.0.1:$(KINESIS_PORT) --create-shards 2

kinesis-down: venv
	$(VENV)/bin/sensorpipe local stop kinesalite

# A fresh PostgreSQL (standing in for Redshift) on PG_PORT; its data lives in PG_DATA.
PG_PORT ?= 55432
PG_DATA ?= /tmp/sensorpipe-make-run-pgdata
warehouse-up: venv
	$(VENV)/bin/sensorpipe local stop postgres >/dev/null; rm -rf $(PG_DATA)
	$(VENV)/bin/sensorpipe local start postgres --port $(PG_PORT) --data-dir $(PG_DATA)

warehouse-down: venv
	$(VENV)/bin/sensorpipe local stop postgres

# The --py-files zip of the runtime package ($(1): where), for `make dist` and `make run`.
define py_files_zip
$(PY) -c 'import pathlib, zipfile; z = zipfile.ZipFile("$(1)", "w", zipfile.ZIP_DEFLATED); [z.write(p, p.relative_to("lib")) for p in sorted(pathlib.Path("lib/sensorpipe").rglob("*")) if p.is_file() and "__pycache__" not in p.parts]; z.close()'
endef
# The jobs as the README runs them by hand (and as EMR steps do): spark-submit with the zip.
SPARK_SUBMIT := $(VENV)/bin/spark-submit --master 'local[2]' --py-files build/sensorpipe.zip
# The terminal shows the producer, one line per micro-batch and the run summary; Spark's and
# the Python workers' logs, and the rollup's and plot's output, go to build/logs/ (on a failure
# the log's last lines are shown).
RUN_LOGS := build/logs
define logged
$(1) >>$(RUN_LOGS)/$(2).log 2>&1 || { echo "$(2) failed; the last lines of $(RUN_LOGS)/$(2).log:"; tail -n 40 $(RUN_LOGS)/$(2).log; exit 1; }
endef
run: system-packages venv node_modules/.installed
	@rm -rf build/lake build/checkpoints build/outbox $(RUN_LOGS) && mkdir -p $(RUN_LOGS)
	@$(call py_files_zip,build/sensorpipe.zip)
	@$(MAKE) --no-print-directory -s kinesis-up warehouse-up >$(RUN_LOGS)/services.log 2>&1
	@set -e; trap '$(VENV)/bin/sensorpipe local stop kinesalite >/dev/null; $(VENV)/bin/sensorpipe local stop postgres >/dev/null' EXIT; \
	export $(LOCAL_AWS) PYSPARK_PYTHON=$(abspath $(PY)) \
		SENSORPIPE_KINESIS_ENDPOINT=http://127.0.0.1:$(KINESIS_PORT) SENSORPIPE_PG_PORT=$(PG_PORT); \
	echo "published the samples to kinesalite ($$(grep -o 'produced [0-9]* records' $(RUN_LOGS)/services.log)); streaming job:"; \
	$(SPARK_SUBMIT) jobs/stream_sensor_anomalies.py --config conf/local.yaml --summary-json build/run-summary.json --summary-text build/run-summary.txt 2>>$(RUN_LOGS)/stream.log \
		|| { echo "stream job failed; the last lines of $(RUN_LOGS)/stream.log:"; tail -n 40 $(RUN_LOGS)/stream.log; exit 1; }; \
	$(call logged,$(SPARK_SUBMIT) jobs/batch_daily_rollup.py --config conf/local.yaml --all-days,rollup); \
	$(call logged,$(VENV)/bin/sensorpipe plot --sample-anomaly 0 --out build/plots/sample-anomaly-0.png,plot); \
	echo "daily rollup and plot: build/logs/rollup.log, build/plots/; Spark's logs: build/logs/stream.log"; \
	cat build/run-summary.txt

# Watch it work: kinesalite and PostgreSQL, the samples replayed into Kinesis at WATCH_RATE
# records/s (event times moved to now), the streaming job running continuously, and the
# operations page (`sensorpipe view`) on WATCH_PORT. Ctrl-C stops everything it started.
WATCH_RATE ?= 300
WATCH_PORT ?= 8765
watch: system-packages venv node_modules/.installed
	@mkdir -p $(RUN_LOGS)
	@export $(LOCAL_AWS) PYSPARK_PYTHON=$(abspath $(PY)); \
	echo "Spark's logs: $(RUN_LOGS)/watch.log"; \
	$(VENV)/bin/sensorpipe watch --rate $(WATCH_RATE) --port $(WATCH_PORT) 2>$(RUN_LOGS)/watch.log

# The hospital's jobs on a synthetic hospital (no real PHI): a local PostgreSQL as the
# on-premises database, then ingest (twice: the second run finds nothing new); the monitors'
# and pacemakers' telemetry through kinesalite and the streaming job (everything it writes in
# the protected zone, checked against the telemetry's manifest); the snapshot of today, with
# the incidents the job found; and the lineage answer for the general zone's profile. The token
# key is random, kept in build/. Output in build/logs/hospital-*.log.
HOSPITAL_PG_PORT ?= 55433
HOSPITAL_PG_DATA ?= /tmp/sensorpipe-make-run-hospital-pgdata
HOSPITAL_KINESIS_PORT ?= 4568
HOSPITAL_STATE := --state-dir build/local-hospital
HOSPITAL_DEVICES := build/hospital/source/device-samples
run-hospital: system-packages venv node_modules/.installed
	@rm -rf build/hospital build/lineage build/logs/hospital-*.log && mkdir -p $(RUN_LOGS)
	@$(VENV)/bin/sensorpipe local stop postgres $(HOSPITAL_STATE) >/dev/null; rm -rf $(HOSPITAL_PG_DATA)
	@$(VENV)/bin/sensorpipe local stop kinesalite $(HOSPITAL_STATE) >/dev/null
	@set -e; trap '$(VENV)/bin/sensorpipe local stop postgres $(HOSPITAL_STATE) >/dev/null; $(VENV)/bin/sensorpipe local stop kinesalite $(HOSPITAL_STATE) >/dev/null' EXIT; \
	export $(LOCAL_AWS) PYSPARK_PYTHON=$(abspath $(PY)) SENSORPIPE_HOSPITAL_PG_PORT=$(HOSPITAL_PG_PORT) \
		SENSORPIPE_KINESIS_ENDPOINT=http://127.0.0.1:$(HOSPITAL_KINESIS_PORT); \
	$(call logged,$(VENV)/bin/sensorpipe local start postgres $(HOSPITAL_STATE) --port $(HOSPITAL_PG_PORT) --data-dir $(HOSPITAL_PG_DATA),hospital-services); \
	$(call logged,$(VENV)/bin/sensorpipe local start kinesalite $(HOSPITAL_STATE) --port $(HOSPITAL_KINESIS_PORT),hospital-services); \
	$(VENV)/bin/sensorpipe phi-key --out build/phi-token-key >/dev/null; \
	export SENSORPIPE_PHI_TOKEN_KEY=$$(cat build/phi-token-key); \
	$(call logged,$(VENV)/bin/sensorpipe hospital-seed --port $(HOSPITAL_PG_PORT) --recreate,hospital-import); \
	$(call logged,$(PY) jobs/ingest_jdbc.py --config conf/health-local.yaml,hospital-import); \
	$(call logged,$(PY) jobs/ingest_jdbc.py --config conf/health-local.yaml,hospital-import); \
	echo "database import: seeded and imported twice (build/logs/hospital-import.log)"; \
	$(call logged,$(VENV)/bin/sensorpipe samples --catalogue hospital --out $(HOSPITAL_DEVICES) --start latest,hospital-services); \
	$(call logged,$(VENV)/bin/sensorpipe produce --stream hospital-devices --samples $(HOSPITAL_DEVICES) --endpoint-url $$SENSORPIPE_KINESIS_ENDPOINT --create-shards 2 --keep-event-times --quiet,hospital-services); \
	echo "device telemetry published to kinesalite ($$(grep -o 'produced [0-9]* records' $(RUN_LOGS)/hospital-services.log)); device stream job:"; \
	$(PY) jobs/stream_sensor_anomalies.py --config conf/hospital-stream-local.yaml --manifest $(HOSPITAL_DEVICES)/manifest.json \
		--summary-text build/hospital/device-run-summary.txt 2>>$(RUN_LOGS)/hospital-stream.log \
		|| { cat build/hospital/device-run-summary.txt 2>/dev/null; echo "device stream job failed; the last lines of $(RUN_LOGS)/hospital-stream.log:"; tail -n 40 $(RUN_LOGS)/hospital-stream.log; exit 1; }; \
	cat build/hospital/device-run-summary.txt; \
	$(call logged,$(PY) jobs/patient_profile_snapshot.py --config conf/health-local.yaml --as-of $$(date -u +%F),hospital-snapshot); \
	tail -n 3 $(RUN_LOGS)/hospital-snapshot.log; \
	$(VENV)/bin/sensorpipe lineage what-produced build/hospital/general/patient_profile --depth 2

# The AWS estate (infra/): CloudFormation templates in build/cdk.out, no AWS account needed.
# Node 20 is past the CDK's supported range; synthesis works, the warning is silenced.
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
synth: venv
	$(PY) infra/app.py --out build/cdk.out

# checkov pins its own versions of boto3 and friends: it gets a venv of its own.
CHECKOV_VENV := build/checkov-venv
checkov-venv: $(CHECKOV_VENV)/.installed
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==3.3.30'
	touch $@

test: system-packages venv node_modules/.installed $(CHECKOV_VENV)/.installed
	PYSPARK_PYTHON=$(abspath $(PY)) $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/shellcheck bootstrap/*.sh tools/*.sh .ci/run

samples: venv
	$(VENV)/bin/sensorpipe samples --out samples

# The three artifacts a cluster needs: the wheel, a zip for --py-files, and a venv-pack
# archive of the runtime dependencies (no pyspark: the cluster's Spark is used) for
# spark.archives, whose bin/python links to the cluster's interpreter
# ($(CLUSTER_PYTHON_PREFIX)/bin/python$(CLUSTER_PYTHON_VERSION)).
DIST ?= dist
DIST_VENV ?= build/dist-venv
dist: venv
	@# setuptools reuses build/lib: a module removed from lib/ would still ship without this.
	rm -rf $(DIST) $(DIST_VENV) build/lib build/bdist.* && mkdir -p $(DIST)
	$(PY) -m pip wheel --quiet --no-deps -w $(DIST) .
	$(call py_files_zip,$(DIST)/sensorpipe.zip)
	@$(PY) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; assert v == "$(CLUSTER_PYTHON_VERSION)", "dependency archive must be built with Python $(CLUSTER_PYTHON_VERSION), this is " + v'
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install --quiet $(DIST)/sensorpipe-*.whl
	@# venv-pack's --python-prefix mangles python3 links (python3.113); point the link at the
	@# cluster's interpreter ourselves, after the last pip install into this venv.
	ln -sfn $(CLUSTER_PYTHON_PREFIX)/bin/python$(CLUSTER_PYTHON_VERSION) $(DIST_VENV)/bin/python3
	@# pyvenv.cfg's home is where the interpreter finds its standard library: the cluster's,
	@# not this machine's (a 3.11.2 binary with a 3.11.7 stdlib fails to import _ssl).
	printf 'home = %s\ninclude-system-site-packages = false\nversion = %s\n' \
		'$(CLUSTER_PYTHON_PREFIX)/bin' '$(CLUSTER_PYTHON_VERSION)' > $(DIST_VENV)/pyvenv.cfg
	$(VENV)/bin/venv-pack --quiet -p $(DIST_VENV) -o $(DIST)/sensorpipe-deps.tar.gz
	tar tzvf $(DIST)/sensorpipe-deps.tar.gz bin/python3 | grep -q -- '-> $(CLUSTER_PYTHON_PREFIX)/bin/python$(CLUSTER_PYTHON_VERSION)$$'
	@# The wheels pip chose are this machine's: `sensorpipe deploy` checks the instances match.
	$(DIST_VENV)/bin/python -c 'import json, platform, sys; json.dump({"machine": platform.machine(), "python": "%d.%d" % sys.version_info[:2]}, sys.stdout)' > $(DIST)/BUILD-INFO.json
	@ls -l $(DIST)

clean:
	rm -rf build dist lib/*.egg-info .pytest_cache node_modules
