//! corridor.v1.WriteRequest read whole on the agent's side, when every operation is a route:
//! the batch a controller sends with a table in it. One pass over the bytes, no protobuf
//! object per route; the caller turns the routes into one engine batch.
//!
//! Anything else (adjacencies, groups, members, a fault to name, election id 0, more than
//! `MAX_OPERATIONS` operations) is `None`: the caller reads the request with the generated
//! code, whose path is the authority on what is accepted and on every message.

use crate::apply::is_prefix;
use crate::wire::{Malformed, Reader, Value};

/// The agent's own limit on operations per WriteRequest.
pub const MAX_OPERATIONS: usize = 100_000;
const ACTION_SET: u64 = 1;
const ACTION_DELETE: u64 = 2;
const FORWARD: u32 = 1;
const LOCAL: u32 = 4; // the largest RouteKind

/// What a route operation does: set the route (its kind, 1-4, and the group of a FORWARD
/// one) or delete the route for its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Set { kind: u32, group: u32 },
    Delete,
}

/// One route operation, its prefix checked (4 or 16 bytes, length within, no host bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteOp {
    /// The address, left-aligned: an IPv4 address in the first 4 bytes.
    pub address: [u8; 16],
    pub v6: bool,
    pub length: u8,
    pub change: Change,
}

impl RouteOp {
    /// The address bytes as sent (4 or 16).
    pub fn address(&self) -> &[u8] {
        &self.address[..if self.v6 { 16 } else { 4 }]
    }
}

#[derive(Debug, Default)]
pub struct RouteWrite {
    /// (high, low), above 0.
    pub election: (u64, u64),
    pub batch_id: u64,
    pub routes: Vec<RouteOp>,
}

#[derive(Default)]
struct RouteIn<'a> {
    address: &'a [u8],
    length: u64,
    kind: u64,
    group: u64,
}

fn read_prefix<'a>(bytes: &'a [u8], route: &mut RouteIn<'a>) -> Result<(), Malformed> {
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, Value::Len(b)) => route.address = b,
            (2, Value::Varint(v)) => route.length = u64::from(v as u32),
            _ => {}
        }
    }
    Ok(())
}

/// A corridor.v1.Route; repeated prefixes merge as protobuf merges them.
fn read_route<'a>(bytes: &'a [u8], route: &mut RouteIn<'a>) -> Result<(), Malformed> {
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, Value::Len(b)) => read_prefix(b, route)?,
            (2, Value::Varint(v)) => route.kind = u64::from(v as u32),
            (3, Value::Varint(v)) => route.group = u64::from(v as u32),
            _ => {}
        }
    }
    Ok(())
}

/// One operation, or None when it is not a plain route operation.
fn read_operation(bytes: &[u8]) -> Result<Option<RouteOp>, Malformed> {
    let mut action = 0;
    let mut route = RouteIn::default();
    let mut entries = 0;
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, Value::Varint(v)) => action = u64::from(v as u32),
            (4, Value::Len(b)) => {
                entries += 1;
                read_route(b, &mut route)?;
            }
            (2 | 3 | 5, _) => entries += 2, // another entry of the oneof
            _ => {}
        }
    }
    let length = route.length as u32;
    if entries != 1 || !is_prefix(route.address, length) {
        return Ok(None);
    }
    let change = match action {
        ACTION_DELETE => Change::Delete,
        ACTION_SET => {
            let (kind, group) = (route.kind as u32, route.group as u32);
            let fits = if kind == FORWARD { group != 0 } else { (FORWARD + 1..=LOCAL).contains(&kind) && group == 0 };
            if !fits {
                return Ok(None);
            }
            Change::Set { kind, group }
        }
        _ => return Ok(None),
    };
    let mut address = [0u8; 16];
    address[..route.address.len()].copy_from_slice(route.address);
    Ok(Some(RouteOp { address, v6: route.address.len() == 16, length: length as u8, change }))
}

/// Reads a WriteRequest whose operations are all route operations the agent accepts as
/// they are; None for any other request (including one that is not protobuf).
pub fn read_route_write(bytes: &[u8]) -> Option<RouteWrite> {
    read(bytes).ok().flatten()
}

fn read(bytes: &[u8]) -> Result<Option<RouteWrite>, Malformed> {
    let mut write = RouteWrite::default();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, Value::Len(b)) => {
                let mut e = Reader::new(b);
                while let Some((f, v)) = e.next()? {
                    match (f, v) {
                        (1, Value::Varint(x)) => write.election.0 = x,
                        (2, Value::Varint(x)) => write.election.1 = x,
                        _ => {}
                    }
                }
            }
            (2, Value::Len(b)) => {
                if write.routes.len() == MAX_OPERATIONS {
                    return Ok(None);
                }
                match read_operation(b)? {
                    Some(op) => write.routes.push(op),
                    None => return Ok(None),
                }
            }
            (3, Value::Varint(v)) => write.batch_id = v,
            _ => {}
        }
    }
    if write.election == (0, 0) || write.routes.is_empty() {
        return Ok(None);
    }
    Ok(Some(write))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_bytes, put_len, put_uint};
    use crate::write::{write_request, Op};

    fn set(address: &[u8], length: u32, kind: u32, group: u32) -> Op {
        Op::SetRoute { address: address.to_vec(), length, kind, group }
    }

    #[test]
    fn routes_as_the_writer_wrote_them() {
        let v6 = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let ops = [
            set(&[198, 18, 0, 0], 15, 1, 7),
            set(&v6, 32, 2, 0),
            Op::DeleteRoute { address: vec![10, 0, 0, 0], length: 8 },
            set(&[0, 0, 0, 0], 0, 4, 0),
        ];
        let w = read_route_write(&write_request((1, 2), 9, &ops)).unwrap();
        assert_eq!((w.election, w.batch_id), ((1, 2), 9));
        let got: Vec<_> = w.routes.iter().map(|r| (r.address().to_vec(), r.length, r.change)).collect();
        assert_eq!(
            got,
            [
                (vec![198, 18, 0, 0], 15, Change::Set { kind: 1, group: 7 }),
                (v6.to_vec(), 32, Change::Set { kind: 2, group: 0 }),
                (vec![10, 0, 0, 0], 8, Change::Delete),
                (vec![0, 0, 0, 0], 0, Change::Set { kind: 4, group: 0 }),
            ]
        );
    }

    #[test]
    fn anything_but_plain_routes_is_left_to_the_slow_path() {
        let good = set(&[198, 18, 0, 0], 15, 1, 7);
        for (what, ops) in [
            ("a group", vec![good.clone(), Op::SetGroup { id: 7, members: vec![(1, 1)] }]),
            ("an adjacency", vec![Op::DeleteAdjacency { id: 1 }]),
            ("host bits", vec![set(&[198, 18, 0, 1], 24, 1, 7)]),
            ("too long", vec![set(&[198, 18, 0, 0], 33, 1, 7)]),
            ("three bytes", vec![set(&[198, 18, 0], 24, 1, 7)]),
            ("kind unset", vec![set(&[198, 18, 0, 0], 24, 0, 0)]),
            ("no such kind", vec![set(&[198, 18, 0, 0], 24, 5, 0)]),
            ("FORWARD without a group", vec![set(&[198, 18, 0, 0], 24, 1, 0)]),
            ("BLACKHOLE with a group", vec![set(&[198, 18, 0, 0], 24, 2, 3)]),
            ("no operations", vec![]),
        ] {
            assert!(read_route_write(&write_request((0, 1), 0, &ops)).is_none(), "{what}");
        }
        assert!(read_route_write(&write_request((0, 0), 0, std::slice::from_ref(&good))).is_none(), "election 0");
        let too_many = vec![good.clone(); MAX_OPERATIONS + 1];
        assert!(read_route_write(&write_request((0, 1), 0, &too_many)).is_none());
        assert_eq!(read_route_write(&write_request((0, 1), 0, &too_many[..MAX_OPERATIONS])).unwrap().routes.len(), MAX_OPERATIONS);
    }

    #[test]
    fn odd_operations_are_left_to_the_slow_path() {
        let mut route = Vec::new();
        let mut prefix = Vec::new();
        put_bytes(&mut prefix, 1, &[10, 0, 0, 0]);
        put_uint(&mut prefix, 2, 8);
        put_len(&mut route, 1, &prefix);
        put_uint(&mut route, 2, 2);
        let op = |action: u64, extra: &[(u32, &[u8])]| {
            let mut op = Vec::new();
            put_uint(&mut op, 1, action);
            put_len(&mut op, 4, &route);
            for (field, bytes) in extra {
                put_len(&mut op, *field, bytes);
            }
            let mut out = Vec::new();
            put_len(&mut out, 1, &[0x10, 0x01]); // election {low: 1}
            put_len(&mut out, 2, &op);
            out
        };
        assert!(read_route_write(&op(1, &[])).is_some());
        assert!(read_route_write(&op(0, &[])).is_none(), "no action");
        assert!(read_route_write(&op(3, &[])).is_none(), "no such action");
        assert!(read_route_write(&op(1, &[(3, b"")])).is_none(), "a group entry too (the oneof's last wins)");
        assert!(read_route_write(&op(1, &[(4, &route)])).is_none(), "the route twice");
        let mut truncated = op(1, &[]);
        truncated.pop();
        assert!(read_route_write(&truncated).is_none(), "not protobuf");
    }
}
