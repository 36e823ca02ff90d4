# Two commands on a fresh machine: `make demo` and `make test`. Both create and use .venv here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= demo
PYTEST_ARGS ?=

export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: demo test test-all bench clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# an editable install compiles nothing; with PYTHONDONTWRITEBYTECODE set every start would compile comp again
	$(BIN)/python -m compileall -q comp
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/comp demo $(DEMO_DIR) --force

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every CPU benchmark with small arguments (goal: < 10 min in all on a 2-core machine); each prints its ratio
# and goal. Fuller runs: each script's defaults; the scale points (20k, 50k, 100k JPEGs) are separate commands in benchmarks/README.md.
BENCH_CPU := "bench_startup.py --reps 3" "bench_fit_weights.py" "bench_tta.py --n 128 --repeats 2 --tta hflip,d4" \
	"bench_train_loop.py --reps 2" "bench_loader.py --n 200 --rounds 2" "bench_predict.py --n-test 1000 --rounds 1" \
	"bench_scaling.py --sizes 700,1400 --hw 192x256 --hashes 100000" "bench_tune.py --n 400 --trials 2" \
	"bench_fold_train.py --n 600 --folds 1,5 --rounds 1" "bench_gpu_amp.py"

bench: $(STAMP)
	@start=$$(date +%s); for b in $(BENCH_CPU); do echo "== benchmarks/$$b"; $(BIN)/python benchmarks/$$b || exit 1; done; \
	echo "make bench: $$(( $$(date +%s) - start )) s (goal < 600 s)"

clean-demo:
	rm -rf $(DEMO_DIR)
