//! Fuzz target: a folder made of several tree blobs (a split listing, §10) walked with the
//! cursor and searched with `lookup`, the blobs taken from the input. Deep, wide, cyclic and
//! inconsistent layouts must end in an error or a result, never a panic or unbounded work.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use vault::format::tree::{lookup, FolderCursor, TreeSource};
use vault::Id;

struct Blobs(HashMap<Id, Vec<u8>>, usize);

impl TreeSource for Blobs {
    fn tree_blob(&mut self, id: &Id) -> vault::Result<Vec<u8>> {
        self.1 += 1;
        self.0
            .get(id)
            .cloned()
            .ok_or_else(|| vault::Error::NotFound("blob".into()))
    }
}

fuzz_target!(|data: &[u8]| {
    // Blobs are separated by 0xFE bytes; blob k has id [k; 32], so index blobs in the input can
    // name each other (and themselves).
    let mut blobs = HashMap::new();
    for (k, part) in data.split(|&b| b == 0xFE).enumerate().take(64) {
        blobs.insert(Id([k as u8; 32]), part.to_vec());
    }
    let mut src = Blobs(blobs, 0);
    let mut cursor = FolderCursor::new(Id([0; 32]));
    let mut n = 0;
    while let Ok(Some(_)) = cursor.next(&mut src) {
        n += 1;
        assert!(n <= 1 << 20, "a few KB of input cannot list a million entries");
    }
    let _ = lookup(&mut src, &Id([0; 32]), b"IMG_0001.JPG");
    assert!(src.1 <= 1 << 16, "blob reads stay bounded: {}", src.1);
});
