//! Fuzz target: tree blobs (leaf and index layouts, §10) and the node decoder, from arbitrary
//! bytes; what decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::format::tree::{Tree, TreeBlob};

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data) {
        assert_eq!(t.encode(), data, "a decoded tree re-encodes to its bytes");
    }
    let _ = TreeBlob::decode(data);
});
