#!/usr/bin/env bash
# Runs the forwarding benchmark on the router VM with the same code as the lab
# (benches.forwarding: same table, same traffic, same routers), the generator and the
# sink being the other two VMs, reached over bench-ctl. Results in
# /vagrant/benches/results/forwarding-vm.*, which vagrant/run.sh copies back.
#   bench.sh [benches.forwarding options, e.g. --quick]
set -euo pipefail
cd /vagrant
exec .venv/bin/python -m benches.forwarding --hosts gen=198.18.254.2,sink=198.18.254.3 \
	--out benches/results/forwarding-vm "$@"
