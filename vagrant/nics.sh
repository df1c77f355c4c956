#!/usr/bin/env bash
# The benchmark networks of one test VM. Vagrant gives private networks IPv4 only: for every
# IPV4=IPV6 pair, the NIC holding IPV4 also gets IPV6 (no duplicate address detection:
# the plan is fixed), raw frames cross unchanged (no segmentation or receive offloads, as
# in the lab), and on the router every NIC has one combined queue per vCPU, so each engine
# worker can own one (the benchmark narrows them per router it measures).
#   nics.sh ROLE IPV4=IPV6[,IPV4=IPV6]
# Also run by tests/test_vagrant.py inside a lab's namespaces.
set -euo pipefail

role="${1:?usage: nics.sh generator|router|sink IPV4=IPV6[,IPV4=IPV6]}"
pairs="${2:?usage: nics.sh ROLE IPV4=IPV6[,IPV4=IPV6]}"
case "$role" in generator | router | sink) ;; *)
	echo "nics.sh: role $role: expected generator, router or sink" >&2
	exit 2
	;;
esac

IFS=, read -r -a items <<<"$pairs"
for item in "${items[@]}"; do
	v4="${item%%=*}"
	v6="${item#*=}"
	if [[ "$item" != *=* || -z "$v4" || -z "$v6" ]]; then
		echo "nics.sh: $item: expected IPV4=IPV6" >&2
		exit 2
	fi
	nic="$(ip -o -4 addr show | awk -v a="$v4" '{ split($4, p, "/"); if (p[1] == a) print $2 }')"
	if [[ -z "$nic" ]]; then
		echo "nics.sh: no NIC holds $v4" >&2
		exit 1
	fi
	sysctl -q -w "net.ipv6.conf.${nic}.accept_dad=0"
	ip -6 addr replace "${v6}/64" dev "$nic" nodad
	ethtool -K "$nic" tso off gso off gro off >/dev/null 2>&1 || true
	if [[ "$role" == router ]]; then
		ethtool -L "$nic" combined "$(nproc)" >/dev/null 2>&1 || true
	fi
	echo "nics.sh: $nic: $v4 $v6"
done
