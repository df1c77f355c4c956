//! Addresses and prefixes in the controller's canonical text: what glibc's inet_ntop writes
//! (RFC 5952 for IPv6, plus the embedded IPv4 forms `::a.b.c.d` and `::ffff:a.b.c.d`), so
//! that text made here equals text made by Python's `socket.inet_ntop`.

/// Appends the text of a 4- or 16-byte address; other lengths append nothing (callers
/// check the length first).
pub fn push_address(out: &mut String, address: &[u8]) {
    match address.len() {
        4 => push_v4(out, address),
        16 => push_v6(out, address),
        _ => {}
    }
}

fn push_v4(out: &mut String, a: &[u8]) {
    push_decimal(out, u32::from(a[0]));
    for &byte in &a[1..4] {
        out.push('.');
        push_decimal(out, u32::from(byte));
    }
}

/// Appends `n` in decimal. By hand: `write!` through `fmt` was a third of the text's cost
/// (a full table is a million prefixes).
fn push_decimal(out: &mut String, n: u32) {
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
        out.push(char::from(d));
    }
}

/// Appends `w` in lower-case hexadecimal without leading zeros, as `{:x}` does.
fn push_hex(out: &mut String, w: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12u16, 8, 4, 0] {
        let nibble = usize::from((w >> shift) & 0xf);
        if started || nibble != 0 || shift == 0 {
            started = true;
            out.push(char::from(HEX[nibble]));
        }
    }
}

fn push_v6(out: &mut String, a: &[u8]) {
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
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && embedded_v4 {
            push_v4(out, &a[12..]);
            return;
        }
        push_hex(out, words[i]);
        i += 1;
    }
    if let Some((base, len)) = best {
        if base + len == 8 {
            out.push(':');
        }
    }
}

/// "address/length".
pub fn prefix_text(address: &[u8], length: u32) -> String {
    let mut out = String::with_capacity(44);
    push_address(&mut out, address);
    out.push('/');
    push_decimal(&mut out, length);
    out
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
    let (address, length) = text.split_once('/')?;
    let address = parse_address(address)?;
    let length: u32 = length.parse().ok()?;
    (length as usize <= address.len() * 8).then_some((address, length))
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
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        for w in 0..=u16::MAX {
            let mut out = String::new();
            push_hex(&mut out, w);
            assert_eq!(out, format!("{w:x}"));
        }
        for a in 0..=255u8 {
            let address = [a, 255 - a, a / 3, a.wrapping_mul(7)];
            let mut out = String::new();
            push_address(&mut out, &address);
            assert_eq!(out, std::net::Ipv4Addr::from(address).to_string());
        }
    }

    #[test]
    fn prefixes_both_ways() {
        assert_eq!(prefix_text(&[198, 18, 0, 0], 15), "198.18.0.0/15");
        assert_eq!(parse_prefix("198.18.0.0/15"), Some((vec![198, 18, 0, 0], 15)));
        assert_eq!(parse_prefix("2001:db8::/129"), None);
        assert_eq!(parse_prefix("2001:db8::"), None);
        assert_eq!(parse_prefix("nonsense/8"), None);
    }
}
