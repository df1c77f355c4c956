#!/usr/bin/env bash
# Provisioning of one test VM: Corridor's own `make deps` (the same Debian packages,
# toolchain and virtualenv as a workstation), the benchmark's C tools, and the IPv6
# addresses of the benchmark networks (Vagrant sets only IPv4 on private networks).
#   provision.sh ROLE IPV6[,IPV6]
set -euo pipefail

role="${1:?usage: provision.sh generator|router|sink IPV6[,IPV6]}"
ipv6="${2:?usage: provision.sh ROLE IPV6[,IPV6]}"
src=/vagrant

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq make git sudo >/dev/null
make -C "$src" deps
make -s -C "$src/benches/gen"

# The private networks are the NICs after the management one, in Vagrantfile order.
mapfile -t nics < <(ip -o link show | awk -F': ' '$2 != "lo" {print $2}' | tail -n +2)
IFS=, read -r -a addrs <<<"$ipv6"
for i in "${!addrs[@]}"; do
	nic="${nics[$i]:?no NIC for ${addrs[$i]}}"
	sysctl -q -w "net.ipv6.conf.${nic}.accept_dad=0"
	ip -6 addr replace "${addrs[$i]}/64" dev "$nic" nodad
	# Raw frames cross unchanged, as in the lab.
	ethtool -K "$nic" tso off gso off gro off >/dev/null 2>&1 || true
	if [[ "$role" == router ]]; then
		# One combined queue per vCPU for the engine's workers (native XDP on virtio-net).
		ethtool -L "$nic" combined "$(nproc)" >/dev/null 2>&1 || true
	fi
done
echo "provisioned $role: ${nics[*]:0:${#addrs[@]}} <- ${addrs[*]}"
