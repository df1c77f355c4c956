//! The protobuf wire format (<https://protobuf.dev/programming-guides/encoding/>): varints,
//! tags, length-delimited fields. A reader over untrusted bytes that never panics, and the
//! few writers the encoders need.
//!
//! Written by hand rather than with prost: prost decodes a message into owned structs, a
//! `Vec` and `String`s per route, which for a million routes is the allocation this crate
//! exists to avoid; here the reader borrows from the request's bytes and the writers append
//! to one buffer. The format is small and stable (four wire types), and the codec is tested
//! against messages that grpcio's protobuf runtime encodes and decodes (tests/test_intent_codec.py).

/// The wire types of a field's tag (the encoding guide, "Message Structure").
pub const VARINT: u8 = 0;
pub const I64: u8 = 1;
pub const LEN: u8 = 2;
pub const I32: u8 = 5;

/// The bytes are not a protobuf message: a varint or a length runs past the end, or a
/// wire type is not one proto3 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// One field as read: its number and its value (varint, or the bytes of a LEN field;
/// fixed-width fields are skipped by `next`, nothing we read uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// Fields of one message, in wire order.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// What is left to read: `message.len() - rest().len()` is where the next field starts.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// One byte in line: every tag here and most lengths and values. Out of line, the
    /// reader's slice went through the stack on every call, and the store-to-load stall
    /// after it was a third of `apply::read_apply`'s time (perf annotate, 6 December 2026).
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, Malformed> {
        if let Some((&byte, rest)) = self.buf.split_first() {
            if byte & 0x80 == 0 {
                self.buf = rest;
                return Ok(u64::from(byte));
            }
        }
        self.varint_long()
    }

    #[cold]
    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.buf.split_first().ok_or(Malformed("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(Malformed("length past the end of the message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, or None at the end of the message.
    #[inline(always)] // out of line, its result came back through the stack: a stall a field
    #[allow(clippy::should_implement_trait)] // fallible: an Iterator of Results reads worse
    pub fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, Malformed> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        // A tag is a 32-bit varint, so field numbers end at 2^29 - 1, as protobuf's own
        // decoder has it: a larger one was read here as an unknown field, where protobuf
        // refuses the message (found by the property tests under `make fuzz`).
        let tag = u32::try_from(self.varint()?).map_err(|_| Malformed("tag past 32 bits"))?;
        let number = tag >> 3;
        if number == 0 {
            return Err(Malformed("field number 0"));
        }
        let value = match (tag & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| Malformed("length too large"))?;
                Value::Len(self.take(n)?)
            }
            I64 => {
                self.take(8)?;
                Value::Fixed
            }
            I32 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err(Malformed("unknown wire type (groups are not proto3)")),
        };
        Ok(Some((number, value)))
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

/// A varint field; proto3 leaves a zero out.
pub fn put_uint(out: &mut Vec<u8>, number: u32, value: u64) {
    if value != 0 {
        put_tag(out, number, VARINT);
        put_varint(out, value);
    }
}

/// A bytes or string field; proto3 leaves an empty one out.
pub fn put_bytes(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    if !value.is_empty() {
        put_len(out, number, value);
    }
}

/// A length-delimited field written even when empty (an embedded message that is present).
pub fn put_len(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_tag(out, number, LEN);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let mut out = Vec::new();
        put_uint(&mut out, 1, 300);
        put_bytes(&mut out, 2, b"abc");
        put_uint(&mut out, 3, 0); // left out
        put_len(&mut out, 4, b"");
        put_uint(&mut out, 536_870_911, u64::MAX);
        let mut r = Reader::new(&out);
        assert_eq!(r.next(), Ok(Some((1, Value::Varint(300)))));
        assert_eq!(r.next(), Ok(Some((2, Value::Len(b"abc")))));
        assert_eq!(r.next(), Ok(Some((4, Value::Len(b"")))));
        assert_eq!(r.next(), Ok(Some((536_870_911, Value::Varint(u64::MAX)))));
        assert_eq!(r.next(), Ok(None));
    }

    #[test]
    fn varint_bytes_as_the_guide_gives_them() {
        let mut out = Vec::new();
        put_varint(&mut out, 150);
        assert_eq!(out, [0x96, 0x01]);
    }

    #[test]
    fn truncated_and_overlong_input_is_malformed_not_a_panic() {
        for bad in [
            &[0x08][..],         // tag without its varint
            &[0x08, 0x80],       // varint cut short
            &[0x12, 0x05, b'a'], // length past the end
            &[0x0b],             // start group: not proto3
            &[0x00, 0x00],       // field 0
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0x0d, 0x01, 0x02],                         // fixed32 cut short
            &[0x80, 0x80, 0x80, 0x80, 0x10, 0x00],       // tag 2^32: field 2^29, past protobuf's last
            &[0xf8, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00], // tag past 32 bits
        ] {
            let mut r = Reader::new(bad);
            assert!(r.next().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fixed_width_fields_are_skipped() {
        let bytes = [0x0d, 1, 2, 3, 4, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x18, 7];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.next(), Ok(Some((1, Value::Fixed))));
        assert_eq!(r.next(), Ok(Some((2, Value::Fixed))));
        assert_eq!(r.next(), Ok(Some((3, Value::Varint(7)))));
        assert_eq!(r.next(), Ok(None));
    }
}
