//! The repository format (see `FORMAT_VERSION`): pure encode/decode of every stored structure, no I/O.
//! docs/design.md is the normative description; the layouts here must match it byte for byte.

pub mod codec;
pub mod config;
pub mod index;
pub mod keyfile;
pub mod pack;
pub mod records;
pub mod snapshot;
pub mod tree;

use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::ids::Id;
use codec::{Reader, Writer};

/// First bytes of every object's plaintext.
pub const MAGIC: [u8; 8] = *b"vaultobj";
/// The repository format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 11;
/// Size of the common object header: magic, version, repository id, object kind.
pub const HEADER_LEN: usize = 8 + 4 + 32 + 1;

/// What an object is; stored in its header so that one object cannot pass for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    Key = 1,
    Config = 2,
    Pack = 3,
    Index = 4,
    Snapshot = 5,
    Forget = 6,
    Condemn = 7,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Key => "key file",
            ObjectKind::Config => "config",
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Forget => "forget record",
            ObjectKind::Condemn => "condemn marker",
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ObjectKind::Key,
            2 => ObjectKind::Config,
            3 => ObjectKind::Pack,
            4 => ObjectKind::Index,
            5 => ObjectKind::Snapshot,
            6 => ObjectKind::Forget,
            7 => ObjectKind::Condemn,
            _ => return None,
        })
    }
}

/// A write-only device's id (§4.1): random, chosen when its profile is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; 16]);

impl DeviceId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        crate::random::fill_random(&mut b);
        DeviceId(b)
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Who wrote a snapshot or an index object (§9, §11): a full device, or the write-only device
/// of this id. Only full devices hold the key of class 1's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WrittenBy {
    Full,
    Device(DeviceId),
}

impl WrittenBy {
    pub fn is_full(&self) -> bool {
        matches!(self, WrittenBy::Full)
    }
    /// "full" or "write-only".
    pub fn name(&self) -> &'static str {
        match self {
            WrittenBy::Full => "full",
            WrittenBy::Device(_) => "write-only",
        }
    }
    /// `u8 writer` (1 full, 2 write-only) and `[16] device` (zeros for class 1).
    fn encode(&self, w: &mut Writer) {
        match self {
            WrittenBy::Full => {
                w.u8(1);
                w.raw(&[0; 16]);
            }
            WrittenBy::Device(d) => {
                w.u8(2);
                w.raw(&d.0);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let class = r.u8()?;
        let mut d = [0u8; 16];
        d.copy_from_slice(r.take(16)?);
        match class {
            1 if d == [0; 16] => Ok(WrittenBy::Full),
            1 => Err(r.err("a full device's object names a device")),
            2 => Ok(WrittenBy::Device(DeviceId(d))),
            c => Err(r.err(format!("unknown writer class {c}"))),
        }
    }
}

/// The MAC key of a write-only device: `keyed_blake3(device-mac key, device id)` (§4.1).
pub fn device_mac_key(root: &SecretKey, id: &DeviceId) -> SecretKey {
    SecretKey::from_bytes(root.keyed_hash(&id.0).0)
}

/// The keys a reader holds to check who wrote an object of one kind.
pub struct MacKeys<'a> {
    /// Class 1's MAC key for this kind of object: full devices only.
    pub full: Option<&'a SecretKey>,
    /// Derives every write-only device's MAC key: full devices only.
    pub devices: Option<&'a SecretKey>,
    /// A write-only device's own id and MAC key.
    pub own: Option<(DeviceId, &'a SecretKey)>,
}

impl MacKeys<'_> {
    /// The key that verifies objects `by` wrote, when this device can know it.
    pub fn key(&self, by: &WrittenBy) -> Option<SecretKey> {
        match by {
            WrittenBy::Full => self.full.cloned(),
            WrittenBy::Device(id) => match (self.devices, self.own) {
                (Some(root), _) => Some(device_mac_key(root, id)),
                (None, Some((own, key))) if own == *id => Some(key.clone()),
                _ => None,
            },
        }
    }
}

/// Read who wrote an object, then check the MAC that follows over everything before it:
/// `keyed_blake3(key of the writer, data[..MAC])`. Without that key (a write-only device
/// reading another's objects) the MAC cannot be checked and the object is taken as it is.
pub fn read_writer_mac(r: &mut Reader<'_>, data: &[u8], keys: &MacKeys<'_>) -> Result<WrittenBy> {
    let by = WrittenBy::decode(r)?;
    read_mac(r, data, keys, &by)?;
    Ok(by)
}

/// Read the MAC at `r`'s position and check it over `data[..position]` with `by`'s key.
pub fn read_mac(r: &mut Reader<'_>, data: &[u8], keys: &MacKeys<'_>, by: &WrittenBy) -> Result<()> {
    let body = r.pos();
    let mac = r.id()?;
    if let Some(key) = keys.key(by) {
        if !key.verify_mac(&data[..body], &mac.0) {
            return Err(r.err("MAC does not verify"));
        }
    }
    Ok(())
}

/// Append who wrote the object and the MAC of everything before the MAC.
pub fn write_writer_mac(w: &mut Writer, by: &WrittenBy, key: &SecretKey) {
    by.encode(w);
    let mac = key.keyed_hash(&w.buf);
    w.id(&mac);
}

/// Write who wrote the object (for objects that state it before their body).
pub fn write_writer(w: &mut Writer, by: &WrittenBy) {
    by.encode(w);
}

/// Read who wrote the object (stated before the body).
pub fn read_writer(r: &mut Reader<'_>) -> Result<WrittenBy> {
    WrittenBy::decode(r)
}

/// Zero padding to `pack::padme(max(len, min))` (§9, §11): an object's size then tells little
/// about what it holds.
pub fn pad(w: &mut Writer, min: usize) {
    let len = w.buf.len();
    let target = pack::padded_len(len as u64, min as u64) as usize;
    w.buf.resize(target, 0);
}

/// The rest of `r` must be zero padding of exactly the length [`pad`] gives.
pub fn read_padding(r: &mut Reader<'_>, data: &[u8], min: usize) -> Result<()> {
    let end = r.pos();
    if data.len() as u64 != pack::padded_len(end as u64, min as u64) {
        return Err(r.err("padding has the wrong length"));
    }
    let rest = r.take(data.len() - end)?;
    if rest.iter().any(|&b| b != 0) {
        return Err(r.err("padding is not zeros"));
    }
    r.finish()
}

/// Write the common header.
pub fn write_header(w: &mut Writer, repo_id: &Id, kind: ObjectKind) {
    w.raw(&MAGIC);
    w.u32(FORMAT_VERSION);
    w.id(repo_id);
    w.u8(kind as u8);
}

/// Read and check the common header. `repo_id` of `None` accepts any repository (key files are
/// read before the repository id is known) and returns the one found.
pub fn read_header(r: &mut Reader<'_>, repo_id: Option<&Id>, kind: ObjectKind) -> Result<Id> {
    let magic = r.take(8)?;
    if magic != MAGIC {
        return Err(r.err("bad magic: not a vault object"));
    }
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let id = r.id()?;
    if let Some(expected) = repo_id {
        if &id != expected {
            return Err(r.err("belongs to another repository"));
        }
    }
    let k = r.u8()?;
    match ObjectKind::from_u8(k) {
        Some(found) if found == kind => Ok(id),
        Some(found) => Err(r.err(format!(
            "is a {} where a {} was expected",
            found.name(),
            kind.name()
        ))),
        None => Err(r.err(format!("unknown object kind {k}"))),
    }
}

/// Kind of a blob inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobType {
    Data = 1,
    Tree = 2,
}

impl BlobType {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(BlobType::Data),
            2 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// How a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl BlobEntry {
    /// Where the blob's stored bytes end; `None` when a hostile entry overflows.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.stored_len))
    }
}

/// Where a blob lives inside a pack's plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobEntry {
    pub id: Id,
    pub blob_type: BlobType,
    pub compression: Compression,
    /// Offset of the stored bytes from the start of the pack plaintext.
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// Encoded size of a [`BlobEntry`].
pub const BLOB_ENTRY_LEN: usize = 32 + 1 + 1 + 8 + 4 + 4;

impl BlobEntry {
    pub fn encode(&self, w: &mut Writer) {
        w.id(&self.id);
        w.u8(self.blob_type as u8);
        w.u8(self.compression as u8);
        w.u64(self.offset);
        w.u32(self.stored_len);
        w.u32(self.raw_len);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let id = r.id()?;
        let t = r.u8()?;
        let blob_type =
            BlobType::from_u8(t).ok_or_else(|| r.err(format!("unknown blob type {t}")))?;
        let c = r.u8()?;
        let compression =
            Compression::from_u8(c).ok_or_else(|| r.err(format!("unknown compression {c}")))?;
        let offset = r.u64()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        if compression == Compression::None && stored_len != raw_len {
            return Err(r.err("uncompressed blob with differing lengths"));
        }
        if raw_len > MAX_BLOB_LEN || stored_len > MAX_BLOB_LEN {
            return Err(r.err("blob length above the format limit"));
        }
        Ok(BlobEntry {
            id,
            blob_type,
            compression,
            offset,
            stored_len,
            raw_len,
        })
    }
}

/// No blob, compressed or not, may exceed 64 MiB (chunks are at most 16 MiB; a large folder's
/// listing is split over several tree blobs, §10). Writers check it before storing anything.
pub const MAX_BLOB_LEN: u32 = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let repo = Id::random();
        let mut w = Writer::new();
        write_header(&mut w, &repo, ObjectKind::Index);
        let v = w.into_vec();
        assert_eq!(v.len(), HEADER_LEN);
        assert_eq!(
            read_header(&mut Reader::new(&v, "t"), Some(&repo), ObjectKind::Index).unwrap(),
            repo
        );
        assert!(read_header(&mut Reader::new(&v, "t"), Some(&repo), ObjectKind::Pack).is_err());
        assert!(read_header(
            &mut Reader::new(&v, "t"),
            Some(&Id::random()),
            ObjectKind::Index
        )
        .is_err());
        let mut bad = v.clone();
        bad[8] = 8; // a version 8 object: no forget records, snapshots never deleted
        assert!(matches!(
            read_header(&mut Reader::new(&bad, "t"), None, ObjectKind::Index),
            Err(Error::UnsupportedVersion {
                found: 8,
                supported: FORMAT_VERSION
            })
        ));
    }
}
