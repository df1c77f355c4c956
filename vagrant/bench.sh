#!/usr/bin/env bash
# Runs the forwarding benchmark on the router VM with the same code as the lab
# (benches/forwarding.py: same table, same traffic, same routers) and leaves the results
# in /vagrant/benches/results/, which `make vagrant-bench` copies back.
#   bench.sh [--quick]
set -euo pipefail
cd /vagrant
exec sudo .venv/bin/python benches/forwarding.py --out benches/results/forwarding-vm "$@"
