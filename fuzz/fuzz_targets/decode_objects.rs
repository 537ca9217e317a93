//! Fuzz target: every whole-object decoder (key file and its stored object, write-only profile,
//! config, index, snapshot, forget record, condemn marker) and the age-header helpers, on arbitrary plaintext. The first byte picks the
//! decoder; none may panic, abort or allocate beyond the cap scripts/fuzz.sh sets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::crypto::SecretKey;
use vault::format::config::Config;
use vault::format::records::{CondemnMarker, ForgetRecord};
use vault::format::snapshot::Snapshot;
use vault::format::{index, keyfile, DeviceId, MacKeys};
use vault::Id;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let repo = Id([0x11; 32]);
    let (full, devices, own) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
        SecretKey::from_bytes([3; 32]),
    );
    // Readers as a full device and as a write-only one (which skips MACs it cannot check, so
    // the fuzzer reaches past them).
    let as_full = MacKeys { full: Some(&full), devices: Some(&devices), own: None };
    let as_phone = MacKeys { full: None, devices: None, own: Some((DeviceId([4; 16]), &own)) };
    match which % 10 {
        0 => {
            let _ = keyfile::decode(rest);
        }
        1 => {
            let _ = vault::repo::parse_profile(&String::from_utf8_lossy(rest));
        }
        2 => {
            let _ = Config::decode(rest, &repo, &full, Some(&devices));
            let _ = Config::decode(rest, &repo, &full, None);
        }
        3 => {
            let _ = index::decode(rest, &repo, &as_full);
            let _ = index::decode(rest, &repo, &as_phone);
        }
        4 => {
            let _ = Snapshot::decode(rest, &repo, &as_full);
            let _ = Snapshot::decode(rest, &repo, &as_phone);
        }
        5 => {
            let _ = vault::crypto::age_payload_offset(rest);
            let _ = vault::crypto::header_only(rest);
            let _ = vault::crypto::stanza_kind(rest);
        }
        6 => {
            // Bounded decompression: the recorded size comes from hostile input too.
            if rest.len() >= 4 {
                let raw = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let mut out = Vec::new();
                let _ = vault::compress::decompress_into(&rest[4..], raw % (64 << 20), &mut out, "f");
            }
        }
        7 => {
            let _ = Config::decode(rest, &Id::default(), &devices, None);
        }
        8 => {
            // A stored key file: name check, label, MAC, and the age header inside.
            let name = keyfile::envelope_name(rest);
            if let Ok(env) = keyfile::open_envelope(&name, rest) {
                let _ = env.verify(&full);
                let _ = vault::crypto::stanza_kind(env.age);
                let _ = vault::crypto::scrypt_work_factor(env.age);
            }
            let _ = keyfile::parse_envelope(rest);
        }
        _ => {
            let _ = ForgetRecord::decode(rest, &repo, &full);
            let _ = CondemnMarker::decode(rest, &repo, Some(&full));
            let _ = CondemnMarker::decode(rest, &repo, None);
        }
    }
});
