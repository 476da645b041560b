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
# the lab (tests/lab) adds: images, containers, the guests' static answer daemon, the apt repository index;
# the benchmark adds iperf3 (bench/dataplane.py)
APT_PKGS   := iptables nftables iproute2 rsync python3 debootstrap systemd-container zstd gcc libc6-dev dpkg-dev \
              openssh-client iperf3
LAB        := PYTHONPATH=$(COLL_ROOT) $(PYTHON) tests/lab/lab.py
HV         ?= hv1
DEMO_DIR   := /var/tmp/kvmnet-lab/kvmlab
export ANSIBLE_COLLECTIONS_PATH := $(COLL_ROOT)
# bench/ and tests/netns import the shared test helpers (tests/support) from the copy, as the unit tests do
WITH_COLL  := PYTHONPATH=$(COLL_ROOT)
export PATH := $(BIN):$(PATH)

.PHONY: help deps venv collection pip-bootstrap sanity units lint changelog-lint docs package netns netns-quick core-newest \
        test test-quick clean \
        lab-images molecule molecule-nftables demo lab-up lab-down lab-status lab-ssh bench bench-quick bench-deps

help:
	@echo "make demo        build a small lab, expose its guests, verify from outside, print the table"
	@echo "make test        sanity, units, lint, changelog, docs, tarball, namespace tests, newest line, Molecule (CI)"
	@echo "make test-quick  the same without Molecule, the newest ansible-core line and the legacy-iptables pass"
	@echo "make core-newest units, sanity, nft and playbook namespace tests on the newest ansible-core line (Debian 13 root)"
	@echo "make molecule    the Molecule scenarios on lab hypervisors (Debian 12 and 13)"
	@echo "make molecule-nftables  the scenario nftables alone (Debian 13, libvirt's nftables firewall)"
	@echo "make bench       converge and dataplane benchmarks: table, bench/results.json, docs/bench.png"
	@echo "make bench-quick the same, reduced (about 8 min)"
	@echo "make lab-status | lab-ssh [HV=hv1] | lab-down   look around the demo lab, then remove it"
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
	  ansible-doc -t module kvmnet.nat.$$m > /dev/null || exit 1; echo "ansible-doc kvmnet.nat.$$m: ok"; \
	done
	@for f in $$(ls plugins/filter/*.yml | xargs -n1 basename | sed 's/\.yml$$//'); do \
	  ansible-doc -t filter kvmnet.nat.$$f > /dev/null || exit 1; echo "ansible-doc -t filter kvmnet.nat.$$f: ok"; \
	done
	@for r in $$(ls roles); do \
	  ansible-doc -t role kvmnet.nat.$$r > /dev/null || exit 1; echo "ansible-doc -t role kvmnet.nat.$$r: ok"; \
	done

# The tarball as users get it: built, installed into an empty path, every plugin's and the role's
# documentation rendered from there; it must hold no development path and stay small. Issue 14 asked
# for 120 KB; with the licence text, the unit tests, the doctor, the 1.0.0 changelog, issue 19's checks, the
# seam and the nftables backend with its doctor (a second firewall engine) the collection is 329 KB: the gate
# is 360 KB, and docs/development.md ("The tarball") shows what each part costs.
PKG_DIR    := $(COLL_ROOT)/package
PKG_MAX_KB := 360
PKG_DEV_PATHS := Makefile bench/ tests/lab/ tests/netns/ tests/support/benchmark.py tests/support/topology.py \
                 tests/tools/ extensions/ docs/ .ci/ tests/requirements.txt
package: venv
	@rm -rf $(PKG_DIR) && mkdir -p $(PKG_DIR)/installed
	ansible-galaxy collection build --output-path $(PKG_DIR) . >/dev/null
	@tarball=$$(ls $(PKG_DIR)/kvmnet-nat-*.tar.gz); size=$$(( $$(stat -c %s $$tarball) / 1024 )); \
	echo "tarball: $$tarball, $$size KB (at most $(PKG_MAX_KB))"; \
	[ $$size -le $(PKG_MAX_KB) ] || { echo "the tarball is larger than $(PKG_MAX_KB) KB"; exit 1; }; \
	listing=$$(tar -tzf $$tarball); \
	for dev in $(PKG_DEV_PATHS); do \
	  if printf '%s\n' "$$listing" | grep -q "^$$dev"; then echo "development path in the tarball: $$dev"; exit 1; fi; \
	done; \
	for need in LICENSE LICENSES/GPL-3.0-or-later.txt README.md MANIFEST.json FILES.json meta/runtime.yml \
	            meta/execution-environment.yml roles/expose/meta/argument_specs.yml playbooks/expose.yml \
	            CHANGELOG.rst changelogs/changelog.yaml; do \
	  printf '%s\n' "$$listing" | grep -qx "$$need" || { echo "missing from the tarball: $$need"; exit 1; }; \
	done; \
	ANSIBLE_COLLECTIONS_PATH= ansible-galaxy collection install -p $(PKG_DIR)/installed $$tarball >/dev/null
	@for m in $$(ls plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//'); do \
	  ANSIBLE_COLLECTIONS_PATH=$(PKG_DIR)/installed ansible-doc -t module kvmnet.nat.$$m > /dev/null || exit 1; \
	  echo "installed tarball: ansible-doc kvmnet.nat.$$m: ok"; \
	done
	@for f in $$(ls plugins/filter/*.yml | xargs -n1 basename | sed 's/\.yml$$//'); do \
	  ANSIBLE_COLLECTIONS_PATH=$(PKG_DIR)/installed ansible-doc -t filter kvmnet.nat.$$f > /dev/null || exit 1; \
	  echo "installed tarball: ansible-doc -t filter kvmnet.nat.$$f: ok"; \
	done
	@ANSIBLE_COLLECTIONS_PATH=$(PKG_DIR)/installed ansible-doc -t role kvmnet.nat.expose > /dev/null && \
	  echo "installed tarball: ansible-doc -t role kvmnet.nat.expose: ok"
	@for p in $$(ls playbooks/*.yml | xargs -n1 basename | sed 's/\.yml$$//'); do \
	  ANSIBLE_COLLECTIONS_PATH=$(PKG_DIR)/installed ansible-playbook --syntax-check -i localhost, kvmnet.nat.$$p >/dev/null || exit 1; \
	  echo "installed tarball: playbook kvmnet.nat.$$p: syntax ok"; \
	done

# The newest ansible-core line: units, sanity and the nft namespace tests in a Debian 13 root made from
# the lab's cached image (2.20 and later need Python >= 3.12; Debian 12 has 3.11). tests/tools/core_line.py
CORE_NEWEST ?= ansible-core>=2.21,<2.22
core-newest: deps venv collection lab-images
	$(BIN)/python tests/tools/core_line.py --core '$(CORE_NEWEST)' --collection $(COLL_DIR) units sanity netns

# real netfilter and packets, in throwaway namespaces only (needs root)
netns: deps collection
	cd tests/netns && $(WITH_COLL) $(BIN)/python -m pytest -p no:cacheprovider -q .

netns-quick: deps collection
	cd tests/netns && $(WITH_COLL) $(BIN)/python -m pytest -p no:cacheprovider -q -k nft .

# ---------------------------------------------------------------- the lab (needs root)
# Debian images, the local apt repository and the guest kernel are cached in /var/cache/kvmnet-lab.
lab-images: deps
	$(LAB) images

# the lab is removed also when a scenario fails or make is interrupted; so is the copy of this
# collection that Molecule installs under ~/.ansible/collections (it would shadow the build copy)
MOLECULE_COPY := $(HOME)/.ansible/collections/ansible_collections/kvmnet/nat
molecule: collection lab-images
	trap '$(LAB) --name kvmmol down >/dev/null 2>&1 || true; $(LAB) --name kvmref down >/dev/null 2>&1 || true; \
	      $(LAB) --name kvmnft down >/dev/null 2>&1 || true; rm -rf $(MOLECULE_COPY)' EXIT; \
	$(WITH_COLL) molecule test -s default && $(WITH_COLL) molecule test -s refusals && \
	$(WITH_COLL) molecule test -s nftables

# The nftables backend alone, on a Debian 13 hypervisor with libvirt's nftables firewall (lab flavour nft).
molecule-nftables: collection lab-images
	trap '$(LAB) --name kvmnft down >/dev/null 2>&1 || true' EXIT; \
	$(WITH_COLL) molecule test -s nftables

lab-up: deps collection lab-images
	@$(LAB) status >/dev/null 2>&1 || $(LAB) up --hv hv1:bookworm

lab-down: collection
	$(LAB) down

lab-status:
	@$(LAB) status

lab-ssh:
	$(LAB) ssh $(HV)

# One hypervisor with two guests, the example inventory (examples/inventory), then the verify
# playbook run from the lab's client on the public side.
demo: collection lab-up
	@echo "==> exposing the guests with the example inventory (playbook kvmnet.nat.expose)"
	ansible-playbook -i $(DEMO_DIR)/hosts.json -i examples/inventory kvmnet.nat.expose
	@echo "==> checking every declared port from the lab's client (playbook kvmnet.nat.verify)"
	ip netns exec kvmlab-cli $(BIN)/ansible-playbook -i $(DEMO_DIR)/hosts.json -i examples/inventory \
	  kvmnet.nat.verify -e verify_report=$(DEMO_DIR)/verify.json
	@$(PYTHON) tests/lab/show_report.py $(DEMO_DIR)/verify.json
	@echo
	@echo "Look around: make lab-ssh (then iptables-save, virsh list), make lab-status."
	@echo "Tear down:   make lab-down"

# Converge cost against the builtin iptables loop and dataplane cost against no NAT, in namespaces of
# their own (bench/run.py). BENCH_BEFORE: the last revision with flat chains, measured alongside.
BENCH_BEFORE ?= b3e6784
bench-deps: venv
	$(BIN)/pip install -q -r bench/requirements.txt

bench: deps collection bench-deps lab-images
	$(WITH_COLL) $(BIN)/python bench/run.py --before $(BENCH_BEFORE)

bench-quick: deps collection bench-deps lab-images
	$(WITH_COLL) $(BIN)/python bench/run.py --quick --out $(COLL_ROOT)/results-quick.json --plot $(COLL_ROOT)/bench-quick.png

test-quick: deps sanity units lint changelog-lint docs package netns-quick

test: deps sanity units lint changelog-lint docs package netns core-newest molecule

clean:
	rm -rf build tests/output $(COLL_ROOT)
	@echo "lab images stay in /var/cache/kvmnet-lab (rm -rf it to rebuild them)"
