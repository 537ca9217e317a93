//! Snapshots: the root of one backup, MAC-protected and chained (previous id, sequence).

use super::codec::{Reader, Writer};
use super::{
    pad, read_header, read_padding, read_writer_mac, write_header, write_writer_mac, MacKeys,
    ObjectKind, WrittenBy,
};
use crate::crypto::SecretKey;
use crate::error::Result;
use crate::ids::Id;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Summary {
    /// File and symlink nodes, every path counted (§11).
    pub files: u64,
    /// Folder nodes, every path counted, the folders above the backed-up paths included.
    pub dirs: u64,
    pub bytes: u64,
    /// Files marked vault-only in this snapshot's trees (their originals were moved into the
    /// vault); lets listings and maintenance find such snapshots without walking every tree.
    pub vault_only: u64,
}

impl Summary {
    /// The entries a walk of the snapshot meets: readers stop after this many (§11).
    pub fn entries(&self) -> u64 {
        self.files.saturating_add(self.dirs)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub repo_id: Id,
    pub time: i64,
    pub time_nanos: u32,
    pub host: String,
    /// Absolute paths given to `backup`, as raw bytes.
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub root: Id,
    /// The snapshot this one was compared against, if any.
    pub parent: Option<Id>,
    /// The newest snapshot the writer knew of, and one more than its sequence number.
    pub previous: Option<Id>,
    pub sequence: u64,
    /// For a snapshot written by `vault copy`: the id of the snapshot it copies, in the source
    /// repository (so that the next copy skips it).
    pub original: Option<Id>,
    pub summary: Summary,
    /// Written by a full device or a write-only one (§11): a full device does not take a
    /// write-only device's snapshot as `latest` nor believe its vault-only marks.
    pub writer: WrittenBy,
}

/// Snapshots are padded to at least this many bytes (§11).
pub const PAD_MIN: usize = 4096;

fn opt_id(w: &mut Writer, id: &Option<Id>) {
    match id {
        Some(id) => {
            w.u8(1);
            w.id(id);
        }
        None => {
            w.u8(0);
            w.id(&Id::default());
        }
    }
}

fn read_opt_id(r: &mut Reader<'_>) -> Result<Option<Id>> {
    let present = r.u8()?;
    let id = r.id()?;
    match present {
        0 => Ok(None),
        1 => Ok(Some(id)),
        _ => Err(r.err("bad optional id flag")),
    }
}

impl Snapshot {
    /// Encode with the writer class, the MAC made with `mac_key` (the key of that class) and
    /// the padding. The snapshot's id is the keyed hash of this output.
    pub fn encode(&self, mac_key: &SecretKey) -> Vec<u8> {
        let mut w = Writer::new();
        write_header(&mut w, &self.repo_id, ObjectKind::Snapshot);
        w.i64(self.time);
        w.u32(self.time_nanos);
        w.str(&self.host);
        w.u32(self.paths.len() as u32);
        for p in &self.paths {
            w.bytes(p);
        }
        w.u32(self.tags.len() as u32);
        for t in &self.tags {
            w.str(t);
        }
        w.id(&self.root);
        opt_id(&mut w, &self.parent);
        opt_id(&mut w, &self.previous);
        w.u64(self.sequence);
        opt_id(&mut w, &self.original);
        w.u64(self.summary.files);
        w.u64(self.summary.dirs);
        w.u64(self.summary.bytes);
        w.u64(self.summary.vault_only);
        write_writer_mac(&mut w, &self.writer, mac_key);
        pad(&mut w, PAD_MIN);
        w.into_vec()
    }

    pub fn decode(data: &[u8], repo_id: &Id, macs: &MacKeys<'_>) -> Result<Snapshot> {
        let mut r = Reader::new(data, "snapshot");
        let repo_id = read_header(&mut r, Some(repo_id), ObjectKind::Snapshot)?;
        let time = r.i64()?;
        let time_nanos = r.u32()?;
        if time_nanos >= 1_000_000_000 {
            return Err(r.err("nanoseconds out of range"));
        }
        let host = r.str()?;
        let np = r.count(4)?;
        let mut paths = Vec::with_capacity(np);
        for _ in 0..np {
            paths.push(r.bytes()?.to_vec());
        }
        let nt = r.count(4)?;
        let mut tags = Vec::with_capacity(nt);
        for _ in 0..nt {
            tags.push(r.str()?);
        }
        let root = r.id()?;
        let parent = read_opt_id(&mut r)?;
        let previous = read_opt_id(&mut r)?;
        let sequence = r.u64()?;
        let original = read_opt_id(&mut r)?;
        let summary = Summary {
            files: r.u64()?,
            dirs: r.u64()?,
            bytes: r.u64()?,
            vault_only: r.u64()?,
        };
        let writer = read_writer_mac(&mut r, data, macs)?;
        read_padding(&mut r, data, PAD_MIN)?;
        Ok(Snapshot {
            repo_id,
            time,
            time_nanos,
            host,
            paths,
            tags,
            root,
            parent,
            previous,
            sequence,
            original,
            summary,
            writer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{device_mac_key, DeviceId};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(host in ".{0,20}", tags in proptest::collection::vec("[a-z]{0,8}", 0..4),
                      paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..4),
                      seq: u64, parent: Option<[u8; 32]>, time: i64, full: bool) {
            let (fk, root) = (SecretKey::generate(), SecretKey::generate());
            let dev = DeviceId([9; 16]);
            let wk = device_mac_key(&root, &dev);
            let macs = MacKeys { full: Some(&fk), devices: Some(&root), own: None };
            let writer = if full { WrittenBy::Full } else { WrittenBy::Device(dev) };
            let key = if full { &fk } else { &wk };
            let s = Snapshot { repo_id: Id::random(), time, time_nanos: 7, host, paths, tags,
                root: Id::random(), parent: parent.map(Id), previous: None, sequence: seq,
                original: parent.map(|p| Id([p[0]; 32])),
                summary: Summary { files: 1, dirs: 2, bytes: 3, vault_only: seq % 5 }, writer };
            let enc = s.encode(key);
            prop_assert_eq!(enc.len() % 4096, 0);
            prop_assert_eq!(Snapshot::decode(&enc, &s.repo_id, &macs).unwrap(), s.clone());
            for i in [enc.len() / 8, enc.len() - 1] {
                let mut bad = enc.clone();
                bad[i] ^= 0x40;
                prop_assert!(Snapshot::decode(&bad, &s.repo_id, &macs).is_err());
            }
            // A write-only key cannot make a snapshot that passes as a full device's, nor as
            // another device's.
            let forged = Snapshot { writer: WrittenBy::Full, ..s.clone() }.encode(&wk);
            prop_assert!(Snapshot::decode(&forged, &s.repo_id, &macs).is_err());
            let other = Snapshot { writer: WrittenBy::Device(DeviceId([8; 16])), ..s.clone() };
            prop_assert!(Snapshot::decode(&other.encode(&wk), &s.repo_id, &macs).is_err());
            // The device itself checks its own snapshots only.
            let own = MacKeys { full: None, devices: None, own: Some((dev, &wk)) };
            prop_assert!(Snapshot::decode(&other.encode(&wk), &s.repo_id, &own).is_ok());
        }
    }
}
