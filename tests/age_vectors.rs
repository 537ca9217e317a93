//! The C2SP CCTV age test vectors, run through vault's crypto wrappers.

use std::io::Read;

use sha2::{Digest, Sha256};
use vault::crypto::{open_with_passphrase, DataIdentity, Passphrase, Unwrap};

const KNOWN_LENIENT: [&str; 2] = ["stanza_missing_body", "stanza_missing_final_line"];

struct Vector {
    name: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn load() -> Vec<Vector> {
    let mut out = vec![];
    for e in std::fs::read_dir("tests/age-testkit").unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            continue;
        }
        let raw = std::fs::read(&p).unwrap();
        let split = raw.windows(2).position(|w| w == b"\n\n").unwrap();
        let headers = String::from_utf8(raw[..split].to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_string(), v.to_string())
            })
            .collect::<Vec<_>>();
        let mut body = raw[split + 2..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "compressed" && v == "zlib")
        {
            let mut d = vec![];
            flate2::read::ZlibDecoder::new(&body[..])
                .read_to_end(&mut d)
                .unwrap();
            body = d;
        }
        out.push(Vector {
            name,
            headers,
            body,
        });
    }
    out
}

fn header<'a>(v: &'a Vector, key: &str) -> Option<&'a str> {
    v.headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn cctv_vectors_through_our_wrappers() {
    let mut ran = 0;
    for v in load() {
        if header(&v, "armored").is_some() {
            continue; // vault never reads armored files
        }
        let expect_ok = header(&v, "expect") == Some("success");
        let result: Result<Vec<u8>, String> = if let Some(id) = header(&v, "identity") {
            if !id.starts_with("AGE-SECRET-KEY-1") {
                continue;
            }
            // Vectors with several identities list them on separate lines; use the first.
            match DataIdentity::parse(id) {
                Ok(ident) => ident.decrypt(&v.body, &v.name).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else if let Some(pw) = header(&v, "passphrase") {
            match open_with_passphrase(&Passphrase::new(pw.to_string()), &v.body, &v.name) {
                Ok(Unwrap::Opened(p)) => Ok(p.to_vec()),
                Ok(_) => Err("not opened".into()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            continue;
        };
        match (expect_ok, result) {
            (true, Ok(plain)) => {
                let want = header(&v, "payload").unwrap();
                assert_eq!(hex::encode(Sha256::digest(&plain)), want, "{}", v.name);
            }
            (true, Err(e)) => panic!("{} should decrypt: {e}", v.name),
            // The age crate knowingly accepts legacy stanzas without a final short line (its own
            // testkit makes the same two exceptions). Harmless for vault: these are header
            // parsing leniencies, and every payload is still authenticated.
            (false, Ok(_)) if KNOWN_LENIENT.contains(&v.name.as_str()) => {}
            (false, Ok(_)) => panic!("{} must be rejected", v.name),
            (false, Err(_)) => {}
        }
        ran += 1;
    }
    assert!(ran >= 60, "only {ran} vectors ran");
}
