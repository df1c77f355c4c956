//! Addresses and prefixes in the controller's canonical text: what glibc's inet_ntop writes
//! (RFC 5952 for IPv6, plus the embedded IPv4 forms `::a.b.c.d` and `::ffff:a.b.c.d`), so
//! that text made here equals text made by Python's `socket.inet_ntop`.

/// Appends the text of a 4- or 16-byte address; other lengths append nothing (callers
/// check the length first).
pub fn push_address(out: &mut String, address: &[u8]) {
    let mut buf = Vec::with_capacity(48);
    write_address(&mut buf, address);
    out.push_str(ascii(&buf));
}

/// Bytes that are ASCII as text (what the writers here write is).
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The writers append ASCII bytes to a byte vector, which a caller with many prefixes
/// makes text once at the end: `String::push` per character and a UTF-8 check per prefix
/// were most of a prefix's cost (a full table is a million of them).
pub fn write_address(out: &mut Vec<u8>, address: &[u8]) {
    match address.len() {
        4 => write_v4(out, address),
        16 => write_v6(out, address),
        _ => {}
    }
}

/// Every octet's decimal text, left-aligned, with its length: an IPv4 address is four of
/// them. Written digit by digit (a division and a push each) the text was a seventh of
/// reading an Apply's route (perf on `read_apply_request`).
const OCTET_TEXT: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut n = 0;
    while n < 256 {
        let (h, t, o) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = if n >= 100 {
            ([b'0' + h, b'0' + t, b'0' + o], 3)
        } else if n >= 10 {
            ([b'0' + t, b'0' + o, 0], 2)
        } else {
            ([b'0' + o, 0, 0], 1)
        };
        n += 1;
    }
    table
};

/// Writes `n`'s decimal text at `at` of `buf` (three octets copied, the length kept);
/// returns where the text ends.
#[inline(always)]
fn put_octet(buf: &mut [u8], at: usize, n: u8) -> usize {
    let (digits, len) = OCTET_TEXT[usize::from(n)];
    if let Some(to) = buf.get_mut(at..at + 3) {
        to.copy_from_slice(&digits);
    }
    at + usize::from(len)
}

/// The dotted quad of `a` (4 bytes) and, when given, "/length" (at most 255), written in
/// place at the end of `out`: 20 octets made room for (15 for the quad, 4 for "/255" and
/// the last 3-octet copy), then cut back to the text. Through a buffer on the stack, the
/// copy of its first `at` octets was a call to memmove, and the copy of all 20 a
/// store-forwarding stall reading back the byte stores (a quarter of the reader's time).
#[inline]
fn write_v4_with(out: &mut Vec<u8>, a: &[u8], length: Option<u8>) {
    let start = out.len();
    out.resize(start + 20, 0);
    let buf = &mut out[start..];
    let mut at = put_octet(buf, 0, a[0]);
    for &byte in &a[1..4] {
        buf[at] = b'.';
        at = put_octet(buf, at + 1, byte);
    }
    if let Some(length) = length {
        buf[at] = b'/';
        at = put_octet(buf, at + 1, length);
    }
    out.truncate(start + at);
}

fn write_v4(out: &mut Vec<u8>, a: &[u8]) {
    write_v4_with(out, a, None);
}

/// `n` in decimal. By hand: `write!` through `fmt` was a third of the text's cost.
fn write_decimal(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(d);
    }
}

/// `w` in lower-case hexadecimal without leading zeros, as `{:x}` does.
fn write_hex(out: &mut Vec<u8>, w: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12u16, 8, 4, 0] {
        let nibble = usize::from((w >> shift) & 0xf);
        if started || nibble != 0 || shift == 0 {
            started = true;
            out.push(HEX[nibble]);
        }
    }
}

fn write_v6(out: &mut Vec<u8>, a: &[u8]) {
    let words: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([a[2 * i], a[2 * i + 1]]));
    // The longest run of zero words (the first of equals), compressed if 2 or longer.
    type Run = Option<(usize, usize)>; // (first word, length)
    let (mut best, mut cur): (Run, Run) = (None, None);
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            cur = Some(cur.map_or((i, 1), |(base, len)| (base, len + 1)));
        } else if let Some(c) = cur.take() {
            if best.is_none_or(|b| c.1 > b.1) {
                best = Some(c);
            }
        }
    }
    if let Some(c) = cur {
        if best.is_none_or(|b| c.1 > b.1) {
            best = Some(c);
        }
    }
    let best = best.filter(|b| b.1 >= 2);
    // ::a.b.c.d and ::ffff:a.b.c.d keep their IPv4 tail.
    let embedded_v4 = match best {
        Some((0, 6)) => true,
        Some((0, 5)) => words[5] == 0xffff,
        _ => false,
    };
    let mut i = 0;
    while i < 8 {
        if let Some((base, len)) = best {
            if i >= base && i < base + len {
                if i == base {
                    out.push(b':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(b':');
        }
        if i == 6 && embedded_v4 {
            write_v4(out, &a[12..]);
            return;
        }
        write_hex(out, words[i]);
        i += 1;
    }
    if let Some((base, len)) = best {
        if base + len == 8 {
            out.push(b':');
        }
    }
}

/// "address/length".
pub fn prefix_text(address: &[u8], length: u32) -> String {
    let mut out = String::with_capacity(44);
    push_prefix(&mut out, address, length);
    out
}

/// Appends "address/length".
pub fn push_prefix(out: &mut String, address: &[u8], length: u32) {
    let mut buf = Vec::with_capacity(48);
    write_prefix(&mut buf, address, length);
    out.push_str(ascii(&buf));
}

/// Appends "address/length" as ASCII bytes.
pub fn write_prefix(out: &mut Vec<u8>, address: &[u8], length: u32) {
    if let (4, Ok(length)) = (address.len(), u8::try_from(length)) {
        return write_v4_with(out, address, Some(length));
    }
    write_address(out, address);
    out.push(b'/');
    write_decimal(out, length);
}

/// The packed address of canonical (or any inet_pton-readable) address text.
pub fn parse_address(text: &str) -> Option<Vec<u8>> {
    if text.contains(':') {
        text.parse::<std::net::Ipv6Addr>().ok().map(|a| a.octets().to_vec())
    } else {
        text.parse::<std::net::Ipv4Addr>().ok().map(|a| a.octets().to_vec())
    }
}

/// The packed address and length of "address/length" text.
pub fn parse_prefix(text: &str) -> Option<(Vec<u8>, u32)> {
    parse_prefix_packed(text).map(|(address, size, length)| (address[..size].to_vec(), length))
}

/// `parse_prefix` without an allocation, for a caller with many: the address left-aligned
/// in 16 bytes, its size (4 or 16), and the length.
pub fn parse_prefix_packed(text: &str) -> Option<([u8; 16], usize, u32)> {
    let (address, length) = text.split_once('/')?;
    let mut packed = [0u8; 16];
    let size = if address.contains(':') {
        packed = address.parse::<std::net::Ipv6Addr>().ok()?.octets();
        16
    } else {
        packed[..4].copy_from_slice(&address.parse::<std::net::Ipv4Addr>().ok()?.octets());
        4
    };
    let length: u32 = length.parse().ok()?;
    (length as usize <= size * 8).then_some((packed, size, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(text: &str) -> String {
        let mut out = String::new();
        push_address(&mut out, &text.parse::<std::net::Ipv6Addr>().unwrap().octets());
        out
    }

    #[test]
    fn ipv6_as_glibc_writes_it() {
        for (input, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("2001:db8::", "2001:db8::"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),    // first of two equal runs
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),          // the longer run
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"), // one zero word: not compressed
            ("::ffff:198.18.0.1", "::ffff:198.18.0.1"),
            ("::198.18.0.1", "::198.18.0.1"),
            ("::2", "::2"),
            ("::1:2", "::0.1.0.2"),
            ("1::", "1::"),
            ("fe80::1:2:3:4", "fe80::1:2:3:4"),
            ("0:0:0:0:0:1:0:0", "::1:0:0"),
        ] {
            assert_eq!(v6(input), want, "{input}");
        }
    }

    #[test]
    fn digits_as_fmt_writes_them() {
        for n in (0..=1000).chain([u32::from(u16::MAX), u32::MAX]) {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(ascii(&out), n.to_string());
        }
        for w in 0..=u16::MAX {
            let mut out = Vec::new();
            write_hex(&mut out, w);
            assert_eq!(ascii(&out), format!("{w:x}"));
        }
        for a in 0..=255u8 {
            let address = [a, 255 - a, a / 3, a.wrapping_mul(7)];
            let mut out = String::new();
            push_address(&mut out, &address);
            assert_eq!(out, std::net::Ipv4Addr::from(address).to_string());
            for length in [0, 9, 32, 99, 100, 255, 256, u32::MAX] {
                let mut out = b"x".to_vec();
                write_prefix(&mut out, &address, length);
                assert_eq!(ascii(&out), format!("x{}/{length}", std::net::Ipv4Addr::from(address)));
            }
        }
    }

    #[test]
    fn prefixes_both_ways() {
        assert_eq!(prefix_text(&[198, 18, 0, 0], 15), "198.18.0.0/15");
        assert_eq!(parse_prefix("198.18.0.0/15"), Some((vec![198, 18, 0, 0], 15)));
        assert_eq!(parse_prefix("2001:db8::/32").map(|(a, _)| a.len()), Some(16));
        assert_eq!(parse_prefix("198.18.0.0/33"), None);
        assert_eq!(parse_prefix("2001:db8::/129"), None);
        assert_eq!(parse_prefix("2001:db8::"), None);
        assert_eq!(parse_prefix("nonsense/8"), None);
    }
}
