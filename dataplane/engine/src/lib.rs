//! Corridor's forwarding engine: the FIB, the packet views, the AF_XDP sockets and the XDP
//! steering program, the worker pipeline, its drop reasons and counters, and the engine
//! that runs workers over ports. Pure Rust: nothing here names Python, so `cargo test`
//! runs without an interpreter. The pyo3 shell lives in `dataplane/python`.

pub mod counters;
pub mod drop;
pub mod engine;
pub mod fib;
pub mod pipeline;
mod prefetch;
pub mod qsbr;
pub mod wire;
pub mod xdp;
pub mod xsk;
