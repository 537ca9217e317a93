//! Key file plaintext: the master secret and data identity, wrapped by one unlock method.

use zeroize::Zeroizing;

use super::codec::{Reader, Writer};
use super::{read_header, write_header, ObjectKind};
use crate::crypto::{DataIdentity, SecretKey};
use crate::error::{Error, Result};
use crate::ids::Id;

/// Unlock methods; the age stanza type of the key file must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Method {
    Passphrase = 1,
}

/// The secrets a key file carries. No `Debug`.
pub struct KeyMaterial {
    pub repo_id: Id,
    pub master: SecretKey,
    pub identity: DataIdentity,
}

/// Descriptive fields of a key file, safe to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub method: Method,
    pub created: i64,
    pub label: String,
}

pub fn encode(material: &KeyMaterial, info: &KeyInfo) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::new();
    write_header(&mut w, &material.repo_id, ObjectKind::Key);
    w.u8(info.method as u8);
    w.raw(material.master.expose());
    w.str(&material.identity.to_secret_string());
    w.i64(info.created);
    w.str(&info.label);
    Zeroizing::new(w.into_vec())
}

pub fn decode(data: &[u8]) -> Result<(KeyMaterial, KeyInfo)> {
    let mut r = Reader::new(data, "key file");
    let repo_id = read_header(&mut r, None, ObjectKind::Key)?;
    let m = r.u8()?;
    let method = match m {
        1 => Method::Passphrase,
        _ => return Err(Error::corrupt("key file", format!("unknown method {m}"))),
    };
    let mut master = [0u8; 32];
    master.copy_from_slice(r.take(32)?);
    let master = SecretKey::from_bytes(master);
    let ident = Zeroizing::new(r.bytes()?.to_vec());
    let ident = std::str::from_utf8(&ident)
        .map_err(|_| Error::corrupt("key file", "identity is not text"))?;
    let identity = DataIdentity::parse(ident)?;
    let created = r.i64()?;
    let label = r.str()?;
    r.finish()?;
    Ok((
        KeyMaterial {
            repo_id,
            master,
            identity,
        },
        KeyInfo {
            method,
            created,
            label,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = KeyMaterial {
            repo_id: Id::random(),
            master: SecretKey::generate(),
            identity: DataIdentity::generate(),
        };
        let info = KeyInfo {
            method: Method::Passphrase,
            created: 5,
            label: "passphrase".into(),
        };
        let enc = encode(&m, &info);
        let (m2, info2) = decode(&enc).unwrap();
        assert_eq!(m2.repo_id, m.repo_id);
        assert_eq!(m2.master.expose(), m.master.expose());
        assert_eq!(
            *m2.identity.to_secret_string(),
            *m.identity.to_secret_string()
        );
        assert_eq!(info2, info);
        assert!(decode(&enc[..enc.len() - 1]).is_err());
    }
}
