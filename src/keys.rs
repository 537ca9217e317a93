//! The key hierarchy: subkeys derived from the repository master secret, one per purpose.

use crate::crypto::{DataIdentity, DataRecipient, SecretKey};
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
}

/// Every key a client with full access holds. No `Debug`, zeroed on drop.
pub struct Keys {
    pub repo_id: Id,
    pub master: SecretKey,
    pub blob_id: SecretKey,
    pub file_hash: SecretKey,
    pub chunker: SecretKey,
    pub snapshot_mac: SecretKey,
    pub snapshot_id: SecretKey,
    pub config_mac: SecretKey,
    pub identity: DataIdentity,
    pub recipient: DataRecipient,
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
            recipient: m.identity.recipient(),
            identity: m.identity,
            master: m.master,
        }
    }

    /// A new random key set for `init`.
    pub fn generate() -> Keys {
        Keys::from_material(KeyMaterial {
            repo_id: Id::random(),
            master: SecretKey::generate(),
            identity: DataIdentity::generate(),
        })
    }

    /// The material to wrap into a key file.
    pub fn material(&self) -> KeyMaterial {
        KeyMaterial {
            repo_id: self.repo_id,
            master: self.master.clone(),
            identity: DataIdentity::parse(&self.identity.to_secret_string())
                .expect("own identity re-parses"),
        }
    }

    /// Keyed id of a blob's plaintext.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        self.blob_id.keyed_hash(data)
    }
}
