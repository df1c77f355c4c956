# Corridor's only entry points: deps, demo, test, bench.
# `make deps` takes a fresh Debian 12 machine (as root) to a working tree and is quick
# when nothing changed: every step leaves a stamp in .make/ and reruns only when its
# inputs change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := .make
export PATH := $(HOME)/.cargo/bin:$(PATH)
export CARGO_TERM_COLOR := never

# clang + libbpf-dev: the XDP program; libxdp-dev: the reference AF_XDP forwarder in
# benches/; iproute2, ethtool, iputils-ping, tcpdump: the lab; python3-venv/-dev: the
# control plane; frr + bird2: the BGP feed's tests (zebra over FPM, a BGP peer);
# vagrant + shellcheck: checks of the test VMs; prometheus: promtool, which checks what the
# /metrics endpoints serve and deploy/'s rules; systemd: systemd-analyze verify of deploy/'s
# units; util-linux: setpriv, to run the agent with only the units' capabilities.
# libdpdk-dev: the DPDK baselines of benches/dpdk (rte_fib/rte_lpm harness, l3fwd), built
# with pkg-config; dpdk-doc: the l3fwd example source.
APT_PACKAGES := build-essential pkg-config curl ca-certificates git libdpdk-dev dpdk-doc \
	clang llvm libbpf-dev libelf-dev zlib1g-dev libxdp-dev \
	iproute2 ethtool iputils-ping tcpdump openssl \
	python3 python3-venv python3-dev frr bird2 \
	vagrant shellcheck prometheus systemd util-linux etcd-server etcd-client pmacct

RUST_SOURCES := $(shell find dataplane benches -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name Cargo.toml 2>/dev/null)

.PHONY: deps demo test bench bench-forwarding vagrant-bench proto fuzz soak clean

deps: $(STAMP)/apt $(STAMP)/rust $(STAMP)/venv $(STAMP)/ext

$(STAMP)/apt: Makefile
	@mkdir -p $(STAMP)
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "deps: installing Debian packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@touch $@

# The toolchain is the one rust-toolchain.toml pins, with clippy and rustfmt.
$(STAMP)/rust: $(STAMP)/apt rust-toolchain.toml
	@if ! command -v rustup >/dev/null; then \
		echo "deps: installing rustup"; \
		curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none; \
	fi
	@rustup toolchain install >/dev/null
	@cargo clippy --version >/dev/null && cargo fmt --version >/dev/null
	@touch $@

$(STAMP)/venv: requirements.txt $(wildcard requirements/*.txt) $(STAMP)/apt
	@echo "deps: Python packages into $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

$(STAMP)/ext: $(STAMP)/venv $(STAMP)/rust Cargo.lock pyproject.toml $(RUST_SOURCES)
	@echo "deps: building the engine extension (release)"
	@VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q 2>&1 | grep -v '^📦\|^🔗\|^🐍\|^🔨\|^🛠' || true
	@$(PY) -c "import corridor._dataplane" || { echo "deps: the extension did not build"; exit 1; }
	@touch $@

demo: deps
	$(PY) -m corridor demo

# Everything, lab tests included (root). The rules the tools enforce come first: they are
# quick and name the file to fix. `.venv/bin/pytest -m "not lab"` runs the fast tests only.
# The slowest tests are listed at the end, to keep the whole under 20 minutes.
test: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check control tests benches
	$(VENV)/bin/ruff format --check control tests benches
	$(VENV)/bin/mypy control
	cargo test --workspace --quiet
	$(PY) -m pytest -q --durations=15

# Every figure of docs/benchmarks.md, each with its baseline measured in the same run: the FIB
# against prefix-trie and against DPDK's rte_fib/rte_lpm (benches.fib_dpdk), the pipeline per
# frame on the full tables, gRPC programming against the engine's own load rate, the controller
# against the agent's direct rate, a quick forwarding comparison (kernel, XDP fast path, a
# C AF_XDP forwarder, DPDK l3fwd on AF_XDP, Corridor: about an hour), and forwarding under
# route churn and link failover. As root; results in benches/results/.
bench: deps
	cargo bench -p corridor-benches --bench fib -- --noplot | tee benches/results/fib-latest.txt
	$(MAKE) -s -C benches/dpdk
	$(PY) -m benches.fib_dpdk
	cargo bench -p corridor-benches --bench pipeline -- --noplot | tee benches/results/pipeline-latest.txt
	$(PY) -m benches.agent_load --out benches/results/agent-load.md
	$(PY) -m benches.controller_load
	$(PY) -m benches.controller_costs | tee benches/results/controller-costs.txt
	$(PY) -m benches.controller_ha > benches/results/controller-ha.json
	$(PY) -m benches.bgp_load
	$(MAKE) -s -C benches/gen
	$(PY) -m benches.forwarding --reps 1 --profile
	$(PY) -m benches.steering
	$(PY) -m benches.change

# The side-by-side forwarding benchmark (kernel, XDP fast path, Corridor, a C AF_XDP
# reference, DPDK l3fwd) in the lab; BENCH_ARGS=--quick for a smoke run. Full mode with three
# repetitions takes about 3.5 hours (10 s RFC 2544 trials).
bench-forwarding: deps
	$(MAKE) -s -C benches/gen
	$(MAKE) -s -C benches/dpdk
	$(PY) -m benches.forwarding $(BENCH_ARGS)

# The same benchmark on three VMs with virtio NICs, from a workstation (vagrant with libvirt
# or VirtualBox; VAGRANT_DEFAULT_PROVIDER picks one): vagrant/run.sh.
vagrant-bench:
	vagrant/run.sh $(BENCH_ARGS)

# Fuzzing, not part of `make test`: each Rust fuzz target (dataplane/fuzz: wire views,
# pipeline, FIB batches, the controller's ApplyRequest reader, the agent's WriteRequest
# intake) for FUZZ_SECONDS from the committed corpus, on the stable toolchain (cargo-fuzz
# with `-s none`, installed here at a pinned version), then the property tests with
# HYPOTHESIS_PROFILE=fuzz and FUZZ_EXAMPLES examples each. A crash's input goes to
# dataplane/fuzz/regressions/ with its fix.
FUZZ_SECONDS ?= 60
FUZZ_EXAMPLES ?= 5000
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(STAMP)/tools/cargo-fuzz-$(CARGO_FUZZ_VERSION)/bin/cargo-fuzz

$(CARGO_FUZZ): $(STAMP)/rust
	cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked -q \
		--root $(STAMP)/tools/cargo-fuzz-$(CARGO_FUZZ_VERSION)

fuzz: deps $(CARGO_FUZZ)
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO_FUZZ=$(abspath $(CARGO_FUZZ)) dataplane/fuzz/run.sh
	HYPOTHESIS_PROFILE=fuzz HYPOTHESIS_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(PY) -m pytest -q -p no:logging tests/test_properties_agent.py \
		tests/test_properties_controller.py tests/test_properties_fpm.py \
		tests/test_agent_intake.py tests/test_controller_fib_properties.py

# Soak and chaos, not part of `make test`: traffic through the lab for SOAK_SECONDS while routes
# churn through the controller, a link flaps and agent and controller are killed -9 in turn;
# checked every second (benches/soak.py). Results in benches/results/soak-latest.*.
SOAK_SECONDS ?= 600
soak: deps
	$(MAKE) -s -C benches/gen
	$(PY) -m benches.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# The Python modules of the gRPC contracts, from proto/ into control/corridor/v1/ (committed;
# tests/test_agent_proto.py regenerates into PROTO_OUT and fails when they are stale).
PROTO_OUT := control
proto:
	$(PY) -m grpc_tools.protoc -I proto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		--grpc_python_out=$(PROTO_OUT) $(sort $(wildcard proto/corridor/v1/*.proto))

clean:
	rm -rf $(STAMP) target $(VENV)
