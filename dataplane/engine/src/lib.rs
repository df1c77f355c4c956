//! Corridor's forwarding engine: the FIB and, in later modules, the packet views, the
//! AF_XDP rings and the worker pipeline. Pure Rust: nothing here names Python, so
//! `cargo test` runs without an interpreter. The pyo3 shell lives in `dataplane/python`.

pub mod fib;
pub mod qsbr;
pub mod xdp;
pub mod xsk;
pub mod wire;
pub mod pipeline;
pub mod counters;
pub mod engine;
