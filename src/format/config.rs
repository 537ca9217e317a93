//! The repository config object: chunker and pack parameters, MAC-protected.

use super::codec::{Reader, Writer};
use super::{read_header, write_header, ObjectKind};
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::ids::Id;

/// S3 Object Lock retention mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Governance = 1,
    Compliance = 2,
}

/// Retention every object of the repository is written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

/// Extension key for [`ObjectLock`] in the config.
const EXT_OBJECT_LOCK: &str = "object-lock";

/// Parameters fixed at `init` and shared by every client of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub repo_id: Id,
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    /// Seal a pack once its blobs reach this many bytes.
    pub pack_target: u32,
    /// Pad every pack plaintext to at least this many bytes.
    pub pack_min: u32,
    pub zstd_level: u8,
    /// Unix seconds.
    pub created: i64,
    /// Retention set on every object written (S3 Object Lock).
    pub object_lock: Option<ObjectLock>,
}

impl Config {
    pub fn new(repo_id: Id, created: i64) -> Self {
        Config {
            repo_id,
            chunk_min: 256 * 1024,
            chunk_avg: 1024 * 1024,
            chunk_max: 4 * 1024 * 1024,
            pack_target: 20 * 1024 * 1024,
            pack_min: 512 * 1024,
            zstd_level: 3,
            created,
            object_lock: None,
        }
    }

    /// Reject parameters the chunker or packer cannot honour (fastcdc v2020 bounds, even sizes).
    pub fn validate(&self) -> Result<()> {
        let ok = self.chunk_min >= 64
            && self.chunk_min <= 1 << 20
            && self.chunk_avg >= 256
            && self.chunk_avg <= 4 << 20
            && self.chunk_max >= 1024
            && self.chunk_max <= 16 << 20
            && self.chunk_min < self.chunk_avg
            && self.chunk_avg < self.chunk_max
            && self.chunk_min.is_multiple_of(2)
            && self.chunk_avg.is_multiple_of(2)
            && self.chunk_max.is_multiple_of(2)
            && self.pack_target >= 1 << 16
            && self.pack_target <= 1 << 30
            && (1..=19).contains(&self.zstd_level);
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt("config", "parameters out of range"))
        }
    }

    pub fn encode(&self, mac_key: &SecretKey) -> Vec<u8> {
        let mut w = Writer::new();
        write_header(&mut w, &self.repo_id, ObjectKind::Config);
        w.u32(self.chunk_min);
        w.u32(self.chunk_avg);
        w.u32(self.chunk_max);
        w.u32(self.pack_target);
        w.u32(self.pack_min);
        w.u8(self.zstd_level);
        w.i64(self.created);
        // Extensions: (key, value) pairs. Readers refuse keys they do not know, so an older
        // client never writes to a repository whose rules it cannot follow.
        let mut ext: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(l) = &self.object_lock {
            let mut v = Writer::new();
            v.u8(l.mode as u8);
            v.u32(l.days);
            ext.push((EXT_OBJECT_LOCK, v.into_vec()));
        }
        w.u32(ext.len() as u32);
        for (k, v) in ext {
            w.str(k);
            w.bytes(&v);
        }
        let mac = mac_key.keyed_hash(&w.buf);
        w.id(&mac);
        w.into_vec()
    }

    /// Decode and verify. `repo_id` is the id from the unlocked key file.
    pub fn decode(data: &[u8], repo_id: &Id, mac_key: &SecretKey) -> Result<Self> {
        let mut r = Reader::new(data, "config");
        let repo_id = read_header(&mut r, Some(repo_id), ObjectKind::Config)?;
        let c = Config {
            repo_id,
            chunk_min: r.u32()?,
            chunk_avg: r.u32()?,
            chunk_max: r.u32()?,
            pack_target: r.u32()?,
            pack_min: r.u32()?,
            zstd_level: r.u8()?,
            created: r.i64()?,
            object_lock: None,
        };
        let mut c = c;
        let n = r.count(8)?;
        for _ in 0..n {
            let key = r.str()?;
            let value = r.bytes()?;
            match key.as_str() {
                EXT_OBJECT_LOCK => {
                    let mut v = Reader::new(value, "config");
                    let mode = match v.u8()? {
                        1 => LockMode::Governance,
                        2 => LockMode::Compliance,
                        m => return Err(Error::corrupt("config", format!("unknown lock mode {m}"))),
                    };
                    let days = v.u32()?;
                    v.finish()?;
                    c.object_lock = Some(ObjectLock { mode, days });
                }
                other => {
                    return Err(Error::Invalid(format!(
                        "this repository uses a feature ({other}) this version of vault does not know; upgrade vault"
                    )))
                }
            }
        }
        let body = r.pos();
        let mac = r.id()?;
        r.finish()?;
        if !mac_key.verify_mac(&data[..body], &mac.0) {
            return Err(Error::corrupt("config", "MAC does not verify"));
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mac() {
        let key = SecretKey::generate();
        let mut c = Config::new(Id::random(), 1_700_000_000);
        let enc = c.encode(&key);
        assert_eq!(Config::decode(&enc, &c.repo_id, &key).unwrap(), c);
        c.object_lock = Some(ObjectLock {
            mode: LockMode::Compliance,
            days: 30,
        });
        let locked = c.encode(&key);
        assert_eq!(Config::decode(&locked, &c.repo_id, &key).unwrap(), c);
        let mut bad = enc.clone();
        bad[50] ^= 1;
        assert!(Config::decode(&bad, &c.repo_id, &key).is_err());
        assert!(Config::decode(&enc, &c.repo_id, &SecretKey::generate()).is_err());
    }
}
