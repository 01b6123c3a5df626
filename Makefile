# The course in two commands:  make lab   |   make test
# Both create .venv (once) and install stnlib with its extras; a second run reuses it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stnlib-installed

.PHONY: lab test install lint notebooks sync-urls clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[notebooks,test]"
	@touch $(STAMP)

# Jupyter refuses to run as root unless told; containers and Colab-like boxes often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG) $(LAB_ARGS)

# Fast mode (STNLIB_FAST=1): notebooks that train use a small subset and a few steps,
# through the same code path as the full lesson.
test: $(STAMP)
	$(BIN)/ruff check .
	STNLIB_FAST=1 MPLBACKEND=Agg $(BIN)/python -m pytest tests notebooks \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

# Re-execute every notebook in full mode (not fast mode) and save its outputs, as committed.
# Progress prints one line per epoch, so the saved outputs read well on GitHub.
notebooks: $(STAMP)
	env -u STNLIB_FAST STNLIB_PROGRESS=lines $(BIN)/jupyter nbconvert --to notebook --execute \
		--inplace --ExecutePreprocessor.timeout=3600 $(or $(NB),notebooks/*.ipynb)

# After changing [project.urls] Repository in pyproject.toml.
sync-urls: $(STAMP)
	$(BIN)/python -m stnlib.colab --write notebooks/*.ipynb

clean:
	rm -rf $(VENV)
