# ArcadeDreamer — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# MLflow 3 reports usage to mlflow-telemetry.io unless told not to (src/arcadedreamer/__init__.py says why)
export MLFLOW_DISABLE_TELEMETRY ?= true
# The CPU build of torch 2.13.0 (on this machine it lies on disk); on a GPU machine pass
# e.g. TORCH_SPEC="torch==2.13.0" with the CUDA index, any torch in pyproject's range works.
TORCH_SPEC ?= torch==2.13.0
# two workers (one per core here), each test file on one worker: its module fixtures start once;
# the files in tests/conftest.py's order, longest first (xdist would start the files with the
# most tests first, and leave the few long ones for the end)
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

# The CPU-sized setting of `make quickstart`: one game (GAME=…), 50 000 frames, short training
# (docs/results.md). `make quickstart-long` keeps the ball longer: twice the frames, a VAE
# trained twice as many steps, one GRU step per four frames (docs/results.md; timed from a
# fresh clone in results/run-times.json).
GAME ?= BreakoutNoFrameskip-v4
QUICKSTART_COMMON = -S 'data.games=[$(GAME)]' -S data.frames_per_game=50000 -S training.batch_size=32 \
	-S training.lr=0.001 -S training.checkpoint_every=1 -S dream.game=$(GAME) -S controller.game=$(GAME)
# DYNAMICS_EPOCHS=12: the longer-trained dream in which the Pong controller learns to return the ball (README)
DYNAMICS_EPOCHS ?= 3
QUICKSTART := $(QUICKSTART_COMMON) -S vae.epochs=2 -S dynamics.epochs=$(DYNAMICS_EPOCHS)
# One GRU step per four frames, sequences of 16 steps (64 frames) two frames apart, the burn-in
# the evaluation's 8-frame context: a quarter of the original's GRU steps an epoch, so four
# times the epochs cost what the original's do
FOUR_FRAMES_STEP = -S dynamics.frames_per_step=4 -S dynamics.seq_len=16 -S dynamics.burn_in=2 \
	-S dynamics.sequence_stride=2 -S dynamics.scheduled_sampling_final=0.5 -S dynamics.scheduled_sampling_ramp=0 \
	-S dynamics.decoded_loss_weight=0
FOUR_FRAMES_DYNAMICS = $(FOUR_FRAMES_STEP) -S dynamics.epochs=$$(( 4 * $(DYNAMICS_EPOCHS) ))
QUICKSTART_LONG := $(QUICKSTART_COMMON) -S data.frames_per_game=100000 -S vae.epochs=4 \
	$(FOUR_FRAMES_STEP) -S dynamics.epochs=30
# every stage but the agent's, which make agent-quickstart runs after it
QUICKSTART_STAGES = evaluate dream controller
# One `dvc exp run` at a time in a project (two at once fail inside DVC): a second is refused at once
EXP_LOCK = exec 9>>.dvc/tmp/arcadedreamer-exp.lock && flock -n 9 || { echo "error: another make target is running dvc exp run in this project (quickstart, ablation or sweep); wait for it to finish, or queue experiments with make sweep" >&2; exit 1; }
# dvc exp run writes the experiment's values into params.yaml; the quickstart puts yours back
KEEP_PARAMS = mkdir -p .dvc/tmp && $(EXP_LOCK) && cp params.yaml .params.yaml.before-quickstart && trap 'mv -f .params.yaml.before-quickstart params.yaml' EXIT
# In a fresh clone (no dvc.lock yet) dvc exp run warns once per output that it has nothing to
# restore; that is expected, so those lines are dropped (everything else, errors included, passes)
QUIET_DVC = 2> >(grep -v --line-buffered "No file hash info found for" >&2)

.PHONY: help install test-deps mutate plant-bugs data repro quickstart quickstart-long agent-quickstart-long quickstart-summary ablation ablation-dynamics seeds-quickstart-long ui server postgres sweep serve agent dream play bench gpu-check test lint clean audit

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install the project with its dev tools

mlflow.db: | $(VENV)/.installed
	$(BIN)/python -c "from arcadedreamer.config import load_params; from arcadedreamer import tracking; tracking.setup(load_params())"

data: install ## Get data/heldout pinned by data.dvc: pull from the DVC remote, else regenerate and verify
	@if [ -n "$$(dvc remote list)" ]; then dvc pull data.dvc; exit $$?; fi; \
	if [ ! -d data/heldout ]; then arcadedreamer heldout || exit 1; fi; \
	mismatch="error: data/heldout does not match the hash pinned in data.dvc (other heldout/data settings in params.yaml, or other library versions); restore them and run 'rm -rf data/heldout && make data', or pin a new set deliberately with 'dvc add data/heldout'"; \
	status=$$(dvc status data.dvc); \
	if echo "$$status" | grep -q "up to date"; then \
		echo "data/heldout matches data.dvc"; \
	elif echo "$$status" | grep -q "modified"; then \
		echo "$$mismatch" >&2; exit 1; \
	else \
		cp data.dvc .data.dvc.pinned && dvc commit -f -q data.dvc || { mv -f .data.dvc.pinned data.dvc; exit 1; }; \
		if cmp -s data.dvc .data.dvc.pinned; then \
			rm -f .data.dvc.pinned; echo "data/heldout regenerated: its bytes match the hash pinned in data.dvc; cached"; \
		else \
			mv -f .data.dvc.pinned data.dvc; echo "$$mismatch" >&2; exit 1; \
		fi; \
	fi

repro: data mlflow.db ## Run the whole pipeline with params.yaml (dvc repro)
	@$(BIN)/python -c "from arcadedreamer.config import load_params as l; p = l(); print(f'dvc repro with params.yaml: {len(p.data.games)} game(s) x {p.data.frames_per_game} frames, {p.vae.epochs} VAE + {p.dynamics.epochs} dynamics epochs, batch {p.training.batch_size}, device {p.training.device}')"
	ARCADEDREAMER_PIPELINE_ID=$$(date +%Y%m%d-%H%M%S) dvc repro

quickstart: data mlflow.db ## Install, then run the whole pipeline on a small CPU setting (dvc exp run; GAME=…; time: results/run-times.json)
	@$(KEEP_PARAMS); ARCADEDREAMER_PIPELINE_ID=quickstart-$$(date +%Y%m%d-%H%M%S) dvc exp run $(QUICKSTART_STAGES) $(QUICKSTART) $(QUIET_DVC)
	@$(MAKE) --no-print-directory quickstart-summary

# The agent stage on the quickstart's world model (the same settings: every stage before it comes
# from DVC's cache), trained in its dream and scored in 30 real games beside the controller
agent-quickstart: data mlflow.db ## After make quickstart: an actor-critic trained in its dream, scored in 30 real games (GAME=…)
	@$(KEEP_PARAMS); ARCADEDREAMER_PIPELINE_ID=agent-$$(date +%Y%m%d-%H%M%S) dvc exp run agent $(QUICKSTART) -S agent.game=$(GAME) $(QUIET_DVC)
	@echo "Agent: metrics/agent.json, checkpoints/agent/returns.png   Watch it: make agent GAME=$(GAME)"

# The agent stage on quickstart-long's four-frame world model, with AGENT_ROUNDS rounds of its own
# real games fine-tuning the world model (results: docs/learning-in-the-dream.md)
AGENT_ROUNDS ?= 2
agent-quickstart-long: data mlflow.db ## After make quickstart-long: the agent in its dream, then AGENT_ROUNDS rounds of real play (GAME=…)
	@$(KEEP_PARAMS); ARCADEDREAMER_PIPELINE_ID=agent-long-$$(date +%Y%m%d-%H%M%S) dvc exp run agent $(QUICKSTART_LONG) -S agent.game=$(GAME) -S agent.rounds=$(AGENT_ROUNDS) $(QUIET_DVC)
	@echo "Agent: metrics/agent.json (round_scores), checkpoints/agent/returns.png   Watch it: make agent GAME=$(GAME)"

quickstart-long: data mlflow.db ## The quickstart on 100 000 frames, 4 VAE epochs, four frames a GRU step for 30 epochs (GAME=…)
	@$(KEEP_PARAMS); ARCADEDREAMER_PIPELINE_ID=quickstart-long-$$(date +%Y%m%d-%H%M%S) dvc exp run $(QUICKSTART_STAGES) $(QUICKSTART_LONG) $(QUIET_DVC)
	@$(MAKE) --no-print-directory quickstart-summary

# The ball ablation (README): the quickstart with each VAE setting, one DVC experiment each.
ABLATION = "-S vae.loss=sse -S vae.input_norm=false -S vae.surprise_weight=0" \
	"-S vae.loss=bce -S vae.input_norm=false -S vae.surprise_weight=0" \
	"-S vae.loss=bce -S vae.input_norm=true -S vae.surprise_weight=0" \
	"-S vae.loss=bce -S vae.input_norm=false -S vae.surprise_weight=0.5" \
	"-S vae.loss=sse -S vae.input_norm=true -S vae.surprise_weight=0.5" \
	"-S vae.loss=bce -S vae.input_norm=true -S vae.surprise_weight=0.5"
ABLATION_COLUMNS = 'Experiment|vae\.(loss|input_norm|surprise_weight)|summary\.(recon_ball_recall|ball_recall_h(1|10|50)_model|false_ball_rate_h10_model|psnr_h10_gain|recon_psnr)$$'

ablation: data mlflow.db ## Which VAE setting keeps the ball: six quickstart experiments, then their table
	@$(KEEP_PARAMS); for setting in $(ABLATION); do \
		ARCADEDREAMER_PIPELINE_ID=ablation-$$(date +%Y%m%d-%H%M%S) dvc exp run $(QUICKSTART) $$setting $(QUIET_DVC) || exit 1; \
	done
	dvc exp show --md --drop '.*' --keep $(ABLATION_COLUMNS) --sort-by summary.recon_ball_recall --sort-order desc

# Which dynamics training keeps the ball over the horizon (docs/results.md): each row is the
# quickstart's pipeline up to evaluate, once per seed of DYNAMICS_SEEDS, each a DVC experiment on
# the same data and VAE (cached after the first); every run is recorded in results/ablation-dynamics.json.
ORIGINAL_DYNAMICS = -S dynamics.scheduled_sampling_final=0.5 -S dynamics.scheduled_sampling_ramp=0 \
	-S dynamics.seq_len=32 -S dynamics.sequence_stride=1 -S dynamics.decoded_loss_weight=0
ABLATION_DYNAMICS = \
	"original|$(ORIGINAL_DYNAMICS) -S dynamics.burn_in=4" \
	"burn-in-8|$(ORIGINAL_DYNAMICS) -S dynamics.burn_in=8" \
	"decoded-loss|$(ORIGINAL_DYNAMICS) -S dynamics.burn_in=4 -S dynamics.decoded_loss_weight=1 -S dynamics.decoded_loss_samples=8" \
	"open-loop-57|-S dynamics.scheduled_sampling_final=1 -S dynamics.scheduled_sampling_ramp=0.5 -S dynamics.seq_len=57 -S dynamics.burn_in=8 -S dynamics.sequence_stride=4 -S dynamics.decoded_loss_weight=0" \
	"four-frames|$(FOUR_FRAMES_DYNAMICS)"
DYNAMICS_SEEDS ?= 0 1 2
ABLATION_RESULTS ?= results/ablation-dynamics.json

# One DVC experiment up to evaluate per row of $(2) ("name|settings") and seed of DYNAMICS_SEEDS,
# on the settings $(1), each recorded by tools/results.py in $(3) as made by "make $(4)", timed by
# its dynamics stage's own clock (a run DVC restored from its cache keeps the time it was trained in)
define SEED_RUNS
set -o pipefail; $(KEEP_PARAMS); for row in $(2); do name=$${row%%|*}; settings=$${row#*|}; \
	for seed in $(DYNAMICS_SEEDS); do \
		ARCADEDREAMER_PIPELINE_ID=$(4)-$$name-s$$seed dvc exp run evaluate $(1) $$settings \
			-S dynamics.seed=$$seed $(QUIET_DVC) | tee .dvc/tmp/seed-run.log || exit 1; \
		$(BIN)/python tools/results.py record $(3) --row $$name --seed $$seed \
			--dynamics-seconds --command "make $(4)" \
			--experiment "$$(sed -n 's/^Ran experiment(s): //p' .dvc/tmp/seed-run.log)" || exit 1; \
	done; done
endef

ablation-dynamics: data mlflow.db ## Which dynamics training keeps the ball: 5 rows x 3 seeds of the quickstart to evaluate, then the table
	@$(call SEED_RUNS,$(QUICKSTART),$(ABLATION_DYNAMICS),$(ABLATION_RESULTS),ablation-dynamics)
	$(BIN)/python tools/results.py report $(ABLATION_RESULTS) --figure docs/ablation_dynamics.png

# make quickstart-long's world model once per seed of DYNAMICS_SEEDS on its data and VAE (DVC's
# cache: run make quickstart-long first, and seed 0 is its own run): the spread its figures need
# SEEDS_ROW="name|-S …" trains a variant of it on the same data and VAE, recorded as row `name`
SEEDS_RESULTS ?= results/quickstart-long-seeds-$(GAME).json
SEEDS_ROW ?= quickstart-long|
seeds-quickstart-long: data mlflow.db ## After make quickstart-long: its dynamics per seed of DYNAMICS_SEEDS, then mean ± sd (GAME=…, SEEDS_ROW=…)
	@$(call SEED_RUNS,$(QUICKSTART_LONG),"$(SEEDS_ROW)",$(SEEDS_RESULTS),seeds-quickstart-long)
	$(BIN)/python tools/results.py report $(SEEDS_RESULTS)

quickstart-summary:
	@arcadedreamer scores
	@echo "Dream: outputs/dream_$(GAME).gif   Scores: metrics/eval.json, plots/eval_curves.png"
	@echo "Controller: metrics/controller.json, checkpoints/controller/returns.png   Watch it: make agent GAME=$(GAME)"
	@echo "params.yaml is as it was (the quickstart's values live in the experiment: dvc exp show)"
	@echo "Compare experiments: dvc exp show   Browse the runs: make ui, which serves them at"
	@arcadedreamer ui --print-url

ui: install mlflow.db ## The MLflow UI, opened on the training runs (PORT=5000, HOST=127.0.0.1; one worker, ~0.6 GB)
	arcadedreamer ui --port $${PORT:-5000} --host $${HOST:-127.0.0.1}

# Team mode (README): one MLflow server on PostgreSQL for everyone, artifacts proxied through it;
# without MLflow's job runner (GenAI jobs this project never submits: seven more processes)
MLFLOW_PORT ?= 5000
server: install ## Team mode: MLflow server on PostgreSQL (MLFLOW_BACKEND_URI=postgresql://…; AUTH=1: basic auth)
	@test -n "$$MLFLOW_BACKEND_URI" || { echo "error: set MLFLOW_BACKEND_URI=postgresql://user:password@host:5432/mlflow (make postgres starts a local one)" >&2; exit 2; }
	@test -z "$$AUTH" || test -n "$$MLFLOW_FLASK_SERVER_SECRET_KEY" || { echo "error: AUTH=1 needs MLFLOW_FLASK_SERVER_SECRET_KEY (any long random string, the same on every restart)" >&2; exit 2; }
	MLFLOW_AUTH_CONFIG_PATH=$${MLFLOW_AUTH_CONFIG_PATH:-$(CURDIR)/tools/basic_auth.ini} \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} mlflow server \
		--backend-store-uri "$$MLFLOW_BACKEND_URI" --artifacts-destination "$${MLFLOW_ARTIFACTS:-$(CURDIR)/mlartifacts}" \
		--host $${HOST:-127.0.0.1} --port $(MLFLOW_PORT) $${AUTH:+--app-name basic-auth}

postgres: install ## Team mode on one machine: a throwaway PostgreSQL in .postgres/ on 127.0.0.1 (prints MLFLOW_BACKEND_URI)
	@$(BIN)/python tools/local_postgres.py start .postgres --port $${PG_PORT:-5432}

# A grid of experiments through DVC's own queue: make sweep GRID="-S vae.beta=0.0001,0.001" JOBS=1
GRID ?= -S dynamics.hidden_size=128,256
JOBS ?= 1
sweep: data mlflow.db ## Queue the quickstart over GRID as DVC experiments, run them JOBS at a time, then compare
	@mkdir -p .dvc/tmp && $(EXP_LOCK) && dvc exp run --queue $(QUICKSTART) $(GRID) && \
		MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} dvc exp run --run-all -j $(JOBS)
	dvc exp show --md --drop '.*' --keep 'dynamics\.hidden_size|vae\.beta|summary\.(recon_ball_recall|ball_recall_h10_model|psnr_h10_gain)'

serve: install mlflow.db ## Serve the champion world model over HTTP on 127.0.0.1:5001 (mlflow models serve)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} mlflow models serve \
		-m models:/arcadedreamer-dynamics@$${ALIAS:-champion} --env-manager local --host 127.0.0.1 --port 5001

agent: install ## Watch the agent play the real game beside its own dream (the controller until make agent-quickstart ran; GAME=…)
	arcadedreamer play --game $(GAME) --agent $$(test -f checkpoints/agent/agent.pt && echo checkpoints/agent/agent.pt || echo checkpoints/controller/controller.pt) --dream

dream: install ## Dream Breakout from the registry's champion: make dream ACTIONS="1,1,1,2,2,3,3"
	arcadedreamer dream --game $${GAME:-BreakoutNoFrameskip-v4} $${ACTIONS:+--actions "$$ACTIONS"}

play: install ## Play the real game beside the world model (pygame window; arrows, Space, D, R, Esc)
	arcadedreamer play --game $${GAME:-BreakoutNoFrameskip-v4}

bench: install ## Run the benchmarks (collection, training, FLOP/s, memory) and write bench/results.md
	mkdir -p bench
	$(BIN)/python benchmarks/run_all.py | tee bench/results.md

gpu-check: install ## On a CUDA machine: prove bf16 = fp32, time both stages, extrapolate the full defaults (bench/gpu_check.json)
	mkdir -p bench
	$(BIN)/python benchmarks/gpu_check.py $${PART:+--part $$PART}

# What the tests drive besides Python: Debian's PostgreSQL (team mode) and Chromium (the MLflow UI)
test-deps:
	@missing=""; ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's$$missing for the tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
		else echo "error: the tests need Debian's$$missing: sudo apt-get install$$missing" >&2; exit 1; fi; \
	fi

# One torch thread a process: the workers already fill the cores, and more threads than cores
# spin against each other (OMP_NUM_THREADS=… overrides)
test: install test-deps ## Run the test suite (real ALE, DVC, MLflow, PyTorch, PostgreSQL, Chromium on tiny data)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest $(PYTEST_ARGS)

mutate: install ## Mutation testing of the pure modules (tools/mutate.py; LIMIT=40: a sample a module): results/mutation.json
	$(BIN)/python tools/mutate.py $(if $(LIMIT),--limit $(LIMIT))

plant-bugs: install ## Plant each bug docs/testing.md names in a throwaway clone; writes results/planted-bugs.json
	tools/plant_bugs.sh

lint: install ## Check style with ruff
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

audit: install ## Check dependencies for known vulnerabilities (pip-audit, when installable)
	$(BIN)/python -m pip install -q pip-audit && $(BIN)/pip-audit || echo "pip-audit unavailable or found issues (see above)"

clean: ## Remove generated outputs (never params.yaml, data.dvc, the DVC cache or MLflow history)
	rm -rf data/collected checkpoints metrics plots outputs bench .pytest_cache
