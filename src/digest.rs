//! Telling contents apart: a stable 64-bit FNV-1a digest, the same across
//! processes and versions (a profile's digest is shown in metrics and logs).

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

/// The FNV-1a digest of `parts`, each followed by a 0 byte (so that
/// `["ab", "c"]` and `["a", "bc"]` differ).
pub fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash = OFFSET;
    for part in parts {
        for byte in part.iter().chain(&[0]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_separated_parts() {
        // FNV-1a of the single byte 0.
        assert_eq!(fnv1a([b"".as_slice()]), 0xaf63_bd4c_8601_b7df);
        assert_ne!(
            fnv1a([b"ab".as_slice(), b"c"]),
            fnv1a([b"a".as_slice(), b"bc"])
        );
    }
}
