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

/// Longest Object Lock retention accepted: 100 years.
pub const MAX_LOCK_DAYS: u32 = 36_500;

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
            // A forged pack_min would make every small backup upload a huge pack.
            && self.pack_min <= self.pack_target
            && self.pack_min <= 16 << 20
            && (1..=19).contains(&self.zstd_level)
            && self
                .object_lock
                .is_none_or(|l| (1..=MAX_LOCK_DAYS).contains(&l.days));
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt("config", "parameters out of range"))
        }
    }

    /// Encode with the check (writer-secret key, for write-only devices) and the MAC (from the
    /// master secret, for full devices) of §6.
    pub fn encode(&self, check_key: &SecretKey, mac_key: &SecretKey) -> Vec<u8> {
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
        let check = check_key.keyed_hash(&w.buf);
        w.id(&check);
        let mac = mac_key.keyed_hash(&w.buf);
        w.id(&mac);
        w.into_vec()
    }

    /// Decode and verify. `repo_id` is the id from the unlocked key file; `mac_key` is `None` on
    /// a write-only device, which checks only the check.
    pub fn decode(
        data: &[u8],
        repo_id: &Id,
        check_key: &SecretKey,
        mac_key: Option<&SecretKey>,
    ) -> Result<Self> {
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
        let check = r.id()?;
        let checked = r.pos();
        let mac = r.id()?;
        r.finish()?;
        if !check_key.verify_mac(&data[..body], &check.0)
            || mac_key.is_some_and(|k| !k.verify_mac(&data[..checked], &mac.0))
        {
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
        let (check, key) = (SecretKey::generate(), SecretKey::generate());
        let mut c = Config::new(Id::random(), 1_700_000_000);
        let enc = c.encode(&check, &key);
        assert_eq!(
            Config::decode(&enc, &c.repo_id, &check, Some(&key)).unwrap(),
            c
        );
        assert_eq!(Config::decode(&enc, &c.repo_id, &check, None).unwrap(), c);
        c.object_lock = Some(ObjectLock {
            mode: LockMode::Compliance,
            days: 30,
        });
        let locked = c.encode(&check, &key);
        assert_eq!(
            Config::decode(&locked, &c.repo_id, &check, Some(&key)).unwrap(),
            c
        );
        let mut bad = enc.clone();
        bad[50] ^= 1;
        assert!(Config::decode(&bad, &c.repo_id, &check, Some(&key)).is_err());
        let other = SecretKey::generate();
        assert!(Config::decode(&enc, &c.repo_id, &check, Some(&other)).is_err());
        assert!(Config::decode(&enc, &c.repo_id, &other, None).is_err());
        // A write-only device (holding only the check key) can forge a config that other
        // write-only devices accept, but not one a full device accepts.
        let forged = Config::new(c.repo_id, 0).encode(&check, &other);
        assert!(Config::decode(&forged, &c.repo_id, &check, Some(&key)).is_err());
    }

    #[test]
    fn parameters_out_of_range_are_refused() {
        let (check, key) = (SecretKey::generate(), SecretKey::generate());
        let base = Config::new(Id::random(), 0);
        let bad = [
            Config {
                pack_min: 200 << 20,
                ..base.clone()
            },
            Config {
                pack_min: base.pack_target + 2,
                ..base.clone()
            },
            Config {
                pack_target: 1 << 31,
                ..base.clone()
            },
            Config {
                chunk_max: u32::MAX - 1,
                ..base.clone()
            },
            Config {
                zstd_level: 0,
                ..base.clone()
            },
            Config {
                object_lock: Some(ObjectLock {
                    mode: LockMode::Governance,
                    days: 0,
                }),
                ..base.clone()
            },
            Config {
                object_lock: Some(ObjectLock {
                    mode: LockMode::Governance,
                    days: u32::MAX,
                }),
                ..base.clone()
            },
        ];
        for c in bad {
            let enc = c.encode(&check, &key);
            assert!(Config::decode(&enc, &c.repo_id, &check, Some(&key)).is_err());
        }
    }
}
