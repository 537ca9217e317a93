//! Fuzz target: a pack's plaintext (header, blobs, table at the end, §8): the in-memory decoder
//! and the streaming reader that finds the table from the end.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use vault::format::pack;
use vault::Id;

fuzz_target!(|data: &[u8]| {
    let _ = pack::decode(data, &Id([0x11; 32]));
    let _ = vault::repo::read_table_from_end(&mut Cursor::new(data), "fuzz");
    if data.len() >= 4 {
        let _ = pack::decode_count(&data[data.len() - 4..], data.len() as u64);
        let _ = pack::decode_table(data, data.len() as u64);
    }
});
