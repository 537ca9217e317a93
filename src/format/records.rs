//! Maintenance records (§11.1, §13.2): forget records, which say that snapshots were removed on
//! purpose, and condemn markers, which name the packs a prune will delete after a grace period.
//! Only full devices write them; the MAC key of each comes from the master secret.

use super::codec::{Reader, Writer};
use super::{pad, read_header, read_padding, write_header, ObjectKind};
use crate::crypto::SecretKey;
use crate::error::Result;
use crate::ids::Id;

/// Both kinds of record are padded to at least this many bytes.
pub const PAD_MIN: usize = 4096;

/// `forgotten/<name>`: snapshots removed by `vault forget` (§11.1). A snapshot a verified record
/// names is not listed, not restored and not reported missing, whether or not its object is
/// still in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgetRecord {
    pub time: i64,
    pub host: String,
    pub snapshots: Vec<Id>,
}

/// `condemned/<name>`: packs a prune found unneeded (or copied elsewhere) and will delete once
/// the marker is older than the grace period (§13.2). Backups do not reuse blobs only they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondemnMarker {
    pub time: i64,
    pub packs: Vec<Id>,
}

fn ids(w: &mut Writer, ids: &[Id]) {
    w.u32(ids.len() as u32);
    for id in ids {
        w.id(id);
    }
}

fn read_ids(r: &mut Reader<'_>) -> Result<Vec<Id>> {
    let n = r.count(32)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.id()?);
    }
    Ok(out)
}

fn mac_and_pad(mut w: Writer, key: &SecretKey) -> Vec<u8> {
    let mac = key.keyed_hash(&w.buf);
    w.id(&mac);
    pad(&mut w, PAD_MIN);
    w.into_vec()
}

/// Check the MAC at `r`'s position over everything before it. `None`: a write-only device,
/// which cannot check (it takes the record as it is; it only ever avoids data because of one).
fn read_mac(r: &mut Reader<'_>, data: &[u8], key: Option<&SecretKey>) -> Result<()> {
    let body = r.pos();
    let mac = r.id()?;
    if let Some(key) = key {
        if !key.verify_mac(&data[..body], &mac.0) {
            return Err(r.err("MAC does not verify"));
        }
    }
    read_padding(r, data, PAD_MIN)
}

impl ForgetRecord {
    pub fn encode(&self, repo_id: &Id, mac_key: &SecretKey) -> Vec<u8> {
        let mut w = Writer::new();
        write_header(&mut w, repo_id, ObjectKind::Forget);
        w.i64(self.time);
        w.str(&self.host);
        ids(&mut w, &self.snapshots);
        mac_and_pad(w, mac_key)
    }

    /// Only full devices read forget records, so the MAC is always checked.
    pub fn decode(data: &[u8], repo_id: &Id, mac_key: &SecretKey) -> Result<ForgetRecord> {
        let mut r = Reader::new(data, "forget record");
        read_header(&mut r, Some(repo_id), ObjectKind::Forget)?;
        let time = r.i64()?;
        let host = r.str()?;
        let snapshots = read_ids(&mut r)?;
        read_mac(&mut r, data, Some(mac_key))?;
        Ok(ForgetRecord {
            time,
            host,
            snapshots,
        })
    }
}

impl CondemnMarker {
    pub fn encode(&self, repo_id: &Id, mac_key: &SecretKey) -> Vec<u8> {
        let mut w = Writer::new();
        write_header(&mut w, repo_id, ObjectKind::Condemn);
        w.i64(self.time);
        ids(&mut w, &self.packs);
        mac_and_pad(w, mac_key)
    }

    /// `mac_key` is `None` on a write-only device (see [`read_mac`]).
    pub fn decode(data: &[u8], repo_id: &Id, mac_key: Option<&SecretKey>) -> Result<CondemnMarker> {
        let mut r = Reader::new(data, "condemn marker");
        read_header(&mut r, Some(repo_id), ObjectKind::Condemn)?;
        let time = r.i64()?;
        let packs = read_ids(&mut r)?;
        read_mac(&mut r, data, mac_key)?;
        Ok(CondemnMarker { time, packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes([7; 32])
    }

    proptest! {
        #[test]
        fn forget_roundtrip(time: i64, host in ".{0,40}", n in 0usize..300) {
            let repo = Id::random();
            let rec = ForgetRecord { time, host, snapshots: (0..n).map(|_| Id::random()).collect() };
            let enc = rec.encode(&repo, &key());
            prop_assert!(enc.len() >= PAD_MIN);
            prop_assert_eq!(ForgetRecord::decode(&enc, &repo, &key()).unwrap(), rec);
        }

        #[test]
        fn condemn_roundtrip(time: i64, n in 0usize..300) {
            let repo = Id::random();
            let m = CondemnMarker { time, packs: (0..n).map(|_| Id::random()).collect() };
            let enc = m.encode(&repo, &key());
            prop_assert_eq!(CondemnMarker::decode(&enc, &repo, Some(&key())).unwrap(), m.clone());
            prop_assert_eq!(CondemnMarker::decode(&enc, &repo, None).unwrap(), m);
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let repo = Id::random();
            let _ = ForgetRecord::decode(&data, &repo, &key());
            let _ = CondemnMarker::decode(&data, &repo, None);
        }
    }

    #[test]
    fn refuses_forgery_and_damage() {
        let repo = Id::random();
        let rec = ForgetRecord {
            time: 5,
            host: "h".into(),
            snapshots: vec![Id::random()],
        };
        let enc = rec.encode(&repo, &key());
        // Another key (a write-only device cannot make a forget record).
        assert!(ForgetRecord::decode(&enc, &repo, &SecretKey::from_bytes([8; 32])).is_err());
        // Another repository.
        assert!(ForgetRecord::decode(&enc, &Id::random(), &key()).is_err());
        // One flipped bit anywhere, padding included.
        for i in [50, enc.len() - 1] {
            let mut bad = enc.clone();
            bad[i] ^= 1;
            assert!(
                ForgetRecord::decode(&bad, &repo, &key()).is_err(),
                "byte {i}"
            );
        }
        // A marker is not a record.
        let m = CondemnMarker {
            time: 5,
            packs: vec![],
        }
        .encode(&repo, &key());
        assert!(ForgetRecord::decode(&m, &repo, &key()).is_err());
        assert!(CondemnMarker::decode(&enc, &repo, None).is_err());
    }
}
