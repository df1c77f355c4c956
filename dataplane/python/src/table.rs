//! The controller's per-node route tables (corridor-intent's `table`) for domain.NodeFib:
//! routes set in bulk from the columns a refresh has (prefix texts and their kind and
//! group), diffed into `RouteOps` that `write_request_bytes` writes from their keys, and
//! recorded from them once a node acknowledged them. Prefix text crosses into Python only
//! when a slow path asks for a route (`get`, `items`).

use crate::prefixes::{key, keys_of};
use corridor_intent::table::{self, Dirty, Entry, Key, Refs, RouteOp, Table};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PySlice, PyTuple};
use std::sync::Arc;

type Counts = Vec<(u32, u64)>;

/// The canonical text of a key's prefix.
pub(crate) fn text(key: &Key) -> String {
    let mut out = Vec::with_capacity(48);
    table::write_key(&mut out, key);
    String::from_utf8(out).unwrap_or_default()
}

/// A route's (kind, group) from a `Route` tuple (prefix, kind, group) or None.
fn entry_of(item: &Bound<'_, PyAny>) -> PyResult<Option<Entry>> {
    if item.is_none() {
        return Ok(None);
    }
    let t = item.cast::<PyTuple>()?;
    Ok(Some(Entry { kind: t.get_item(1)?.extract()?, group: t.get_item(2)?.extract()? }))
}

fn refs_out(refs: Refs) -> (Counts, Counts) {
    (refs.added, refs.dropped)
}

/// What a node should hold or holds: prefix -> (kind, group), with the prefixes changed
/// since the last `take_dirty`.
#[pyclass(module = "corridor._dataplane")]
#[derive(Default)]
pub struct RouteTable {
    table: Table,
}

#[pymethods]
impl RouteTable {
    #[new]
    fn new() -> Self {
        RouteTable::default()
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }

    /// IPv6 routes, counted as routes come and go.
    #[getter]
    fn v6(&self) -> usize {
        self.table.v6()
    }

    fn __contains__(&self, prefix: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.table.get(&key(prefix)?).is_some())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<RouteTable>().is_ok_and(|o| o.borrow().table == self.table)
    }

    /// (kind, group) of the route to `prefix`, or None.
    fn get(&self, prefix: &Bound<'_, PyAny>) -> PyResult<Option<(u8, u32)>> {
        Ok(self.table.get(&key(prefix)?).map(|e| (e.kind, e.group)))
    }

    /// Every route as (prefix, kind, group), in no order.
    fn items(&self) -> Vec<(String, u8, u32)> {
        self.table.iter().map(|(k, e)| (text(&k), e.kind, e.group)).collect()
    }

    /// An independent copy, dirty prefixes included.
    fn copy(&self) -> RouteTable {
        RouteTable { table: self.table.clone() }
    }

    /// Sets the route to each of `prefixes` to (kind, group); returns the routes each
    /// group took and let go (group 0 left out).
    /// `prefixes`, here and below: a `Prefixes`, or prefix texts; all are read before
    /// anything is set, so a bad one changes nothing.
    fn set_uniform(&mut self, prefixes: &Bound<'_, PyAny>, kind: u8, group: u32) -> PyResult<(Counts, Counts)> {
        let keys = keys_of(prefixes)?;
        let mut refs = Refs::default();
        let entry = Some(Entry { kind, group });
        self.table.reserve(keys.as_slice().len());
        for k in keys.as_slice() {
            self.table.set(*k, entry, &mut refs);
        }
        Ok(refs_out(refs))
    }

    /// Sets the route to `prefixes[i]` to `made[index[i]]`, (kind, group) or None (no
    /// route); returns the routes each group took and let go.
    fn set_indexed(&mut self, prefixes: &Bound<'_, PyAny>, index: Vec<usize>, made: Vec<Option<(u8, u32)>>) -> PyResult<(Counts, Counts)> {
        let keys = keys_of(prefixes)?;
        let keys = keys.as_slice();
        if index.len() != keys.len() || index.iter().any(|&i| i >= made.len()) {
            return Err(PyValueError::new_err("index: one entry of made per prefix"));
        }
        self.table.reserve(keys.len());
        let mut refs = Refs::default();
        for (k, &i) in keys.iter().zip(&index) {
            self.table.set(*k, made[i].map(|(kind, group)| Entry { kind, group }), &mut refs);
        }
        Ok(refs_out(refs))
    }

    /// Sets the route to each of `prefixes` to its entry, a `Route` or None; as
    /// `set_indexed`.
    fn set_entries(&mut self, prefixes: &Bound<'_, PyAny>, entries: &Bound<'_, PyList>) -> PyResult<(Counts, Counts)> {
        let keys = keys_of(prefixes)?;
        let keys = keys.as_slice();
        if entries.len() != keys.len() {
            return Err(PyValueError::new_err("entries: one per prefix"));
        }
        let ops = keys.iter().zip(entries.iter()).map(|(k, e)| Ok((*k, entry_of(&e)?))).collect::<PyResult<Vec<RouteOp>>>()?;
        let mut refs = Refs::default();
        for (k, e) in ops {
            self.table.set(k, e, &mut refs);
        }
        Ok(refs_out(refs))
    }

    fn has_dirty(&self) -> bool {
        self.table.has_dirty()
    }

    /// The prefixes changed since the last call, with what each was set to; none after.
    fn take_dirty(&mut self) -> DirtyRoutes {
        DirtyRoutes { dirty: self.table.take_dirty() }
    }

    /// Marks again what `take_dirty` gave and was not written; newer marks win.
    fn mark_dirty(&mut self, older: &mut DirtyRoutes) {
        self.table.mark_dirty(std::mem::take(&mut older.dirty));
    }

    /// The route operations that take `have` to this table for `dirty` (from
    /// `take_dirty`), or for every prefix of both (None): sets, then deletes.
    #[pyo3(signature = (have, dirty=None))]
    fn diff(&self, have: &Bound<'_, RouteTable>, dirty: Option<&Bound<'_, DirtyRoutes>>) -> RouteOps {
        let ops = match dirty {
            Some(d) => self.table.diff(&have.borrow().table, Some(&d.borrow().dirty)),
            None => self.table.diff(&have.borrow().table, None),
        };
        RouteOps::whole(ops)
    }

    /// Records route operations a node acknowledged; returns the routes each group took
    /// and let go.
    fn apply(&mut self, ops: &RouteOps) -> (Counts, Counts) {
        let mut refs = Refs::default();
        self.table.apply(ops.ops(), &mut refs);
        refs_out(refs)
    }

    /// `apply` for operations as tuples: a `Route` (prefix, kind, group) sets, a
    /// `DeleteRoute` (prefix,) deletes.
    fn apply_tuples(&mut self, ops: &Bound<'_, PyList>) -> PyResult<(Counts, Counts)> {
        let ops = ops
            .iter()
            .map(|op| {
                let t = op.cast::<PyTuple>()?;
                let k = key(&t.get_item(0)?)?;
                match t.len() {
                    3 => Ok((k, entry_of(&op)?)),
                    1 => Ok((k, None)),
                    _ => Err(PyTypeError::new_err("a Route or a DeleteRoute")),
                }
            })
            .collect::<PyResult<Vec<RouteOp>>>()?;
        let mut refs = Refs::default();
        self.table.apply(&ops, &mut refs);
        Ok(refs_out(refs))
    }
}

/// Prefixes changed since a table's last `take_dirty`.
#[pyclass(module = "corridor._dataplane")]
pub struct DirtyRoutes {
    dirty: Dirty,
}

#[pymethods]
impl DirtyRoutes {
    fn __len__(&self) -> usize {
        self.dirty.len()
    }

    /// (prefix, (kind, group) or None) in the order first changed.
    fn items(&self) -> Vec<(String, Option<(u8, u32)>)> {
        self.dirty.ops().iter().map(|(k, e)| (text(k), e.map(|e| (e.kind, e.group)))).collect()
    }
}

/// Route operations from a diff (sets, then deletes), shared by slices of them: a
/// WriteRequest's worth is a slice.
#[pyclass(module = "corridor._dataplane", frozen)]
pub struct RouteOps {
    ops: Arc<[RouteOp]>,
    start: usize,
    end: usize,
}

impl RouteOps {
    fn whole(ops: Vec<RouteOp>) -> RouteOps {
        let end = ops.len();
        RouteOps { ops: ops.into(), start: 0, end }
    }

    pub fn ops(&self) -> &[RouteOp] {
        &self.ops[self.start..self.end]
    }
}

#[pymethods]
impl RouteOps {
    fn __len__(&self) -> usize {
        self.end - self.start
    }

    /// A slice (step 1) of these operations.
    fn __getitem__(&self, slice: &Bound<'_, PySlice>) -> PyResult<RouteOps> {
        let s = slice.indices(self.__len__() as isize)?;
        if s.step != 1 {
            return Err(PyValueError::new_err("slices of step 1 only"));
        }
        let (start, stop) = (s.start as usize, (s.stop.max(s.start)) as usize);
        Ok(RouteOps { ops: Arc::clone(&self.ops), start: self.start + start, end: self.start + stop })
    }

    /// Each operation as (prefix, kind, group) for a set or (prefix,) for a delete.
    fn tuples<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.ops()
            .iter()
            .map(|(k, e)| match e {
                Some(e) => (text(k), e.kind, e.group).into_pyobject(py),
                None => (text(k),).into_pyobject(py),
            })
            .collect()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RouteTable>()?;
    m.add_class::<DirtyRoutes>()?;
    m.add_class::<RouteOps>()?;
    Ok(())
}
