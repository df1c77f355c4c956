//! The operator's routes for one node as the controller keeps them (domain.IntentState's
//! `routes[node]`): prefix text -> Intent, a dict's interface over two B-trees of prefix
//! keys, the Intent objects held as they are.
//!
//! As a Python dict, a table coming in cost a lookup per route in the plan and an insert
//! in the commit, each a cache miss at random in a dict of a million (265-278 and 261-274
//! ns a route on this VM). A full table's batches are its sorted slices: in a B-tree of
//! prefix keys a batch's lookups and inserts fall in a few leaves. The plan and the commit
//! take a batch's prefixes whole (`any_in`, `get_many`, `set_many`); the slow paths read
//! it as they read the dict. Written here rather than taken from a crate: it is std's
//! BTreeMap behind the dict protocol the controller's Python uses.

use crate::prefixes::{key, keys_of, parse, Prefixes};
use crate::table::text;
use corridor_intent::table::{v4_key, Key, Span};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::BTreeMap;

#[derive(Default)]
struct Maps {
    v4: BTreeMap<u64, Py<PyAny>>,
    v6: BTreeMap<(u128, u8), Py<PyAny>>,
}

impl Maps {
    fn get(&self, key: &Key) -> Option<&Py<PyAny>> {
        match *key {
            Key::V4(a, l) => self.v4.get(&v4_key(a, l)),
            Key::V6(a, l) => self.v6.get(&(a, l)),
        }
    }

    fn insert(&mut self, key: Key, value: Py<PyAny>) -> Option<Py<PyAny>> {
        match key {
            Key::V4(a, l) => self.v4.insert(v4_key(a, l), value),
            Key::V6(a, l) => self.v6.insert((a, l), value),
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Py<PyAny>> {
        match *key {
            Key::V4(a, l) => self.v4.remove(&v4_key(a, l)),
            Key::V6(a, l) => self.v6.remove(&(a, l)),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether a route lies within `span` (table::Table::holds_within).
    fn holds_within(&self, span: &Span) -> bool {
        span.meets(&self.v4, &self.v6)
    }

    /// In the store's order: IPv4 first, each family by address, then length.
    fn iter(&self) -> impl Iterator<Item = (Key, &Py<PyAny>)> + '_ {
        let v4 = self.v4.iter().map(|(&k, v)| (Key::V4((k >> 8) as u32, k as u8), v));
        v4.chain(self.v6.iter().map(|(&(a, l), v)| (Key::V6(a, l), v)))
    }
}

/// A node's routes: prefix text -> Intent, with the dict methods the controller uses.
#[pyclass(module = "corridor._dataplane")]
#[derive(Default)]
pub struct IntentRoutes {
    maps: Maps,
}

#[pymethods]
impl IntentRoutes {
    #[new]
    fn new() -> Self {
        IntentRoutes::default()
    }

    fn __len__(&self) -> usize {
        self.maps.len()
    }

    /// IPv6 routes.
    #[getter]
    fn v6(&self) -> usize {
        self.maps.v6.len()
    }

    fn __contains__(&self, prefix: &Bound<'_, PyAny>) -> bool {
        parse(prefix).is_some_and(|k| self.maps.get(&k).is_some())
    }

    #[pyo3(signature = (prefix, default=None))]
    fn get(&self, py: Python<'_>, prefix: &Bound<'_, PyAny>, default: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        match parse(prefix).and_then(|k| self.maps.get(&k)) {
            Some(v) => Some(v.clone_ref(py)),
            None => default,
        }
    }

    fn __getitem__(&self, py: Python<'_>, prefix: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        parse(prefix).and_then(|k| self.maps.get(&k)).map(|v| v.clone_ref(py)).ok_or_else(|| PyKeyError::new_err(prefix.clone().unbind()))
    }

    fn __setitem__(&mut self, prefix: &Bound<'_, PyAny>, intent: Py<PyAny>) -> PyResult<()> {
        self.maps.insert(key(prefix)?, intent);
        Ok(())
    }

    fn __delitem__(&mut self, prefix: &Bound<'_, PyAny>) -> PyResult<()> {
        parse(prefix).and_then(|k| self.maps.remove(&k)).map(drop).ok_or_else(|| PyKeyError::new_err(prefix.clone().unbind()))
    }

    /// Removes `prefix` and returns its intent; `default` when it has none (KeyError
    /// without one).
    #[pyo3(signature = (prefix, *default))]
    fn pop(&mut self, prefix: &Bound<'_, PyAny>, default: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        match parse(prefix).and_then(|k| self.maps.remove(&k)) {
            Some(v) => Ok(v),
            None if !default.is_empty() => Ok(default.get_item(0)?.unbind()),
            None => Err(PyKeyError::new_err(prefix.clone().unbind())),
        }
    }

    fn keys(&self) -> Vec<String> {
        self.maps.iter().map(|(k, _)| text(&k)).collect()
    }

    fn values(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.maps.iter().map(|(_, v)| v.clone_ref(py)).collect()
    }

    /// (prefix, intent) pairs as an iterator over a copy taken now: the prefix texts are
    /// made as it is read (a watch snapshot reads a million a chunk at a time, off the
    /// event loop).
    fn items(&self, py: Python<'_>) -> IntentItems {
        let items: Vec<(Key, Py<PyAny>)> = self.maps.iter().map(|(k, v)| (k, v.clone_ref(py))).collect();
        IntentItems { items: items.into_iter() }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let keys = PyList::new(slf.py(), slf.keys())?;
        keys.into_any().try_iter().map(Bound::into_any)
    }

    fn copy(&self, py: Python<'_>) -> IntentRoutes {
        let v4 = self.maps.v4.iter().map(|(&k, v)| (k, v.clone_ref(py))).collect();
        let v6 = self.maps.v6.iter().map(|(&k, v)| (k, v.clone_ref(py))).collect();
        IntentRoutes { maps: Maps { v4, v6 } }
    }

    /// Equal to another IntentRoutes or a dict with the same prefixes and equal intents.
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = other.py();
        if let Ok(o) = other.cast::<IntentRoutes>() {
            let o = o.borrow();
            if o.maps.len() != self.maps.len() {
                return Ok(false);
            }
            for ((ka, va), (kb, vb)) in self.maps.iter().zip(o.maps.iter()) {
                if ka != kb || !va.bind(py).eq(vb.bind(py))? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        let Ok(d) = other.cast::<PyDict>() else { return Ok(false) };
        if d.len() != self.maps.len() {
            return Ok(false);
        }
        for (k, v) in d.iter() {
            match parse(&k).and_then(|k| self.maps.get(&k)) {
                Some(mine) if mine.bind(py).eq(&v)? => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    fn __repr__(&self) -> String {
        format!("IntentRoutes({} routes)", self.maps.len())
    }

    /// Whether any of `prefixes` (a `Prefixes`, or prefix texts) has a route here.
    fn any_in(&self, prefixes: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(packed) = prefixes.cast::<Prefixes>() {
            let keys = packed.get().keys();
            // A table coming in: nothing held between its least and greatest key.
            return Ok(self.maps.holds_within(&Span::of(keys)) && keys.iter().any(|k| self.maps.get(k).is_some()));
        }
        for p in prefixes.try_iter()? {
            if self.maps.get(&key(&p?)?).is_some() {
                return Ok(true); // texts after the first found are not read
            }
        }
        Ok(false)
    }

    /// The intent of each of `prefixes`, None where it has none.
    fn get_many<'py>(&self, py: Python<'py>, prefixes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let keys = keys_of(prefixes)?;
        let none = py.None();
        let out = keys.as_slice().iter().map(|k| self.maps.get(k).map_or_else(|| none.clone_ref(py), |v| v.clone_ref(py)));
        PyList::new(py, out)
    }

    /// Sets `prefixes[i]` to `intents[index[i]]`. Every prefix is read before anything is
    /// set: a bad one changes nothing.
    fn set_many(&mut self, py: Python<'_>, prefixes: &Bound<'_, PyAny>, index: Vec<usize>, intents: Vec<Py<PyAny>>) -> PyResult<()> {
        let keys = keys_of(prefixes)?;
        let keys = keys.as_slice();
        if index.len() != keys.len() || index.iter().any(|&i| i >= intents.len()) {
            return Err(PyValueError::new_err("index: one entry of intents per prefix"));
        }
        for (k, &i) in keys.iter().zip(&index) {
            self.maps.insert(*k, intents[i].clone_ref(py));
        }
        Ok(())
    }
}

/// The (prefix, intent) pairs `IntentRoutes.items` took.
#[pyclass(module = "corridor._dataplane")]
pub struct IntentItems {
    items: std::vec::IntoIter<(Key, Py<PyAny>)>,
}

#[pymethods]
impl IntentItems {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self) -> Option<(String, Py<PyAny>)> {
        self.items.next().map(|(k, v)| (text(&k), v))
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<IntentRoutes>()?;
    m.add_class::<IntentItems>()
}
