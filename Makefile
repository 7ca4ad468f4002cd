# mnist-kit: `make train` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/mnist-kit
RECIPE ?= baseline
ARGS ?=
# the run that eval/plot/docs use: runs/latest (the last run that finished) unless RUN=... is given
RUN ?= runs/latest
KIND ?= all
SEEDS ?= 0 1 2
PYTEST_ARGS ?= --durations=20
TEST_WORKERS ?= 2  # pytest-xdist workers, one torch thread each (tests/conftest.py); 0: one process
# torch and torchvision are pinned here (pyproject has lower bounds only); empty it to let pip choose.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: help venv data train eval plot docs docs-confidence bench-verdict bench-verdict-best bench-verdict-best-outliers bench-audit bench-exclude bench-exclude-best bench-robust bench-robust-best bench-lrfind bench bench-seeds bench-ensemble bench-records bench-tune bench-ship need-run test lint clean-runs

help:
	@echo "make train [RECIPE=baseline] [ARGS='--set train.epochs=1']   set up, fetch data, train a recipe"
	@echo "make test                                                     set up, lint and run the test suite"
	@echo "make eval [RUN=runs/...]                                      evaluate a run (default: runs/latest)"
	@echo "make plot [RUN=runs/...] [KIND=all]                           plot a run into RUN/plots"
	@echo "make docs [RUN=runs/...]                                      regenerate the pictures in docs/img/"
	@echo "make docs-confidence RUN=runs/...                             docs/confidence.md's pictures from a calibrated run"
	@echo "make bench                                                    every quick results file: loop, fast's seeds, preprocessing, torchrun/Ray, TTA"
	@echo "make bench-seeds RECIPE=best SEEDS='0 1 2'                   a recipe over seeds into bench/results/<machine>/"
	@echo "make bench-records                                            the records table's rows over seeds (about 3 hours)"
	@echo "make bench-tune                                               the fast-3ep Optuna study against a grid of the same base (about 10 min)"
	@echo "make bench-verdict                                            calibration and verdicts of fast over 5 seeds (about 20 min)"
	@echo "make bench-verdict-best SEEDS='0 1 2'                         best calibrated and its corruption report (about 40 min a seed)"
	@echo "make bench-verdict-best-outliers SEEDS='0 1 2'                best-robust with outlier exposure (glyphs too), calibrated (about 80 min a seed)"
	@echo "make bench-lrfind                                             lr-find's suggestion for baseline vs its shipped lr, 3 epochs x 3 seeds (about 3 min)"
	@echo "make bench-audit                                              the label audit of fast, 5 folds (about 2 min)"
	@echo "make bench-exclude                                            fast without the audit's suspected labels, 5 seeds (about 8 min)"
	@echo "make bench-exclude-best SEEDS='0 1 2'                         best with and without them (about 35 min a seed and arm)"
	@echo "make bench-robust                                             the corruption report of fast, baseline, fast-robust and its choice (about 30 min)"
	@echo "make bench-robust-best SEEDS='0 1 2'                          best + background (best-robust) against best, then calibrated (about 35 min a seed)"
	@echo "make bench-ship                                               the server (requests/s, latency) and INT8 ONNX of the kept fast and best runs"
	@echo "make data                                                     fetch and verify MNIST into ~/.cache/mnist-kit (or \$$MNIST_KIT_DATA)"
	@echo "make lint                                                     ruff"

# what training needs (make train, eval, plot, docs); the dev tools and every extra come on top (make test, bench)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q $(TORCH_PINS)
	$(PY) -m pip install --disable-pip-version-check -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(DEV_STAMP)

venv: $(STAMP)

data: $(STAMP)
	$(CLI) data fetch

train: $(STAMP)
	$(CLI) train $(RECIPE) $(ARGS)

need-run:
	@test -e "$(RUN)" || { echo "error: no run at $(RUN): train one with 'make train' or give RUN=runs/..."; exit 2; }

eval: $(STAMP) need-run
	$(CLI) eval $(RUN) $(ARGS)

plot: $(STAMP) need-run
	$(CLI) plot $(KIND) $(RUN) $(ARGS)

docs: $(STAMP) need-run
	$(PY) docs/make_docs.py $(RUN)

docs-confidence: $(STAMP) need-run
	$(PY) docs/make_confidence.py $(RUN)

# every results file under bench/results/<this machine>/ but the long recipes' seeds (about 10 minutes on 2 cores)
bench: $(DEV_STAMP)
	$(CLI) data fetch
	$(PY) bench/loop.py --results bench/results
	$(PY) bench/speedrun.py --recipe fast --seeds 0 1 2 3 4 5 6 7 8 9 --results bench/results --again
	$(PY) bench/preprocess.py --results bench/results
	$(PY) bench/floor.py --recipe fast --results bench/results
	$(PY) bench/cluster.py --results bench/results
	$(MAKE) bench-ensemble

# test-time augmentation and ensembles of seeds (best's members: the runs `bench-seeds` kept in runs/bench)
bench-ensemble: $(DEV_STAMP)
	$(PY) bench/speedrun.py --recipe fast --seeds 0 1 2 3 4 --keep runs/bench
	$(PY) bench/speedrun.py --recipe baseline --set train.epochs=5 --seeds 0 1 2 --keep runs/bench
	$(PY) bench/ensemble.py --name fast-5-seeds runs/bench/fast-seed-[0-4] --results bench/results
	$(PY) bench/ensemble.py --name baseline-5-epochs-3-seeds runs/bench/baseline-train.epochs=5-seed-[0-2] \
		--results bench/results
	if ls -d runs/bench/best-seed-[0-4] >/dev/null 2>&1; then \
		$(PY) bench/ensemble.py --name best-seeds runs/bench/best-seed-[0-4] --results bench/results; fi
	if ls -d runs/bench/best-seed-[5-9] >/dev/null 2>&1; then \
		$(PY) bench/ensemble.py --name best-seeds-5-9 runs/bench/best-seed-[5-9] --results bench/results; \
		$(PY) bench/ensemble.py --name best-10-seeds runs/bench/best-seed-[0-9] --results bench/results; fi

# calibration and verdicts over 5 seeds (docs/confidence.md): fast with 5,000 images held out, without and with
# outlier exposure (without and with other scripts' glyphs, then with letters too: a family it then saw; about 20
# minutes on 2 cores). The runs are kept in runs/bench/NAME: a seed already trained is reused, only judged again
bench-verdict: $(DEV_STAMP)
	$(CLI) data fetch
	$(CLI) data fetch --dataset fashion-mnist
	$(PY) bench/verdict.py fast --seeds 0 1 2 3 4 --name fast-validation --keep runs/bench/fast-validation
	$(PY) bench/verdict.py fast --seeds 0 1 2 3 4 --name fast-outliers --keep runs/bench/fast-outliers \
		--set 'train.outliers={sets=["fashion-mnist","shapes","scribbles"]}'
	$(PY) bench/verdict.py fast --seeds 0 1 2 3 4 --name fast-outliers-glyphs --keep runs/bench/fast-outliers-glyphs \
		--set 'train.outliers={sets=["fashion-mnist","shapes","scribbles","glyphs"]}'
	$(PY) bench/verdict.py fast --seeds 0 1 2 3 4 --name fast-outliers-letters --keep runs/bench/fast-outliers-letters \
		--set 'train.outliers={sets=["fashion-mnist","shapes","scribbles","glyphs","letters"]}'

# best with 5,000 images held out, calibrated and judged, then its corruption report (about 40 minutes a seed on the
# AVX2 machine; the runs are kept in runs/bench/best-validation, and a seed already trained is reused)
bench-verdict-best: $(DEV_STAMP)
	$(CLI) data fetch
	$(CLI) data fetch --dataset fashion-mnist
	$(PY) bench/verdict.py best --seeds $(SEEDS) --name best-validation --keep runs/bench/best-validation
	$(PY) bench/robustness.py --runs $$(for s in $(SEEDS); do ls -d runs/bench/best-validation/seed-$$s/best-*; done) \
		--name best-validation

# best-robust trained with outlier exposure (glyphs too, as fast's glyphs verdict column), calibrated and judged
# (issue 27's letters goal); about 100-120 s an epoch on the AVX2 machine, so about 80 minutes a seed. The runs are
# kept in runs/bench/best-robust-outliers-glyphs: an interrupted one resumes from its last epoch when this is run again
bench-verdict-best-outliers: $(DEV_STAMP)
	$(CLI) data fetch
	$(CLI) data fetch --dataset fashion-mnist
	$(PY) bench/verdict.py best-robust --seeds $(SEEDS) --name best-robust-outliers-glyphs \
		--keep runs/bench/best-robust-outliers-glyphs \
		--set 'train.outliers={sets=["fashion-mnist","shapes","scribbles","glyphs"]}'

# lr-find's suggestion for baseline against its shipped learning rate, 3 epochs over 3 seeds (about 3 minutes)
bench-lrfind: $(DEV_STAMP)
	$(CLI) data fetch
	$(PY) bench/lrfind.py --recipe baseline --epochs 3 --seeds 0 1 2

# the label audit of fast over all of MNIST, 5 folds (docs/audit.md; about 2 minutes on 2 cores)
bench-audit: $(DEV_STAMP)
	$(CLI) data fetch
	$(PY) bench/audit.py --recipe fast --folds 5

# what leaving out the audit's suspected training labels does, validation choosing how many (the audit's folds are
# reused when trained before); best's runs with nothing left out are bench-verdict-best's, reused
bench-exclude: $(DEV_STAMP)
	$(CLI) data fetch
	$(CLI) audit fast --folds 5 --images both --out audits/fast
	$(PY) bench/exclude.py --recipe fast --issues audits/fast/train-issues.txt --drop 0 15 30 62 --seeds 0 1 2 3 4

bench-exclude-best: $(DEV_STAMP)
	$(CLI) data fetch
	$(CLI) audit fast --folds 5 --images both --out audits/fast
	$(PY) bench/exclude.py --recipe best --issues audits/fast/train-issues.txt --drop 0 62 --seeds $(SEEDS) \
		--keep runs/bench/best-validation

# the corruption report (docs/robustness.md): fast's variants chosen on corrupted validation images, then fast,
# baseline and the chosen fast-robust on the test split's corruptions over seeds
bench-robust: $(DEV_STAMP)
	$(CLI) data fetch
	$(PY) bench/robust_choice.py --recipe fast --seeds 0 1 2
	$(PY) bench/robustness.py --recipe fast --seeds 0 1 2 3 4
	$(PY) bench/robustness.py --recipe baseline --seeds 0 1 2
	$(PY) bench/robustness.py --recipe fast-robust --seeds 0 1 2 3 4

# best + background against best, chosen on corrupted validation images (best's runs are bench-verdict-best's,
# reused; the background runs are kept in runs/bench/best-validation/background), then those on the test split; the
# chosen one ships as recipes/best-robust.toml, whose resolved recipe is theirs, so its calibration reuses them too
bench-robust-best: $(DEV_STAMP)
	$(CLI) data fetch
	$(CLI) data fetch --dataset fashion-mnist
	$(PY) bench/robust_choice.py --recipe best --candidates background --seeds $(SEEDS) --keep runs/bench/best-validation
	$(PY) bench/robustness.py --name best-background-validation \
		--runs $$(for s in $(SEEDS); do ls -d runs/bench/best-validation/background/seed-$$s/best-*; done)
	$(PY) bench/verdict.py best-robust --seeds $(SEEDS) --name best-robust-validation \
		--keep runs/bench/best-validation/background

# one recipe over seeds, a results file per seed (seeds already measured for this very recipe are skipped)
bench-seeds: $(DEV_STAMP)
	$(CLI) data fetch
	$(PY) bench/speedrun.py --recipe $(RECIPE) --seeds $(SEEDS) --results bench/results --budget 100000 \
		--keep runs/bench

# the records table (docs/records.md): each row over its seeds (best: 10 seeds, about 2 h 40 min), the floor, determinism
bench-records: $(DEV_STAMP)
	$(MAKE) bench-seeds RECIPE=fast SEEDS="0 1 2 3 4 5 6 7 8 9"
	$(MAKE) bench-seeds RECIPE=fast-995 SEEDS="0 1 2 3 4"
	$(MAKE) bench-seeds RECIPE=fast-996 SEEDS="0 1 2 3 4"
	$(MAKE) bench-seeds RECIPE=best SEEDS="0 1 2 3 4 5 6 7 8 9"
	$(PY) bench/floor.py --recipe fast --results bench/results
	$(PY) bench/determinism.py --recipe fast-995 --results bench/results
	$(PY) bench/determinism.py --recipe best --seed 1 --against runs/bench/best-seed-1 --results bench/results

# an Optuna study (24 trials) against a grid sweep of about the same wall time: docs/searching.md "Search: study against grid"
bench-tune: $(DEV_STAMP)
	$(CLI) data fetch
	$(PY) bench/tune.py --results bench/results

# serving and shipping: bench/serve.py trains fast itself; bench/int8.py uses the runs bench-ensemble and
# bench-seeds RECIPE=best keep
bench-ship: $(DEV_STAMP)
	$(CLI) data fetch
	$(PY) bench/serve.py --results bench/results
	$(PY) bench/int8.py runs/bench/fast-seed-0 runs/bench/best-seed-1 --results bench/results

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check mnist_kit tests docs bench

test: $(DEV_STAMP) lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

clean-runs:
	rm -rf runs
