//! The controller's bulk codec (corridor-intent): ApplyRequest bytes read whole, with the
//! GIL released for the pass over the bytes, and WriteRequest bytes written whole as the
//! operations are read from their Python tuples (with the GIL: the reading needs it, and the
//! writing is a small part of it).

use crate::prefixes::Prefixes;
use crate::table::RouteOps;
use corridor_intent::apply::{read_apply as core_read_apply, Refused};
use corridor_intent::fpm::scan as core_fpm_scan;
use corridor_intent::table::write_ops;
use corridor_intent::text::{parse_address, parse_prefix_packed};
use corridor_intent::write::{Op, Writer};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

type Read<'py> = (
    Bound<'py, PyList>,   // intents: (kind, [(gateway, port, vlan, weight)])
    Bound<'py, PyList>,   // the node of each route (one string object per distinct node)
    Bound<'py, Prefixes>, // the prefix of each route
    Bound<'py, PyList>,   // the intent (index) of each route
);

/// Reads a serialized corridor.v1.ApplyRequest. None when it holds a fault (read it with
/// the generated code to name every fault); ValueError when it is not an ApplyRequest.
/// The prefixes come back packed (`Prefixes`): no Python object per route but its node
/// and intent index.
#[pyfunction]
fn read_apply_request<'py>(py: Python<'py>, data: &Bound<'py, PyBytes>) -> PyResult<Option<Read<'py>>> {
    let bytes = data.as_bytes();
    let (batch, keys) = match py.detach(|| {
        core_read_apply(bytes).map(|batch| {
            let keys = batch.routes.iter().map(|r| r.prefix_key()).collect::<Vec<_>>();
            (batch, keys)
        })
    }) {
        Ok(read) => read,
        Err(Refused::Invalid) => return Ok(None),
        Err(Refused::Malformed(m)) => return Err(PyValueError::new_err(format!("not a corridor.v1.ApplyRequest: {}", m.0))),
    };
    let intents = PyList::empty(py);
    for intent in &batch.intents {
        let hops = PyList::empty(py);
        for h in &intent.next_hops {
            hops.append((PyBytes::new(py, h.gateway), h.port, h.vlan, h.weight))?;
        }
        intents.append((intent.kind, hops))?;
    }
    let nodes: Vec<Bound<'py, PyString>> = batch.nodes.iter().map(|n| PyString::new(py, n)).collect();
    let route_nodes = PyList::new(py, batch.routes.iter().map(|r| &nodes[r.node]))?;
    let index = PyList::new(py, batch.routes.iter().map(|r| r.intent))?;
    Ok(Some((intents, route_nodes, Bound::new(py, Prefixes::from_keys(keys))?, index)))
}

fn mac(text: &str) -> PyResult<Vec<u8>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bytes: Option<Vec<u8>> = text.split(':').map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.filter(|b| b.len() == 6).ok_or_else(|| PyValueError::new_err(format!("{text:?} is not a MAC address")))
}

/// One operation but a route's from its corridor.common.fib form (`write_request_bytes`
/// writes routes itself); `types` are that module's classes in the order (Adjacency,
/// NextHopGroup, Route, DeleteAdjacency, DeleteGroup, DeleteRoute).
fn op_from_py(op: &Bound<'_, PyAny>, types: &[Bound<'_, PyAny>; 6]) -> PyResult<Op> {
    let t = op.get_type();
    let f = op.cast::<PyTuple>()?;
    let item = |i: usize| f.get_item(i);
    Ok(if t.is(&types[1]) {
        Op::SetGroup { id: item(0)?.extract()?, members: item(1)?.extract()? }
    } else if t.is(&types[0]) {
        let gateway: Option<String> = item(5)?.extract()?;
        let gateway = match gateway.as_deref() {
            None | Some("") => Vec::new(),
            Some(g) => parse_address(g).ok_or_else(|| PyValueError::new_err(format!("{g:?} is not an address")))?,
        };
        Op::SetAdjacency {
            id: item(0)?.extract()?,
            port: item(1)?.extract()?,
            vlan: item(2)?.extract()?,
            src_mac: mac(&item(3)?.extract::<String>()?)?,
            dst_mac: mac(&item(4)?.extract::<String>()?)?,
            gateway,
        }
    } else if t.is(&types[4]) {
        Op::DeleteGroup { id: item(0)?.extract()? }
    } else if t.is(&types[3]) {
        Op::DeleteAdjacency { id: item(0)?.extract()? }
    } else {
        return Err(PyTypeError::new_err(format!("{} is not a FIB operation", t.name()?)));
    })
}

/// A serialized corridor.v1.WriteRequest: the 128-bit election id, the batch id, and the
/// operations (corridor.common.fib values, and `RouteOps` from a route table's diff) in
/// order. Routes, nearly all of a table's
/// operations, are read from their tuples and written straight away, with no `Op` and no
/// copy of their prefix text.
#[pyfunction]
fn write_request_bytes<'py>(
    py: Python<'py>,
    election: u128,
    batch_id: u64,
    ops: &Bound<'py, PyList>,
    types: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyBytes>> {
    let types: [Bound<'py, PyAny>; 6] =
        types.iter().collect::<Vec<_>>().try_into().map_err(|_| PyTypeError::new_err("types: the six corridor.common.fib classes"))?;
    let routes = ops.iter().filter_map(|op| op.cast::<RouteOps>().ok().map(|r| r.get().ops().len()));
    let count = ops.len() + routes.sum::<usize>();
    let mut w = Writer::new(((election >> 64) as u64, election as u64), count);
    for op in ops.iter() {
        let t = op.get_type();
        if let Ok(routes) = op.cast::<RouteOps>() {
            write_ops(&mut w, routes.get().ops());
        } else if t.is(&types[2]) || t.is(&types[5]) {
            let f = op.cast::<PyTuple>()?;
            let prefix = f.get_item(0)?;
            let text = prefix.cast::<PyString>()?.to_str()?;
            let (address, size, length) =
                parse_prefix_packed(text).ok_or_else(|| PyValueError::new_err(format!("{text:?} is not a prefix")))?;
            if t.is(&types[2]) {
                w.set_route(&address[..size], length, f.get_item(1)?.extract()?, f.get_item(2)?.extract()?);
            } else {
                w.delete_route(&address[..size], length);
            }
        } else {
            w.op(&op_from_py(&op, &types)?);
        }
    }
    Ok(PyBytes::new(py, &w.finish(batch_id)))
}

type FpmRoute<'py> = (bool, Bound<'py, PyString>, u8, u32, u8, Option<usize>, Option<u32>);
type FpmHop<'py> = (Option<Bound<'py, PyBytes>>, u32, u16);

/// The routes of the whole FPM frames at the start of `data[offset:]` that the fast path
/// takes (corridor_intent::fpm), read with the GIL released: the offset where it stopped,
/// the routes (add, prefix, rtm_type, table, protocol, next-hop set index or None,
/// RTA_NH_ID or None) and the distinct next-hop sets ((gateway or None, ifindex, weight)).
#[pyfunction]
fn fpm_scan<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
    offset: usize,
) -> PyResult<(usize, Vec<FpmRoute<'py>>, Vec<Vec<FpmHop<'py>>>)> {
    let bytes = data.as_bytes();
    let tail = bytes.get(offset..).ok_or_else(|| PyValueError::new_err("offset past the end"))?;
    let scan = py.detach(|| core_fpm_scan(tail));
    let routes =
        scan.routes.iter().map(|r| (r.add, PyString::new(py, &r.prefix), r.rtype, r.table, r.proto, r.hops, r.nexthop_id)).collect();
    let sets = scan
        .hop_sets
        .iter()
        .map(|blob| {
            let mut hops = Vec::new();
            let mut at = 0;
            while at < blob.len() {
                let size = usize::from(blob[at]);
                let gateway = (size > 0).then(|| PyBytes::new(py, &blob[at + 1..at + 1 + size]));
                at += 1 + size;
                let ifindex = u32::from_le_bytes([blob[at], blob[at + 1], blob[at + 2], blob[at + 3]]);
                let weight = u16::from_le_bytes([blob[at + 4], blob[at + 5]]);
                at += 6;
                hops.push((gateway, ifindex, weight));
            }
            hops
        })
        .collect();
    Ok((offset + scan.consumed, routes, sets))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fpm_scan, m)?)?;
    m.add_function(wrap_pyfunction!(read_apply_request, m)?)?;
    m.add_function(wrap_pyfunction!(write_request_bytes, m)?)?;
    Ok(())
}
