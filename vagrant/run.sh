#!/usr/bin/env bash
# The forwarding benchmark on the three test VMs, from a workstation: boots them (or reuses
# them), lets the router reach the generator and the sink as root over ssh (its key, made
# at provisioning, is installed on both), runs vagrant/bench.sh on the router and copies
# the results to benches/results/forwarding-vm.{md,json,png}.
#   vagrant/run.sh [benches.forwarding options, e.g. --quick]
# Needs vagrant with the libvirt or VirtualBox provider and hardware virtualisation.
set -euo pipefail
cd "$(dirname "$0")"

vagrant up
key="$(vagrant ssh router -c 'sudo cat /root/.ssh/id_ed25519.pub' | tr -d '\r')"
for vm in generator sink; do
	vagrant ssh "$vm" -c "sudo sh -c 'install -d -m 700 /root/.ssh && \
		grep -qxF \"$key\" /root/.ssh/authorized_keys 2>/dev/null || \
		echo \"$key\" >> /root/.ssh/authorized_keys'"
done
vagrant ssh router -c "sudo /vagrant/vagrant/bench.sh $*"
vagrant ssh router -c 'tar -C /vagrant/benches/results -c forwarding-vm.md forwarding-vm.json forwarding-vm.png' |
	tar -C ../benches/results -x
echo "results: benches/results/forwarding-vm.md"
