//! Content-hash ids: the same content always gets the same id, so re-running an ingest or an
//! engine run can recognise rows it already wrote.

use sha2::{Digest, Sha256};

/// Hex of the first 128 bits of the sha256 of the parts, each length-prefixed so that
/// `("ab", "c")` and `("a", "bc")` differ.
pub fn content_id<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// The hex sha256 of bytes, for file checksums.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_delimited() {
        assert_ne!(content_id([&b"ab"[..], b"c"]), content_id([&b"a"[..], b"bc"]));
        assert_eq!(content_id([&b"x"[..]]).len(), 32);
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
