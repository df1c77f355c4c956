//! The pyo3 shell over corridor-engine, built by maturin as `corridor._dataplane`.
//! It converts arguments, releases the GIL around every call that can take long, and maps
//! the engine's typed errors to Python exceptions in one place (`batch_error`).

use corridor_engine::fib::{
    Adjacency, BatchError, Family, Fib as CoreFib, FibConfig, FibOp, Member, NextHop, Prefix, RouteTarget, MAX_MEMBERS, UNKNOWN_MEMBER,
};
use corridor_intent::intake::{read_route_write as core_read_route_write, Change};
use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

mod engine;
mod intent;
mod intents;
mod prefixes;
mod table;

create_exception!(_dataplane, FibError, PyValueError, "A refused write batch; `.errors` lists (entry index or None, message).");

/// An ordered write batch, built in Python and applied whole by `Fib.apply`. Entries whose
/// text could not be read are kept aside with their position, so that `apply` reports
/// them together with what the FIB's validation finds.
#[pyclass(module = "corridor._dataplane")]
#[derive(Default)]
struct Batch {
    ops: Vec<FibOp>,
    /// (entry index, reason), in entry order.
    bad: Vec<(usize, String)>,
}

impl Batch {
    fn push(&mut self, e: Result<FibOp, String>) {
        match e {
            Ok(op) => self.ops.push(op),
            Err(m) => self.bad.push((self.ops.len() + self.bad.len(), m)),
        }
    }

    /// The entry position of the `i`-th readable operation.
    fn entry_index(&self, i: usize) -> usize {
        let mut e = i;
        for (b, _) in &self.bad {
            if *b <= e {
                e += 1;
            } else {
                break;
            }
        }
        e
    }
}

fn parse_target(target: &Bound<'_, PyAny>) -> PyResult<Result<RouteTarget, String>> {
    if let Ok(g) = target.extract::<i64>() {
        return Ok(u32::try_from(g).map(RouteTarget::Group).map_err(|_| format!("group {g}: not a valid group id (0 to {})", u32::MAX)));
    }
    if let Ok(s) = target.cast::<PyString>() {
        return Ok(match s.to_str()? {
            "blackhole" => Ok(RouteTarget::Blackhole),
            "unreachable" => Ok(RouteTarget::Unreachable),
            "local" => Ok(RouteTarget::Local),
            "glean" => Ok(RouteTarget::Glean),
            other => Err(format!("target {other:?}: expected a group id, \"blackhole\", \"unreachable\", \"local\" or \"glean\"")),
        });
    }
    Err(PyTypeError::new_err("target must be a group id (int) or one of \"blackhole\", \"unreachable\", \"local\", \"glean\""))
}

fn target_to_py(py: Python<'_>, t: RouteTarget) -> Py<PyAny> {
    match t {
        RouteTarget::Group(g) => g.into_pyobject(py).map(|o| o.into_any().unbind()),
        RouteTarget::Blackhole => Ok(PyString::new(py, "blackhole").into_any().unbind()),
        RouteTarget::Unreachable => Ok(PyString::new(py, "unreachable").into_any().unbind()),
        RouteTarget::Local => Ok(PyString::new(py, "local").into_any().unbind()),
        RouteTarget::Glean => Ok(PyString::new(py, "glean").into_any().unbind()),
    }
    .expect("ints and strings always convert")
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("MAC {s:?}: expected six hex bytes like 02:00:00:00:00:01"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("MAC {s:?}: {p:?} is not a hex byte"))?;
    }
    Ok(mac)
}

pub(crate) fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[pymethods]
impl Batch {
    #[new]
    fn new() -> Self {
        Batch::default()
    }

    fn __len__(&self) -> usize {
        self.ops.len() + self.bad.len()
    }

    fn set_adjacency(&mut self, id: u32, port: u16, vlan: u16, src_mac: &str, dst_mac: &str) {
        let e = (|| {
            if vlan > 4094 {
                return Err(format!("adjacency {id}: VLAN {vlan} is not between 0 (untagged) and 4094"));
            }
            let src_mac = parse_mac(src_mac).map_err(|m| format!("adjacency {id}: {m}"))?;
            let dst_mac = parse_mac(dst_mac).map_err(|m| format!("adjacency {id}: {m}"))?;
            Ok(FibOp::SetAdjacency { id, adjacency: Adjacency { port, vlan, src_mac, dst_mac } })
        })();
        self.push(e);
    }

    fn delete_adjacency(&mut self, id: u32) {
        self.push(Ok(FibOp::DeleteAdjacency { id }));
    }

    /// An exchange member's router: its MAC on (port index, VLAN); `sources`, its source
    /// filter (BCP 38): the only prefixes its frames may come from (None: no filter).
    #[pyo3(signature = (id, port, vlan, mac, sources=None))]
    fn set_member(&mut self, id: u32, port: u16, vlan: u16, mac: &str, sources: Option<Vec<String>>) {
        let e = (|| {
            let mac = parse_mac(mac).map_err(|m| format!("member {id}: {m}"))?;
            let sources = match sources {
                None => None,
                Some(list) => Some(
                    list.iter().map(|t| t.parse::<Prefix>().map_err(|m| format!("member {id}: source filter: {m}"))).collect::<Result<
                        Box<[Prefix]>,
                        String,
                    >>(
                    )?,
                ),
            };
            Ok(FibOp::SetMember { id, member: Member { port, vlan, mac }, sources })
        })();
        self.push(e);
    }

    fn delete_member(&mut self, id: u32) {
        self.push(Ok(FibOp::DeleteMember { id }));
    }

    fn set_group(&mut self, id: u32, members: Vec<(u32, u32)>) {
        let members = members.into_iter().map(|(adjacency, weight)| NextHop { adjacency, weight }).collect();
        self.push(Ok(FibOp::SetGroup { id, members }));
    }

    fn delete_group(&mut self, id: u32) {
        self.push(Ok(FibOp::DeleteGroup { id }));
    }

    fn add_route(&mut self, prefix: &str, target: &Bound<'_, PyAny>) -> PyResult<()> {
        let target = parse_target(target)?;
        self.push(prefix.parse::<Prefix>().and_then(|prefix| Ok(FibOp::AddRoute { prefix, target: target? })));
        Ok(())
    }

    fn delete_route(&mut self, prefix: &str) {
        self.push(prefix.parse::<Prefix>().map(|prefix| FibOp::DeleteRoute { prefix }));
    }

    /// Adds one route per non-empty line of `prefix [anything]` text (the format of the
    /// tables in shared/data), all to `target`. Returns the number of entries added.
    fn add_routes_text(&mut self, py: Python<'_>, text: &str, target: &Bound<'_, PyAny>) -> PyResult<usize> {
        let target = parse_target(target)?;
        let before = self.__len__();
        py.detach(|| {
            for line in text.lines() {
                let Some(word) = line.split_whitespace().next() else { continue };
                let t = target.clone();
                self.push(word.parse::<Prefix>().and_then(|prefix| Ok(FibOp::AddRoute { prefix, target: t? })));
            }
        });
        Ok(self.__len__() - before)
    }

    /// Whether a route entry (added or deleted) of the batch is for one of `prefixes`.
    fn touches(&self, py: Python<'_>, prefixes: Vec<String>) -> PyResult<bool> {
        let wanted = prefixes.iter().map(|p| p.parse::<Prefix>().map_err(PyValueError::new_err)).collect::<PyResult<HashSet<_>>>()?;
        if wanted.is_empty() {
            return Ok(false);
        }
        Ok(py.detach(|| {
            self.ops.iter().any(|op| match op {
                FibOp::AddRoute { prefix, .. } | FibOp::DeleteRoute { prefix } => wanted.contains(prefix),
                _ => false,
            })
        }))
    }
}

/// A serialized corridor.v1.WriteRequest whose operations are all routes, read with the GIL
/// released straight into a Batch (corridor_intent::intake): (election id, batch id, batch),
/// entry i for operation i. None for any other request, and for one with a FORWARD route to
/// a group from `first_group` up (ids the agent keeps for itself): read it the slow way,
/// which names every fault.
#[pyfunction]
fn read_route_write(py: Python<'_>, data: &Bound<'_, PyBytes>, first_group: u64) -> Option<(u128, u64, Batch)> {
    let bytes = data.as_bytes();
    py.detach(|| {
        let write = core_read_route_write(bytes)?;
        let mut ops = Vec::with_capacity(write.routes.len());
        for r in &write.routes {
            let prefix = if r.v6 {
                Prefix::v6(u128::from_be_bytes(r.address), r.length)
            } else {
                Prefix::v4(u32::from_be_bytes([r.address[0], r.address[1], r.address[2], r.address[3]]), r.length)
            };
            ops.push(match r.change {
                Change::Delete => FibOp::DeleteRoute { prefix },
                Change::Set { kind: 1, group } if u64::from(group) >= first_group => return None,
                Change::Set { kind: 1, group } => FibOp::AddRoute { prefix, target: RouteTarget::Group(group) },
                Change::Set { kind: 2, .. } => FibOp::AddRoute { prefix, target: RouteTarget::Blackhole },
                Change::Set { kind: 3, .. } => FibOp::AddRoute { prefix, target: RouteTarget::Unreachable },
                Change::Set { .. } => FibOp::AddRoute { prefix, target: RouteTarget::Local },
            });
        }
        let election = (u128::from(write.election.0) << 64) | u128::from(write.election.1);
        Some((election, write.batch_id, Batch { ops, bad: Vec::new() }))
    })
}

/// The forwarding table. Writes are whole batches; lookups are for tests and tools (the
/// workers read the table directly, without Python).
#[pyclass(module = "corridor._dataplane", frozen)]
pub(crate) struct Fib {
    inner: Mutex<CoreFib>,
}

/// The core's typed configuration errors (`fib::ConfigError`, `pipeline::ConfigError`) as
/// Python sees them: a `ValueError` carrying the core's message, which names the field.
pub(crate) fn config_error(e: impl std::error::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn batch_error(py: Python<'_>, errors: Vec<(Option<usize>, String)>) -> PyErr {
    let summary = match errors.as_slice() {
        [(Some(i), m)] => format!("entry {i}: {m}"),
        [(None, m)] => m.clone(),
        _ => format!(
            "{} bad entries; first: {}",
            errors.len(),
            errors.first().map(|(i, m)| i.map_or(m.clone(), |i| format!("entry {i}: {m}"))).unwrap_or_default()
        ),
    };
    let err = FibError::new_err(summary);
    let list = PyList::new(py, errors).expect("tuples of ints and strings convert");
    // An attribute on the exception instance: `except FibError as e: e.errors`.
    if let Err(e) = err.value(py).setattr("errors", list) {
        return e;
    }
    err
}

fn core_errors(e: BatchError) -> Vec<(Option<usize>, String)> {
    e.errors.into_iter().map(|e| (e.index, e.message)).collect()
}

impl Fib {
    pub(crate) fn with<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut CoreFib) -> R + Send) -> R {
        py.detach(|| {
            let mut fib = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut fib)
        })
    }
}

#[pymethods]
impl Fib {
    #[new]
    #[pyo3(signature = (*, v4_routes=None, v6_routes=None, v4_nodes=None, v6_nodes=None, groups=None, adjacencies=None))]
    fn new(
        v4_routes: Option<usize>,
        v6_routes: Option<usize>,
        v4_nodes: Option<u32>,
        v6_nodes: Option<u32>,
        groups: Option<u32>,
        adjacencies: Option<u32>,
    ) -> PyResult<Self> {
        let d = FibConfig::default();
        let config = FibConfig {
            v4_routes: v4_routes.unwrap_or(d.v4_routes),
            v6_routes: v6_routes.unwrap_or(d.v6_routes),
            v4_nodes: v4_nodes.unwrap_or(d.v4_nodes),
            v6_nodes: v6_nodes.unwrap_or(d.v6_nodes),
            groups: groups.unwrap_or(d.groups),
            adjacencies: adjacencies.unwrap_or(d.adjacencies),
        };
        let fib = CoreFib::new(config).map_err(config_error)?;
        Ok(Fib { inner: Mutex::new(fib) })
    }

    /// Validates the whole batch, then applies it; on error nothing is applied.
    fn apply(&self, py: Python<'_>, batch: &Bound<'_, Batch>) -> PyResult<()> {
        let batch = batch.borrow();
        let b: &Batch = &batch;
        let result = self.with(py, |fib| {
            let mut errors: Vec<(Option<usize>, String)> = b.bad.iter().map(|(i, m)| (Some(*i), m.clone())).collect();
            // Validate what parsed too, so one reply names every bad entry.
            let check = if errors.is_empty() { fib.apply(&b.ops) } else { fib.validate(&b.ops) };
            if let Err(e) = check {
                errors.extend(core_errors(e).into_iter().map(|(i, m)| (i.map(|i| b.entry_index(i)), m)));
            }
            errors.sort_by_key(|(i, _)| i.unwrap_or(usize::MAX));
            errors
        });
        if result.is_empty() {
            Ok(())
        } else {
            Err(batch_error(py, result))
        }
    }

    /// Longest-prefix match: a group id, "blackhole", "unreachable", "local", or None.
    fn lookup(&self, py: Python<'_>, address: &str) -> PyResult<Option<Py<PyAny>>> {
        let ip: IpAddr = address.parse().map_err(|_| PyValueError::new_err(format!("{address:?} is not an IPv4 or IPv6 address")))?;
        let t = self.with(py, |fib| {
            let r = fib.reader();
            match ip {
                IpAddr::V4(a) => r.lookup_v4(a.into()),
                IpAddr::V6(a) => r.lookup_v6(a.into()),
            }
        });
        Ok(t.map(|t| target_to_py(py, t)))
    }

    /// The member adjacency a flow with `flow_hash` takes in `group`, or None.
    fn next_hop(&self, py: Python<'_>, group: u32, flow_hash: u32) -> Option<u32> {
        self.with(py, |fib| fib.reader().next_hop(group, flow_hash).map(|(a, _)| a))
    }

    /// The target installed for exactly this prefix, or None.
    fn route(&self, py: Python<'_>, prefix: &str) -> PyResult<Option<Py<PyAny>>> {
        let p: Prefix = prefix.parse().map_err(PyValueError::new_err)?;
        p.check().map_err(PyValueError::new_err)?;
        Ok(self.with(py, |fib| fib.route(&p)).map(|t| target_to_py(py, t)))
    }

    /// Every route, IPv4 then IPv6, shortest prefixes first.
    fn routes(&self, py: Python<'_>) -> Vec<(String, Py<PyAny>)> {
        let all = self.with(py, |fib| {
            let mut v = fib.routes(Family::V4);
            v.extend(fib.routes(Family::V6));
            v.into_iter().map(|(p, t)| (p.to_string(), t)).collect::<Vec<_>>()
        });
        all.into_iter().map(|(p, t)| (p, target_to_py(py, t))).collect()
    }

    fn groups(&self, py: Python<'_>) -> Vec<(u32, Vec<(u32, u32)>)> {
        self.with(py, |fib| {
            let mut v: Vec<_> = fib.groups().map(|(id, m)| (id, m.iter().map(|n| (n.adjacency, n.weight)).collect())).collect();
            v.sort_unstable();
            v
        })
    }

    fn adjacencies(&self, py: Python<'_>) -> Vec<(u32, u16, u16, String, String)> {
        self.with(py, |fib| {
            let mut v: Vec<_> = fib.adjacencies().map(|(id, a)| (id, a.port, a.vlan, mac_str(a.src_mac), mac_str(a.dst_mac))).collect();
            v.sort_unstable();
            v
        })
    }

    /// The counter slot of the blackhole route for exactly this prefix, or None.
    fn blackhole_slot(&self, py: Python<'_>, prefix: &str) -> PyResult<Option<u32>> {
        let p: Prefix = prefix.parse().map_err(PyValueError::new_err)?;
        Ok(self.with(py, |fib| fib.blackhole_slot(&p)))
    }

    /// Every member: (id, port index, VLAN, MAC), by id.
    fn members(&self, py: Python<'_>) -> Vec<(u32, u16, u16, String)> {
        self.with(py, |fib| {
            let mut v: Vec<_> = fib.members().map(|(id, m)| (id, m.port, m.vlan, mac_str(m.mac))).collect();
            v.sort_unstable();
            v
        })
    }

    /// A member's source filter (BCP 38) as prefixes, or None when it has none.
    fn member_sources(&self, py: Python<'_>, id: u32) -> Option<Vec<String>> {
        self.with(py, |fib| fib.member_sources(id).map(|p| p.iter().map(|p| p.to_string()).collect()))
    }

    /// The member adjacency `id` sends to (its destination MAC is the member's), or None.
    fn adjacency_member(&self, py: Python<'_>, id: u32) -> Option<u32> {
        self.with(py, |fib| fib.adjacency_member(id))
    }

    /// For each id: whether a frame left by that adjacency since the last call (the bit
    /// is cleared); false for an unknown id.
    fn take_adjacency_used(&self, py: Python<'_>, ids: Vec<u32>) -> Vec<bool> {
        self.with(py, |fib| ids.iter().map(|&id| fib.take_adjacency_used(id)).collect())
    }

    /// Gives the tables' roots their memory now (corridor_engine's Fib::prefault), the
    /// GIL released: a router's FIB at its start.
    fn prefault(&self, py: Python<'_>) {
        self.with(py, |fib| fib.prefault());
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(py, |fib| fib.stats());
        let d = PyDict::new(py);
        d.set_item("v4_routes", s.v4.routes)?;
        d.set_item("v6_routes", s.v6.routes)?;
        d.set_item("v4_capacity", s.v4.route_capacity)?;
        d.set_item("v6_capacity", s.v6.route_capacity)?;
        d.set_item("groups", s.groups)?;
        d.set_item("group_capacity", s.group_capacity)?;
        d.set_item("adjacencies", s.adjacencies)?;
        d.set_item("adjacency_capacity", s.adjacency_capacity)?;
        d.set_item("v4_nodes_used", s.v4.nodes_used)?;
        d.set_item("v6_nodes_used", s.v6.nodes_used)?;
        d.set_item("v4_bytes", s.v4.entry_bytes)?;
        d.set_item("v6_bytes", s.v6.entry_bytes)?;
        Ok(d)
    }
}

#[pymodule]
fn _dataplane(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Batch>()?;
    m.add_class::<Fib>()?;
    m.add_function(wrap_pyfunction!(read_route_write, m)?)?;
    m.add("FibError", m.py().get_type::<FibError>())?;
    m.add("MAX_MEMBERS", MAX_MEMBERS)?;
    m.add("UNKNOWN_MEMBER", UNKNOWN_MEMBER)?;
    engine::register(m)?;
    intent::register(m)?;
    table::register(m)?;
    intents::register(m)?;
    prefixes::register(m)?;
    Ok(())
}
