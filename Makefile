# kvmnet.nat: one entry point for every check. Run as root on Debian 12 (CI does: .ci/run).
#   make test        everything CI runs
#   make test-quick  sanity + units + lint + the nft namespace tests (the edit loop)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON     ?= python3
VENV       := $(CURDIR)/.venv
BIN        := $(VENV)/bin
# outside the repo: inside it, ansible-test would ask git and see no tracked files under build/
COLL_ROOT  ?= /var/tmp/kvmnet-nat-build/collections
COLL_DIR   := $(COLL_ROOT)/ansible_collections/kvmnet/nat
APT_PKGS   := iptables iproute2 rsync python3
export ANSIBLE_COLLECTIONS_PATH := $(COLL_ROOT)
export PATH := $(BIN):$(PATH)

.PHONY: help deps venv collection pip-bootstrap sanity units lint changelog-lint docs netns netns-quick test test-quick clean

help:
	@echo "make test        sanity, units, ansible-lint, changelog lint, docs, namespace tests (CI)"
	@echo "make test-quick  the same without the legacy-iptables pass of the namespace tests"
	@echo "make clean       remove build/ (the venv stays; 'rm -rf .venv' to rebuild it)"

# apt packages the tests need; installed only when missing
deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r tests/requirements.txt
	touch $@

venv: $(BIN)/.installed

# ansible-test needs the collection under ansible_collections/kvmnet/nat: a copy of the tree
collection: deps venv
	@mkdir -p $(COLL_DIR)
	@rsync -a --delete --exclude .venv --exclude build --exclude .git --exclude .cache \
	  --exclude '__pycache__' --exclude .pytest_cache --exclude 'tests/output' ./ $(COLL_DIR)/

# ansible-test bootstraps pip in its venvs with a get-pip.py from a host CI cannot reach;
# tests/tools/get_pip_standin.py does the same from PyPI (version from ansible-test's own source)
ANSIBLE_TEST_PIP = $(shell grep -Eo "pip='[0-9.]+'" $(VENV)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py 2>/dev/null | cut -d"'" -f2)
pip-bootstrap: venv
	@v=$(ANSIBLE_TEST_PIP); test -n "$$v" || { echo "cannot find the pip version ansible-test wants"; exit 1; }; \
	mkdir -p ~/.ansible/test/cache; \
	install -m 0644 tests/tools/get_pip_standin.py ~/.ansible/test/cache/get_pip_$${v//./_}.py

# ansible-test exits 0 when it finds nothing to test: that must fail here
sanity: collection pip-bootstrap
	cd $(COLL_DIR) && ansible-test sanity --python 3.11 --requirements --color no 2>&1 | tee $(COLL_ROOT)/sanity.log
	@! grep -q 'All targets skipped' $(COLL_ROOT)/sanity.log

units: collection pip-bootstrap
	cd $(COLL_DIR) && ansible-test units --python 3.11 --requirements --color no 2>&1 | tee $(COLL_ROOT)/units.log
	@grep -Eq '[0-9]+ passed' $(COLL_ROOT)/units.log

lint: collection
	ansible-lint --offline --profile production

changelog-lint: venv
	antsibull-changelog lint

# every module's and filter's documentation must render
docs: collection
	@for m in $$(ls plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//'); do \
	  ansible-doc -t module kvmnet.nat.$$m > /dev/null; echo "ansible-doc kvmnet.nat.$$m: ok"; \
	done
	@for f in $$(ls plugins/filter/*.yml | xargs -n1 basename | sed 's/\.yml$$//'); do \
	  ansible-doc -t filter kvmnet.nat.$$f > /dev/null; echo "ansible-doc -t filter kvmnet.nat.$$f: ok"; \
	done

# real netfilter and packets, in throwaway namespaces only (needs root)
netns: deps collection
	cd tests/netns && $(BIN)/python -m pytest -p no:cacheprovider -q .

netns-quick: deps collection
	cd tests/netns && $(BIN)/python -m pytest -p no:cacheprovider -q -k nft .

test-quick: deps sanity units lint changelog-lint docs netns-quick

test: deps sanity units lint changelog-lint docs netns

clean:
	rm -rf build tests/output $(COLL_ROOT)
