"""Corridor's benchmarks, each run as `python -m benches.<name>` from the repository root
(as root): forwarding, change, steering, agent_load, controller_load. What they share (the
lab, the tables, the generator and the sink, CPU placement, the agent as a process) is in
benches.harness. The Rust crate beside them (Cargo.toml, lib.rs, benches/fib.rs) is the
FIB benchmark, run by cargo."""
