//! The key hierarchy: subkeys derived from the repository master secret, one per purpose.

use crate::crypto::{DataIdentity, DataRecipient, SecretKey};
use crate::error::{Error, Result};
use crate::format::keyfile::KeyMaterial;
use crate::ids::Id;

/// Context strings for BLAKE3 derive_key. Changing one changes the format.
pub mod context {
    pub const BLOB_ID: &str = "vault v1 blob id";
    pub const FILE_HASH: &str = "vault v1 whole-file hash";
    pub const CHUNKER: &str = "vault v1 chunker gear table";
    pub const SNAPSHOT_MAC: &str = "vault v1 snapshot mac";
    pub const SNAPSHOT_ID: &str = "vault v1 snapshot id";
    pub const CONFIG_MAC: &str = "vault v1 config mac";
    pub const CACHE: &str = "vault v1 local cache";
    pub const NAME: &str = "vault v1 name hash";
    pub const SAMPLE: &str = "vault v1 file sample";
    pub const TREE_SPLIT: &str = "vault v1 tree split";
}

/// Every key a client holds. No `Debug`, zeroed on drop. A write-only device has no data
/// identity: it can encrypt to the data recipient but never decrypt.
pub struct Keys {
    pub repo_id: Id,
    pub master: SecretKey,
    pub blob_id: SecretKey,
    pub file_hash: SecretKey,
    pub chunker: SecretKey,
    pub snapshot_mac: SecretKey,
    pub snapshot_id: SecretKey,
    pub config_mac: SecretKey,
    /// Encrypts the rows of the local index (never leaves the device).
    pub cache: SecretKey,
    /// Keys the path hashes that index the local file-change cache.
    pub name: SecretKey,
    /// Keys the head-and-tail sample hash used to re-verify a file cheaply.
    pub sample: SecretKey,
    /// Keys the hash of entry names that decides where a large folder's listing is split into
    /// tree blobs (§10).
    pub tree_split: SecretKey,
    identity: Option<DataIdentity>,
    pub recipient: DataRecipient,
    pub index_identity: DataIdentity,
    pub index_recipient: DataRecipient,
}

fn clone_identity(id: &DataIdentity) -> DataIdentity {
    DataIdentity::parse(&id.to_secret_string()).expect("own identity re-parses")
}

impl Keys {
    pub fn from_material(m: KeyMaterial) -> Keys {
        let d = |c: &str| m.master.derive(c);
        Keys {
            repo_id: m.repo_id,
            blob_id: d(context::BLOB_ID),
            file_hash: d(context::FILE_HASH),
            chunker: d(context::CHUNKER),
            snapshot_mac: d(context::SNAPSHOT_MAC),
            snapshot_id: d(context::SNAPSHOT_ID),
            config_mac: d(context::CONFIG_MAC),
            cache: d(context::CACHE),
            name: d(context::NAME),
            sample: d(context::SAMPLE),
            tree_split: d(context::TREE_SPLIT),
            recipient: m.data_recipient,
            identity: m.data_identity,
            index_recipient: m.index_identity.recipient(),
            index_identity: m.index_identity,
            master: m.master,
        }
    }

    /// A new random key set for `init`.
    pub fn generate() -> Keys {
        let data = DataIdentity::generate();
        Keys::from_material(KeyMaterial {
            repo_id: Id::random(),
            master: SecretKey::generate(),
            data_recipient: data.recipient(),
            data_identity: Some(data),
            index_identity: DataIdentity::generate(),
        })
    }

    /// The material to wrap into a key file (a full key, or write-only when this device is).
    pub fn material(&self) -> KeyMaterial {
        KeyMaterial {
            repo_id: self.repo_id,
            master: self.master.clone(),
            data_identity: self.identity.as_ref().map(clone_identity),
            data_recipient: self.recipient.clone(),
            index_identity: clone_identity(&self.index_identity),
        }
    }

    /// Material for a write-only device profile: everything but the data identity.
    pub fn write_only_material(&self) -> KeyMaterial {
        KeyMaterial {
            data_identity: None,
            ..self.material()
        }
    }

    /// True when this device can only write.
    pub fn is_write_only(&self) -> bool {
        self.identity.is_none()
    }

    /// The identity that decrypts packs, trees and snapshots.
    pub fn data_identity(&self) -> Result<&DataIdentity> {
        self.identity.as_ref().ok_or(Error::WriteOnly)
    }

    /// Keyed id of a blob's plaintext.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        self.blob_id.keyed_hash(data)
    }
}
