# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch; a plain `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test bench install install-dev install-models clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Install torch first (CPU build) only when it is missing, so the range in
# pyproject.toml is already satisfied and pip never picks a CUDA build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_PIN)" || \
		$(PIP) install torch --index-url $(TORCH_CPU_INDEX)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

# The installed torch, pinned on every install that may pull torchvision (smp, timm), so pip
# picks the torchvision made for it rather than a newer torch (a CUDA build of several GB).
TORCH_NOW = "torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')"

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[dev,models,peers]" $(TORCH_NOW)
	touch $@

$(VENV)/.installed-models: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[models]" $(TORCH_NOW)
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[dev,bench,models]" $(TORCH_NOW)
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-models: $(VENV)/.installed-models

demo: $(VENV)/.installed
	$(VENV)/bin/csst demo -o demo --force

test: $(VENV)/.installed-dev
	$(PY) -m pytest

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/run_all.py --out benchmarks/results

clean:
	rm -rf $(VENV) demo *.egg-info
