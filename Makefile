# Two entry points on a fresh machine: `make demo` and `make test`. Both install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CORES  ?= 2
HOST_PYTHON := $(shell command -v python3)
# Rules call `mdetr-phrasecut`, `snakemake` and `torchrun` from the venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test test-without-root slurm-deps browser-deps clean

$(STAMP): requirements.txt pyproject.toml
	$(HOST_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

# Debian's Slurm + munge for the one-node loopback cluster used by the Slurm test.
slurm-deps:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null)

# Debian's headless Chromium and its driver, for the failure browser's test in a real browser.
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

# A run killed before (kill -9, a lost terminal) left its lock and temp folders: `unlock` clears them unless a
# Snakemake is still running here. Snakemake's temp folders go to .snakemake/tmp, where a killed run's are found.
SNAKEMAKE_TMP := $(CURDIR)/.snakemake/tmp
demo: install
	mkdir -p $(SNAKEMAKE_TMP)
	mdetr-phrasecut unlock --tmpdir $(SNAKEMAKE_TMP) -- --workflow-profile workflow/profiles/default --cores $(CORES)
	TMPDIR=$(SNAKEMAKE_TMP) snakemake --workflow-profile workflow/profiles/default --cores $(CORES) all

test: install slurm-deps browser-deps
	python -m pytest -q -n $(CORES) --dist loadgroup

# Without root (no apt): the suite minus the tests marked system_packages (a real Slurm cluster, Chromium), which
# are listed first and then deselected, never skipped; pytest's summary counts them as "deselected".
test-without-root: install
	@echo "Deselected (they need root's apt packages: make slurm-deps browser-deps):"
	@python -m pytest -q --collect-only -p no:cacheprovider -m system_packages | grep ::
	python -m pytest -q -n $(CORES) --dist loadgroup -m "not system_packages"

clean:
	rm -rf results .snakemake
