//! corridor.v1.WriteRequest written whole from FIB operations, field by field as the
//! generated code would (proto3: zero scalars and empty strings left out).

use crate::wire::{put_bytes, put_len, put_uint};

const ACTION_SET: u64 = 1;
const ACTION_DELETE: u64 = 2;

/// One operation toward a node, in the terms of corridor.v1.Operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    SetAdjacency { id: u32, port: String, vlan: u32, src_mac: Vec<u8>, dst_mac: Vec<u8>, gateway: Vec<u8> },
    SetGroup { id: u32, members: Vec<(u32, u32)> },
    SetRoute { address: Vec<u8>, length: u32, kind: u32, group: u32 },
    DeleteRoute { address: Vec<u8>, length: u32 },
    DeleteGroup { id: u32 },
    DeleteAdjacency { id: u32 },
}

/// Reused buffers for the nested messages of one operation.
#[derive(Default)]
struct Scratch {
    entry: Vec<u8>,
    inner: Vec<u8>,
    op: Vec<u8>,
}

fn put_prefix(out: &mut Vec<u8>, inner: &mut Vec<u8>, address: &[u8], length: u32) {
    inner.clear();
    put_bytes(inner, 1, address);
    put_uint(inner, 2, u64::from(length));
    put_len(out, 1, inner);
}

fn put_op(out: &mut Vec<u8>, s: &mut Scratch, op: &Op) {
    s.entry.clear();
    let (action, field) = match op {
        Op::SetAdjacency { id, port, vlan, src_mac, dst_mac, gateway } => {
            put_uint(&mut s.entry, 1, u64::from(*id));
            put_bytes(&mut s.entry, 2, port.as_bytes());
            put_uint(&mut s.entry, 3, u64::from(*vlan));
            put_bytes(&mut s.entry, 4, src_mac);
            put_bytes(&mut s.entry, 5, dst_mac);
            put_bytes(&mut s.entry, 6, gateway);
            (ACTION_SET, 2)
        }
        Op::DeleteAdjacency { id } => {
            put_uint(&mut s.entry, 1, u64::from(*id));
            (ACTION_DELETE, 2)
        }
        Op::SetGroup { id, members } => {
            put_uint(&mut s.entry, 1, u64::from(*id));
            for &(adjacency, weight) in members {
                s.inner.clear();
                put_uint(&mut s.inner, 1, u64::from(adjacency));
                put_uint(&mut s.inner, 2, u64::from(weight));
                put_len(&mut s.entry, 2, &s.inner);
            }
            (ACTION_SET, 3)
        }
        Op::DeleteGroup { id } => {
            put_uint(&mut s.entry, 1, u64::from(*id));
            (ACTION_DELETE, 3)
        }
        Op::SetRoute { address, length, kind, group } => return put_route(out, s, address, *length, Some((*kind, *group))),
        Op::DeleteRoute { address, length } => return put_route(out, s, address, *length, None),
    };
    put_entry(out, s, action, field);
}

/// A route set (`set`: its kind and group) or deleted.
fn put_route(out: &mut Vec<u8>, s: &mut Scratch, address: &[u8], length: u32, set: Option<(u32, u32)>) {
    s.entry.clear();
    put_prefix(&mut s.entry, &mut s.inner, address, length);
    let action = match set {
        Some((kind, group)) => {
            put_uint(&mut s.entry, 2, u64::from(kind));
            put_uint(&mut s.entry, 3, u64::from(group));
            ACTION_SET
        }
        None => ACTION_DELETE,
    };
    put_entry(out, s, action, 4);
}

/// The operation around `s.entry`, its `field` the kind of entry.
fn put_entry(out: &mut Vec<u8>, s: &mut Scratch, action: u64, field: u32) {
    s.op.clear();
    put_uint(&mut s.op, 1, action);
    put_len(&mut s.op, field, &s.entry);
    put_len(out, 2, &s.op);
}

/// The bytes of a WriteRequest: `election` (high, low), the operations in order, `batch_id`.
pub fn write_request(election: (u64, u64), batch_id: u64, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::new(election, ops.len());
    for op in ops {
        w.op(op);
    }
    w.finish(batch_id)
}

/// A WriteRequest written an operation at a time, for a caller that reads its operations
/// one by one (a route needs no `Op`, so no allocation of its own).
pub struct Writer {
    out: Vec<u8>,
    s: Scratch,
}

impl Writer {
    /// `election` (high, low); room for about `ops` operations.
    pub fn new(election: (u64, u64), ops: usize) -> Writer {
        let mut w = Writer { out: Vec::with_capacity(16 + ops * 24), s: Scratch::default() };
        put_uint(&mut w.s.inner, 1, election.0);
        put_uint(&mut w.s.inner, 2, election.1);
        put_len(&mut w.out, 1, &w.s.inner);
        w
    }

    pub fn op(&mut self, op: &Op) {
        put_op(&mut self.out, &mut self.s, op);
    }

    /// `Op::SetRoute` without the `Op`.
    pub fn set_route(&mut self, address: &[u8], length: u32, kind: u32, group: u32) {
        put_route(&mut self.out, &mut self.s, address, length, Some((kind, group)));
    }

    /// `Op::DeleteRoute` without the `Op`.
    pub fn delete_route(&mut self, address: &[u8], length: u32) {
        put_route(&mut self.out, &mut self.s, address, length, None);
    }

    /// The request's bytes, `batch_id` last.
    pub fn finish(mut self, batch_id: u64) -> Vec<u8> {
        put_uint(&mut self.out, 3, batch_id);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Reader, Value};

    #[test]
    fn a_route_as_protoc_would_write_it() {
        let ops = [Op::SetRoute { address: vec![198, 18, 0, 0], length: 15, kind: 1, group: 3 }];
        let bytes = write_request((0, 5), 9, &ops);
        // election {low: 5}; operations {action: SET, route {prefix {address, length}, kind, group}}; batch_id
        let want = [
            0x0a, 0x02, 0x10, 0x05, //
            0x12, 0x12, 0x08, 0x01, 0x22, 0x0e, //
            0x0a, 0x08, 0x0a, 0x04, 198, 18, 0, 0, 0x10, 15, //
            0x10, 0x01, 0x18, 0x03, //
            0x18, 0x09,
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn every_operation_reads_back() {
        let ops = vec![
            Op::SetAdjacency { id: 1, port: "p0".into(), vlan: 100, src_mac: vec![], dst_mac: vec![], gateway: vec![198, 18, 0, 2] },
            Op::SetGroup { id: 2, members: vec![(1, 1), (3, 65535)] },
            Op::SetRoute { address: vec![0; 16], length: 0, kind: 2, group: 0 },
            Op::DeleteRoute { address: vec![10, 0, 0, 0], length: 8 },
            Op::DeleteGroup { id: 2 },
            Op::DeleteAdjacency { id: 1 },
        ];
        let bytes = write_request((1, 2), 0, &ops);
        let mut r = Reader::new(&bytes);
        let mut actions = Vec::new();
        while let Some((field, value)) = r.next().unwrap() {
            if field == 2 {
                let Value::Len(op) = value else { panic!("{value:?}") };
                let mut o = Reader::new(op);
                let (_, Value::Varint(action)) = o.next().unwrap().unwrap() else { panic!() };
                let (entry, _) = o.next().unwrap().unwrap();
                actions.push((action, entry));
            }
        }
        assert_eq!(actions, [(1, 2), (1, 3), (1, 4), (2, 4), (2, 3), (2, 2)]);
    }
}
