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

#[derive(Debug, Default, PartialEq, Eq)]
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
    Ok(route_op(action, route.address, length, route.kind as u32, route.group as u32))
}

/// The operation that `action` on a route of prefix `address`/`length` (checked by the
/// caller) with `kind` and `group` is, or None when the agent does not take it as it is:
/// an unknown action, or a set whose kind is unknown or has a group exactly when not
/// FORWARD. Both readers decide by this.
#[inline]
fn route_op(action: u64, address: &[u8], length: u32, kind: u32, group: u32) -> Option<RouteOp> {
    let change = match action {
        ACTION_DELETE => Change::Delete,
        ACTION_SET => {
            let fits = if kind == FORWARD { group != 0 } else { (FORWARD + 1..=LOCAL).contains(&kind) && group == 0 };
            fits.then_some(Change::Set { kind, group })?
        }
        _ => return None,
    };
    let mut op = RouteOp { address: [0u8; 16], v6: address.len() == 16, length: length as u8, change };
    op.address[..address.len()].copy_from_slice(address);
    Some(op)
}

/// `read_operation` for an operation laid out as protobuf's encoders and `write` lay one
/// out: fields in number order, each once, one-octet tags and lengths, proto3's zeros left
/// out (a group's varint up to 32 bits). The same RouteOp as `read_operation` gives, or
/// None, for `read_operation` to decide. A table's operations all come this way: read
/// field by field, a route took about 80 ns, a fifth of an agent's intake of the full
/// tables (perf, docs/benchmarks.md).
#[inline]
fn read_operation_laid_out(b: &[u8]) -> Option<RouteOp> {
    // Operation: action (1, varint), route (4, length-delimited), and nothing else.
    let [0x08, action, 0x22, route_len, route @ ..] = b else { return None };
    if *route_len >= 0x80 || *route_len as usize != route.len() {
        return None;
    }
    // Route: prefix (1, length-delimited), then kind (2) and group (3), varints.
    let [0x0a, prefix_len, rest @ ..] = route else { return None };
    if *prefix_len >= 0x80 {
        return None;
    }
    let (prefix, rest) = rest.split_at_checked(*prefix_len as usize)?;
    // Prefix: address (1, length-delimited), then its length (2, varint).
    let [0x0a, address_len, rest_of_prefix @ ..] = prefix else { return None };
    if *address_len >= 0x80 {
        return None;
    }
    let (address, after) = rest_of_prefix.split_at_checked(*address_len as usize)?;
    let length = match after {
        [] => 0,
        [0x10, l] if *l < 0x80 => u32::from(*l),
        _ => return None,
    };
    let (kind, rest) = match rest {
        [0x10, k, rest @ ..] if *k < 0x80 => (u32::from(*k), rest),
        _ => (0, rest),
    };
    let group = match rest {
        [] => 0,
        [0x18, varint @ ..] if (1..=5).contains(&varint.len()) => {
            let (last, more) = varint.split_last()?;
            if *last >= 0x80 || more.iter().any(|b| b & 0x80 == 0) {
                return None;
            }
            let value = varint.iter().rev().fold(0u64, |v, b| v << 7 | u64::from(b & 0x7f));
            u32::try_from(value).ok()?
        }
        _ => return None,
    };
    if !is_prefix(address, length) {
        return None;
    }
    route_op(u64::from(*action), address, length, kind, group)
}

/// Reads a WriteRequest whose operations are all route operations the agent accepts as
/// they are; None for any other request (including one that is not protobuf).
pub fn read_route_write(bytes: &[u8]) -> Option<RouteWrite> {
    read(bytes, true).ok().flatten()
}

/// `read_route_write` reading every operation field by field: the same answer, for the
/// tests and the fuzz target to hold the laid-out reading to.
pub fn read_route_write_field_by_field(bytes: &[u8]) -> Option<RouteWrite> {
    read(bytes, false).ok().flatten()
}

fn read(bytes: &[u8], laid_out: bool) -> Result<Option<RouteWrite>, Malformed> {
    // A route operation takes at least 14 octets: room for them all at once (bounded by
    // the agent's limit), not a reallocation of every route read so far as they come.
    let mut write = RouteWrite { routes: Vec::with_capacity((bytes.len() / 14).min(MAX_OPERATIONS)), ..RouteWrite::default() };
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
                let op = match laid_out.then(|| read_operation_laid_out(b)).flatten() {
                    Some(op) => Some(op),
                    None => read_operation(b)?,
                };
                match op {
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

    /// Every octet of a request, set to each of a spread of values (and the request cut
    /// at every length): reading operations as laid out answers as reading them field by
    /// field, for requests both take, one refuses, or neither reads.
    #[test]
    fn laid_out_operations_read_as_field_by_field() {
        let v6 = [0x20, 1, 0x0d, 0xb8, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let ops = [
            set(&[198, 18, 0, 0], 15, 1, 7),
            set(&[198, 18, 128, 0], 17, 1, 300_000),
            set(&v6, 44, 2, 0),
            Op::DeleteRoute { address: vec![198, 19, 0, 0], length: 16 },
            Op::DeleteRoute { address: vec![0; 16], length: 0 },
            set(&[0, 0, 0, 0], 0, 4, 0),
            set(&[198, 18, 0, 0], 15, 1, u32::MAX),
        ];
        let good = write_request((1, 2), 9, &ops);
        // Each operation as written is one the laid-out reading takes.
        let mut r = Reader::new(&good);
        let mut laid_out = 0;
        while let Some((field, value)) = r.next().unwrap() {
            if let (2, Value::Len(op)) = (field, value) {
                assert!(read_operation_laid_out(op).is_some(), "{op:?}");
                laid_out += 1;
            }
        }
        assert_eq!(laid_out, ops.len());
        let w = read_route_write(&good).unwrap();
        assert_eq!(w.routes.len(), ops.len());
        assert_eq!(Some(&w), read_route_write_field_by_field(&good).as_ref());
        let values =
            [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07, 0x08, 0x0a, 0x10, 0x12, 0x18, 0x1f, 0x20, 0x22, 0x2c, 0x7f, 0x80, 0x81, 0xff];
        let (mut taken, mut refused) = (0, 0);
        for at in 0..good.len() {
            for v in values {
                let mut bytes = good.clone();
                bytes[at] = v;
                let read = read_route_write(&bytes);
                assert_eq!(read, read_route_write_field_by_field(&bytes), "octet {at} set to {v:#x}");
                if read.is_some() {
                    taken += 1
                } else {
                    refused += 1
                }
            }
            assert_eq!(read_route_write(&good[..at]), read_route_write_field_by_field(&good[..at]), "cut at {at}");
        }
        assert!(taken > 100 && refused > 100, "both outcomes reached: {taken} taken, {refused} refused");
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
