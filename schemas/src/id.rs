//! Content-hash ids: the same content always gets the same id, so re-running an ingest or an
//! engine run can recognise rows it already wrote.

use sha2::{Digest, Sha256};

use crate::records::Trajectory;

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

/// Sets a trajectory's id to the hash of its content: everything but where it was read from
/// (file, offset, line, ingest batch), so the same trajectory read twice, from anywhere, is
/// one row.
pub fn seal(mut t: Trajectory) -> Trajectory {
    let content = serde_json::json!([
        t.source,
        t.source_id,
        t.task,
        t.system_prompt,
        t.files,
        t.tool_specs,
        t.steps,
        t.final_answer,
        t.gt_answer,
        t.meta
    ]);
    t.trajectory_id = content_id([content.to_string().as_bytes()]);
    t
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
