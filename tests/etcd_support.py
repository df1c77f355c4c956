"""The real etcd cluster the tests start (1 or 3 members of Debian's etcd-server on loopback
ports, in the test's temporary directory): benches/harness/etcd.py, shared with the
benchmarks."""

from benches.harness.etcd import EtcdCluster, Member, free_port

__all__ = ["EtcdCluster", "Member", "free_port"]
