//! The controller's bulk codec. A full Internet table crosses the controller twice: in
//! ApplyRequests from orchestration and in WriteRequests to every node. Read or written one
//! protobuf object per route in Python, that is most of the controller's time; here a
//! whole message is read (and checked) or written in one pass over its bytes.
//!
//! The checks that need the controller's rules (node names, gateways, ports, VLANs, weights)
//! stay in Python, run once per distinct value: this crate reads, canonicalises, checks
//! what is per route (prefixes, duplicates, next-hop counts) and deduplicates.
//!
//! The agent reads the WriteRequests that carry a table the same way (`intake`): the
//! routes of a batch straight from its bytes into one engine batch.
//!
//! What the controller keeps of each node's routes, what it should hold and what it holds,
//! are route tables here too (`table`): set, diffed and recorded a batch at a time, the
//! diff written into WriteRequests from its keys.

pub mod apply;
pub mod fpm;
pub mod intake;
pub mod table;
pub mod text;
pub mod wire;
pub mod write;
