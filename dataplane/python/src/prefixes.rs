//! A batch's prefixes as packed keys (`Prefixes`): what `read_apply_request` gives the
//! controller for an Apply's routes instead of a Python string and a sort key per route.
//!
//! On its way to a node a table's route was read as text four times on the event loop (the
//! plan, the commit, the node's refresh, the store's log), each a call into a cold Python
//! object a million times a table. The route tables (`RouteTable`, `IntentRoutes`) take a
//! `Prefixes` whole and read its keys in place; the store takes its sort keys as one blob a
//! part. It is also a read-only sequence of the prefixes' canonical text, made as asked,
//! for the slow paths that read a batch route by route.

use crate::table::text;
use corridor_intent::table::{self, Key};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PySlice, PyString};
use std::collections::HashMap;

/// The key of a prefix's text; None when `prefix` is no prefix text (or no string).
pub(crate) fn parse(prefix: &Bound<'_, PyAny>) -> Option<Key> {
    table::key_of_text(prefix.cast::<PyString>().ok()?.to_str().ok()?)
}

/// The key of a prefix's text, or a ValueError that names what it is.
pub(crate) fn key(prefix: &Bound<'_, PyAny>) -> PyResult<Key> {
    parse(prefix).ok_or_else(|| {
        let shown = prefix.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string());
        PyValueError::new_err(format!("{shown} is not a prefix"))
    })
}

/// The store's sort key of `key`: family (4 or 16), address bytes, length
/// (controller.store.prefix_sort_key).
fn sort_key(key: &Key, out: &mut Vec<u8>) {
    match *key {
        Key::V4(a, l) => {
            out.push(4);
            out.extend_from_slice(&a.to_be_bytes());
            out.push(l);
        }
        Key::V6(a, l) => {
            out.push(16);
            out.extend_from_slice(&a.to_be_bytes());
            out.push(l);
        }
    }
}

/// The size of `key`'s sort key.
fn sort_key_size(key: &Key) -> usize {
    match key {
        Key::V4(..) => 6,
        Key::V6(..) => 18,
    }
}

/// Prefixes as packed keys, in the order given; a read-only sequence of their text.
#[pyclass(module = "corridor._dataplane", frozen, sequence)]
pub struct Prefixes {
    keys: Vec<Key>,
}

impl Prefixes {
    pub(crate) fn from_keys(keys: Vec<Key>) -> Self {
        Prefixes { keys }
    }

    pub(crate) fn keys(&self) -> &[Key] {
        &self.keys
    }
}

#[pymethods]
impl Prefixes {
    /// From prefix texts (canonical or not: each is taken as its prefix); ValueError at
    /// the first that is no prefix.
    #[new]
    fn new(texts: &Bound<'_, PyAny>) -> PyResult<Self> {
        let keys = texts.try_iter()?.map(|t| key(&t?)).collect::<PyResult<Vec<_>>>()?;
        Ok(Prefixes { keys })
    }

    fn __len__(&self) -> usize {
        self.keys.len()
    }

    /// The text of prefix `index`, or a `Prefixes` of a slice.
    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let s = slice.indices(self.keys.len() as isize)?;
            let keys = (0..s.slicelength).map(|n| self.keys[(s.start + n as isize * s.step) as usize]).collect();
            return Ok(Bound::new(py, Prefixes { keys })?.into_any());
        }
        let index: isize = index.extract()?;
        let i = if index < 0 { index + self.keys.len() as isize } else { index };
        let key = usize::try_from(i).ok().and_then(|i| self.keys.get(i));
        let key = key.ok_or_else(|| PyIndexError::new_err("Prefixes index out of range"))?;
        Ok(PyString::new(py, &text(key)).into_any())
    }

    fn __iter__(slf: Bound<'_, Self>) -> PrefixesIter {
        PrefixesIter { prefixes: slf.unbind(), at: 0 }
    }

    fn __repr__(&self) -> String {
        format!("Prefixes({} prefixes)", self.keys.len())
    }

    /// The IPv6 prefixes among them.
    #[getter]
    fn v6(&self) -> usize {
        self.keys.iter().filter(|k| matches!(k, Key::V6(..))).count()
    }

    /// Their texts, as a list.
    fn texts(&self) -> Vec<String> {
        self.keys.iter().map(text).collect()
    }

    /// The store's sort key of each.
    fn sort_keys<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        let mut buf = Vec::with_capacity(18);
        self.keys
            .iter()
            .map(|k| {
                buf.clear();
                sort_key(k, &mut buf);
                PyBytes::new(py, &buf)
            })
            .collect()
    }

    /// The sort keys in parts: prefix i belongs to intent `index[i]`, and a part is an
    /// intent's keys of one size, laid end to end in their order here. Returns (intent,
    /// size, keys) per part, in the order each part's first prefix comes.
    fn parts<'py>(&self, py: Python<'py>, index: Vec<usize>) -> PyResult<Vec<(usize, usize, Bound<'py, PyBytes>)>> {
        if index.len() != self.keys.len() {
            return Err(PyValueError::new_err("index: one intent per prefix"));
        }
        let mut position: HashMap<(usize, usize), usize> = HashMap::new();
        let mut parts: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        for (k, &i) in self.keys.iter().zip(&index) {
            let size = sort_key_size(k);
            let p = *position.entry((i, size)).or_insert_with(|| {
                parts.push((i, size, Vec::new()));
                parts.len() - 1
            });
            sort_key(k, &mut parts[p].2);
        }
        Ok(parts.into_iter().map(|(i, size, blob)| (i, size, PyBytes::new(py, &blob))).collect())
    }
}

/// An iterator over a `Prefixes`' texts.
#[pyclass(module = "corridor._dataplane")]
pub struct PrefixesIter {
    prefixes: Py<Prefixes>,
    at: usize,
}

#[pymethods]
impl PrefixesIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self) -> Option<String> {
        let key = self.prefixes.get().keys.get(self.at)?;
        self.at += 1;
        Some(text(key))
    }
}

/// The keys of a `Prefixes` as they are, or of a sequence of prefix texts as read.
pub(crate) enum Keys<'py> {
    Packed(Bound<'py, Prefixes>),
    Read(Vec<Key>),
}

impl Keys<'_> {
    pub(crate) fn as_slice(&self) -> &[Key] {
        match self {
            Keys::Packed(p) => p.get().keys(),
            Keys::Read(keys) => keys,
        }
    }
}

/// The keys of `prefixes`, a `Prefixes` or an iterable of prefix texts (every one read
/// before the caller changes anything: a bad one is a ValueError that changes nothing).
pub(crate) fn keys_of<'py>(prefixes: &Bound<'py, PyAny>) -> PyResult<Keys<'py>> {
    if let Ok(p) = prefixes.cast::<Prefixes>() {
        return Ok(Keys::Packed(p.clone()));
    }
    Ok(Keys::Read(prefixes.try_iter()?.map(|p| key(&p?)).collect::<PyResult<Vec<_>>>()?))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Prefixes>()?;
    m.add_class::<PrefixesIter>()
}
