# Two commands on a fresh machine with Python 3.11+, pip and make: `make demo` and `make test`.
# uv is bootstrapped into .tools/ when it is not on PATH.

ifeq ($(shell uv --version >/dev/null 2>&1 && echo yes),yes)
UV := uv
UV_BOOTSTRAP :=
else
UV := .tools/bin/uv
UV_BOOTSTRAP := .tools/bin/uv
endif
PYTEST_ARGS ?=

.PHONY: install test demo bench bench-full bench-scale soak lint format clean

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

install: $(UV_BOOTSTRAP)
	$(UV) sync --locked --all-extras --compile-bytecode

# Two workers, each with its own embedded servers: most tests wait on servers and processes,
# so two run in about half the time even on two cores.
test: install
	$(UV) run ruff check .
	$(UV) run pytest -n 2 --dist worksteal $(PYTEST_ARGS)

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

clean:
	rm -rf .venv .tools .pytest_cache .ruff_cache

demo: install
	$(UV) run fes demo

bench: install
	$(UV) run python -m bench.run

bench-full: install
	$(UV) run python -m bench.run --full

# Ten years of history on stock server settings (docs/benchmarks-scale.md).
bench-scale: install
	$(UV) run python -m bench.scale

soak: install
	$(UV) run python -m bench.soak
