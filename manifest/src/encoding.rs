//! Hex and base64 as the manifest uses them: strict, canonical, no
//! whitespace. Two small codecs written here rather than two more crates in
//! the init; both are covered by the manifest fuzz target.

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes exactly `N` bytes of lowercase hex. Uppercase is refused so that
/// every value has one spelling.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 §4) with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a base64 text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64Error {
    /// The length is not a multiple of four.
    Length(usize),
    /// A byte outside the alphabet (or padding in the middle) at this offset.
    Byte(usize),
    /// The bits below the last character are not zero, so the text is not
    /// the one canonical encoding of its bytes.
    NonCanonical,
}

impl std::fmt::Display for Base64Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Base64Error::Length(n) => write!(f, "length {n} is not a multiple of 4"),
            Base64Error::Byte(at) => write!(f, "invalid character at offset {at}"),
            Base64Error::NonCanonical => f.write_str("non-canonical trailing bits"),
        }
    }
}

/// Decodes standard padded base64, refusing anything but the canonical
/// encoding (RFC 4648 §3.5).
pub fn unbase64(text: &str) -> Result<Vec<u8>, Base64Error> {
    let input = text.as_bytes();
    if !input.len().is_multiple_of(4) {
        return Err(Base64Error::Length(input.len()));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    for (q, quad) in input.chunks_exact(4).enumerate() {
        let last = q + 1 == quads;
        // Padding is allowed only in the last quad, as its last one or two bytes.
        let pad = match (quad[2], quad[3]) {
            (b'=', b'=') if last => 2,
            (_, b'=') if last => 1,
            _ => 0,
        };
        let mut n: u32 = 0;
        for (i, &c) in quad.iter().enumerate() {
            let v = if i >= 4 - pad {
                0
            } else {
                sextet(c).ok_or(Base64Error::Byte(q * 4 + i))?
            };
            n = (n << 6) | u32::from(v);
        }
        let bytes = n.to_be_bytes();
        let keep = 3 - pad;
        // The dropped low bits of the last sextet must be zero.
        let dropped = match pad {
            2 => n & 0xffff,
            1 => n & 0xff,
            _ => 0,
        };
        if dropped != 0 {
            return Err(Base64Error::NonCanonical);
        }
        out.extend_from_slice(&bytes[1..1 + keep]);
    }
    Ok(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 §10.
        let table = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in table {
            assert_eq!(base64(plain.as_bytes()), encoded);
            assert_eq!(unbase64(encoded).unwrap(), plain.as_bytes(), "{encoded}");
        }
    }

    #[test]
    fn base64_refuses_non_canonical_and_malformed_text() {
        let table = [
            ("Zg=", Base64Error::Length(3)),
            ("Zh==", Base64Error::NonCanonical),
            ("Zm9=", Base64Error::NonCanonical),
            ("Zg==Zg==", Base64Error::Byte(2)),
            ("Z===", Base64Error::Byte(1)),
            ("Zm 9", Base64Error::Byte(2)),
            ("Zm9v\n", Base64Error::Length(5)),
            ("Zm-v", Base64Error::Byte(2)),
        ];
        for (text, error) in table {
            assert_eq!(unbase64(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            assert_eq!(unbase64(&base64(&data[..len])).unwrap(), &data[..len]);
        }
    }

    #[test]
    fn hex_is_lowercase_and_exact_length() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex::<3>("00abff"), Some([0x00, 0xab, 0xff]));
        for bad in ["00ABff", "00abf", "00abfff0", "00abfg", ""] {
            assert_eq!(unhex::<3>(bad), None, "{bad:?}");
        }
    }
}
