# The entry points of the README. Each sets everything up first (idempotent).
.PHONY: setup demo quick-demo test test-fast docs bench

setup:
	bash scripts/setup.sh

# The CPU alignment demo: AdvGame-DPO-MD on the bundled model, then the defender before/after.
# DEMO_ARGS: more `advgame demo` options, e.g. make demo DEMO_ARGS=--instruction-following
DEMO_ARGS ?=
demo: setup
	.venv/bin/advgame demo $(DEMO_ARGS)

# The same pipeline in a few minutes (2 training steps, a small evaluation).
quick-demo: setup
	.venv/bin/advgame demo --quick $(DEMO_ARGS)

# The tests run on pytest-xdist workers, one thread each so that the workers do not
# oversubscribe the cores. The whole suite (make test, CI's command) is one pytest process on
# SUITE_WORKERS workers: --dist loadgroup keeps the tests that start a vLLM engine or `vllm serve`
# (the `vllm` mark and xdist group, tests/xdist_groups.py) on one worker, one after another, so the
# session's `vllm serve` starts once and two engines never load the cores at once, while the other
# worker runs the rest: an engine's test keeps about one core busy, and the other core no longer
# idles beside it (two processes in turn took 32 min 14 s of pytest; one, 19 min 44 s from a clean
# clone, peak 18.3 GiB of 24; docs/testing.md). test-fast: PYTEST_WORKERS workers.
# docs/testing.md: the tiers, what each proves and what they take.
PYTEST_WORKERS ?= 2
SUITE_WORKERS ?= 2
PYTEST = OMP_NUM_THREADS=1 .venv/bin/python -m pytest --dist loadgroup

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	$(MKDOCS)
	$(PYTEST) -n $(SUITE_WORKERS) --durations=30

# The fast tier while working: no training loop, bundled model, engine or subprocess (3 min 28 s
# from a fresh clone once set up, docs/setup.md); `make test` above stays the whole suite and CI's command.
test-fast: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	$(MKDOCS)
	$(PYTEST) -n $(PYTEST_WORKERS) -m "not slow"

# The documentation site (mkdocs.yml) into site/. --strict: a broken link or anchor, a page missing
# from the docs folder or an API reference that does not resolve fails the build. Offline: no web
# fonts, no plugin that fetches. NO_MKDOCS_2_WARNING silences Material's end-of-life banner.
# Never add --quiet: in mkdocs 1.6.1 it hides the warnings that --strict counts, so a broken link passes.
MKDOCS = NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir site
docs: setup
	$(MKDOCS)

# Every benchmark, one table (benchmarks/README.md); TRL is installed for them only.
bench: setup
	.venv/bin/pip install -q -e ".[cpu,dev,bench]"
	.venv/bin/python benchmarks/run.py
