# `make demo` and `make test` are the two commands; both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := openvswitch-switch iproute2 iputils-ping ethtool iperf3 tcpdump \
	isc-dhcp-client busybox etcd-server redis-server netcat-openbsd procps iptables \
	mariadb-server gcc python3-dev

.PHONY: setup test lint demo clean

setup: $(STAMPS)/apt $(STAMPS)/venv

# apt is only touched when a package is missing, so a second `make setup` is instant.
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@installed=$$(dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -c 'install ok installed'); \
	if [ "$$installed" -ne $(words $(APT_PACKAGES)) ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	fi
	@touch $@

# requirements-neutron.txt: real Neutron for tests/neutron (uWSGI compiles: gcc, python3-dev).
$(STAMPS)/venv: requirements.txt requirements-neutron.txt pyproject.toml
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-neutron.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

lint: setup
	$(VENV)/bin/ruff check dragonflow tests bench

test: setup lint
	$(VENV)/bin/pytest -q -ra tests

demo: setup
	$(VENV)/bin/dfctl demo

clean:
	rm -rf $(STAMPS) build *.egg-info
