# kvmlite: `make run` boots the default guest, `make test` runs the whole suite.
# Both install what they need first (Debian packages, a venv, the default guest).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 packages: the default guest's kernel source and build tools, busybox for
# its initramfs, and the independent judges the tests use (QEMU, qemu-img, iasl, cpio,
# TigerVNC's vncviewer under Xvfb with xwd for the VNC console).
APT_PACKAGES := python3-venv build-essential bc flex bison libelf-dev lz4 cpio \
	linux-source-6.1 busybox-static qemu-system-x86 qemu-utils acpica-tools e2fsprogs \
	passt iproute2 iputils-ping socat curl xorriso sg3-utils tigervnc-viewer xvfb x11-apps

.PHONY: run test test-long fuzz bench lint deps apt venv guest clean kvm-unit-tests

run: deps guest
	$(VENV)/bin/kvmlite run

test: deps guest lint
	$(VENV)/bin/pytest -ra -m "not long"

# The checks that take many minutes here (schemathesis with many examples per
# endpoint): run by hand or on a quiet machine.
test-long: deps guest
	$(VENV)/bin/pytest -ra -m long

# Every hypothesis test (marker fuzz) with FUZZ_SCALE times its usual examples;
# a failure prints a reproduction blob (@reproduce_failure). FUZZ_ARGS: more pytest args.
FUZZ_SCALE ?= 20
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz KVMLITE_FUZZ_SCALE=$(FUZZ_SCALE) $(VENV)/bin/pytest -q -m fuzz \
		-p no:cacheprovider $(FUZZ_ARGS)

bench: deps guest
	$(PY) -m benchmarks.run

lint: venv
	$(VENV)/bin/ruff check kvmlite tests benchmarks
	$(VENV)/bin/ruff format --check kvmlite tests benchmarks
	$(VENV)/bin/mypy

deps: apt venv

apt:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(APT_PACKAGES); }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Builds (once, cached under ~/.cache/kvmlite) the default guest kernel and initramfs.
# compileall: byte-code up front, so that `kvmlite run` starts fast even where
# PYTHONDONTWRITEBYTECODE is set.
guest: venv
	$(PY) -m compileall -q kvmlite benchmarks
	$(PY) -m kvmlite.guestimage

# kvm-unit-tests (vendored, not in the repo): build it under build/, run it through
# tools/kvm-unit-tests/qemu (kvmlite) and with QEMU -accel kvm, and write
# build/kvm-unit-tests-results/table.md. KUT_TIMEOUT=60s caps every test (default:
# each test's own timeout); KUT_TESTS="smptest tsc" runs only those; KUT_ARGS=--skip-qemu
# reuses the last QEMU results.
KUT_TARBALL ?= ../shared/vendor/kvm-unit-tests-1da1819e.tar.gz
KUT_TIMEOUT ?=
KUT_TESTS ?=
kvm-unit-tests: venv
	$(PY) -m kvmlite.testing.kvm_unit_tests --tarball $(KUT_TARBALL) --build build \
		--out build/kvm-unit-tests-results $(if $(KUT_TIMEOUT),--timeout $(KUT_TIMEOUT)) \
		$(KUT_ARGS) $(KUT_TESTS)

clean:
	rm -rf $(VENV) build *.egg-info
