//! Hex: the one spelling of hashes, keys, secrets and boot ids in the state,
//! in cookies and on the command line (lowercase), and the one reader of it.

/// Bytes as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The value of one hex digit, in either case.
pub fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Exactly `2 * N` hex digits, in either case, as `N` bytes; `None` for
/// anything else.
pub fn decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Whether `text` is only lowercase hex digits: the spelling [`encode`]
/// writes, and so the only one a name written into the state can have.
pub fn is_lower(text: &[u8]) -> bool {
    text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_reads_back_what_encoding_wrote_and_nothing_else() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff];
        assert_eq!(encode(&bytes), "000fa5ff");
        assert_eq!(decode::<4>(b"000fa5ff"), Some(bytes));
        assert_eq!(decode::<4>(b"000FA5FF"), Some(bytes), "either case");
        for bad in [
            &b"000fa5f"[..],
            b"000fa5fff",
            b"000fa5fg",
            b"000f a5f",
            b"+0",
        ] {
            assert_eq!(decode::<4>(bad), None, "{bad:?}");
        }
        assert!(is_lower(b"000fa5ff") && !is_lower(b"000FA5FF") && !is_lower(b"../x"));
        assert_eq!(
            (digit(b'7'), digit(b'B'), digit(b'g')),
            (Some(7), Some(11), None)
        );
    }
}
