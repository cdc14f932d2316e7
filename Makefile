# Set-up is part of every target: the first run creates .venv and installs telly into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-telly
DEMO ?= runs/demo
# The demo's budget: fits in about 10 minutes on 2 CPU cores (see README).
DEMO_TRAIN ?= 1280
DEMO_EVAL ?= 500

.PHONY: demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: resolving it through the project could pull a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/telly data build --out $(DEMO)/data
	$(BIN)/telly finetune --task code-search --data $(DEMO)/data --out $(DEMO)/full --freeze -1 \
		--max-train-examples $(DEMO_TRAIN) --max-eval-examples $(DEMO_EVAL) --overwrite
	$(BIN)/telly finetune --task code-search --data $(DEMO)/data --out $(DEMO)/telly-3 --freeze 3 \
		--max-train-examples $(DEMO_TRAIN) --max-eval-examples $(DEMO_EVAL) --overwrite
	$(BIN)/telly report $(DEMO)/full $(DEMO)/telly-3 --out $(DEMO)/report.md

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q --runslow

bench: $(STAMP)
	$(BIN)/python bench/finetune_speed.py

clean:
	rm -rf $(VENV) runs
