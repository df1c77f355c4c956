#!/usr/bin/env bash
# Provisioning of one test VM: Corridor's own `make deps` (the same Debian packages,
# toolchain and virtualenv as a workstation), the benchmark's C tools, and the benchmark
# networks (vagrant/nics.sh: IPv6 addresses, offloads, queues).
#   provision.sh ROLE IPV4=IPV6[,IPV4=IPV6]
set -euo pipefail

role="${1:?usage: provision.sh generator|router|sink IPV4=IPV6[,IPV4=IPV6]}"
pairs="${2:?usage: provision.sh ROLE IPV4=IPV6[,IPV4=IPV6]}"
src=/vagrant

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq make git sudo openssh-server >/dev/null
make -C "$src" deps
make -s -C "$src/benches/gen"
"$src/vagrant/nics.sh" "$role" "$pairs"
if [[ "$role" == router ]]; then
	# The router drives the generator and the sink over ssh as root (vagrant/run.sh
	# installs this key on them).
	install -d -m 700 /root/.ssh
	[[ -f /root/.ssh/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519
fi
echo "provisioned $role"
