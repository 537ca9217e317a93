//! The key hierarchy: subkeys derived from the repository master secret, one per purpose.

use crate::crypto::{DataIdentity, DataRecipient, SecretKey};
use crate::error::{Error, Result};
use crate::format::keyfile::KeyMaterial;
use crate::format::{device_mac_key, DeviceId, MacKeys, WrittenBy};
use crate::ids::Id;

/// Context strings for BLAKE3 derive_key. Changing one changes the format.
pub mod context {
    /// The writer secret `W`, from the master secret `M` (§4.1).
    pub const WRITER: &str = "vault v1 writer secret";
    // From W: every device holds these.
    pub const BLOB_ID: &str = "vault v1 blob id";
    pub const FILE_HASH: &str = "vault v1 whole-file hash";
    pub const CHUNKER: &str = "vault v1 chunker gear table";
    pub const SNAPSHOT_ID: &str = "vault v1 snapshot id";
    pub const TREE_SPLIT: &str = "vault v1 tree split";
    pub const CONFIG_CHECK: &str = "vault v1 config check";
    // From M: full devices only.
    pub const SNAPSHOT_MAC: &str = "vault v1 snapshot mac";
    pub const INDEX_MAC: &str = "vault v1 index mac";
    pub const CONFIG_MAC: &str = "vault v1 config mac";
    pub const FORGET_MAC: &str = "vault v1 forget mac";
    pub const PRUNE_MAC: &str = "vault v1 prune mac";
    pub const KEY_FILE_MAC: &str = "vault v1 key file mac";
    /// Keys `keyed_blake3(K, device id)`: each write-only device's MAC key.
    pub const DEVICE_MAC: &str = "vault v1 device mac";
    // From the device root (M on a full device, W on a write-only one).
    pub const CACHE: &str = "vault v1 local cache";
    pub const NAME: &str = "vault v1 name hash";
    pub const SAMPLE: &str = "vault v1 file sample";
}

/// The keys only a full device holds: the master secret and the MACs that write-only devices
/// cannot make. No `Debug`.
pub struct FullKeys {
    master: SecretKey,
    pub snapshot_mac: SecretKey,
    pub index_mac: SecretKey,
    pub config_mac: SecretKey,
    /// MACs forget records (§11.1): a write-only device cannot make a deletion look legitimate.
    pub forget_mac: SecretKey,
    /// MACs condemn markers (§13.2).
    pub prune_mac: SecretKey,
    /// MACs the public part of key files (§4.3): which method each one is.
    pub key_file_mac: SecretKey,
    /// Derives each write-only device's MAC key from its id.
    pub device_mac: SecretKey,
}

/// Every key a client holds. No `Debug`, zeroed on drop. A write-only device has neither the
/// master secret nor the data identity: it can encrypt to the data recipient but never decrypt,
/// and what it writes is marked as written by its class (§4.1).
pub struct Keys {
    pub repo_id: Id,
    writer: SecretKey,
    full: Option<FullKeys>,
    pub blob_id: SecretKey,
    pub file_hash: SecretKey,
    pub chunker: SecretKey,
    pub snapshot_id: SecretKey,
    pub config_check: SecretKey,
    /// On a write-only device: its id and the key it MACs its snapshots and index objects with.
    device: Option<(DeviceId, SecretKey)>,
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
        // A key file of a full method carries M; a write-only profile carries W (§4.3).
        let (writer, full) = match m.data_identity {
            Some(_) => {
                let master = m.secret;
                let full = FullKeys {
                    snapshot_mac: master.derive(context::SNAPSHOT_MAC),
                    index_mac: master.derive(context::INDEX_MAC),
                    config_mac: master.derive(context::CONFIG_MAC),
                    forget_mac: master.derive(context::FORGET_MAC),
                    prune_mac: master.derive(context::PRUNE_MAC),
                    key_file_mac: master.derive(context::KEY_FILE_MAC),
                    device_mac: master.derive(context::DEVICE_MAC),
                    master,
                };
                (full.master.derive(context::WRITER), Some(full))
            }
            None => (m.secret, None),
        };
        let root = full.as_ref().map_or(&writer, |f| &f.master);
        let (cache, name, sample) = (
            root.derive(context::CACHE),
            root.derive(context::NAME),
            root.derive(context::SAMPLE),
        );
        let w = |c: &str| writer.derive(c);
        Keys {
            repo_id: m.repo_id,
            blob_id: w(context::BLOB_ID),
            file_hash: w(context::FILE_HASH),
            chunker: w(context::CHUNKER),
            snapshot_id: w(context::SNAPSHOT_ID),
            tree_split: w(context::TREE_SPLIT),
            config_check: w(context::CONFIG_CHECK),
            cache,
            name,
            sample,
            recipient: m.data_recipient,
            identity: m.data_identity,
            index_recipient: m.index_identity.recipient(),
            index_identity: m.index_identity,
            device: if full.is_some() { None } else { m.device },
            writer,
            full,
        }
    }

    /// A new random key set for `init`.
    pub fn generate() -> Keys {
        let data = DataIdentity::generate();
        Keys::from_material(KeyMaterial {
            repo_id: Id::random(),
            secret: SecretKey::generate(),
            data_recipient: data.recipient(),
            data_identity: Some(data),
            index_identity: DataIdentity::generate(),
            device: None,
        })
    }

    /// The material to wrap into a key file (a full key, or write-only when this device is).
    pub fn material(&self) -> KeyMaterial {
        KeyMaterial {
            repo_id: self.repo_id,
            secret: self
                .full
                .as_ref()
                .map_or(&self.writer, |f| &f.master)
                .clone(),
            data_identity: self.identity.as_ref().map(clone_identity),
            data_recipient: self.recipient.clone(),
            index_identity: clone_identity(&self.index_identity),
            device: self.device.as_ref().map(|(id, k)| (*id, k.clone())),
        }
    }

    /// Material for a new write-only device profile: the writer secret instead of the master
    /// secret, no data identity, and a new device id with its MAC key (§4.1).
    pub fn write_only_material(&self) -> Result<KeyMaterial> {
        let full = self.full()?;
        let id = DeviceId::random();
        Ok(KeyMaterial {
            repo_id: self.repo_id,
            secret: self.writer.clone(),
            data_identity: None,
            data_recipient: self.recipient.clone(),
            index_identity: clone_identity(&self.index_identity),
            device: Some((id, device_mac_key(&full.device_mac, &id))),
        })
    }

    /// True when this device can only write.
    pub fn is_write_only(&self) -> bool {
        self.full.is_none()
    }

    /// The keys of a full device.
    pub fn full(&self) -> Result<&FullKeys> {
        self.full.as_ref().ok_or(Error::WriteOnly)
    }

    /// Who this device writes snapshots and index objects as.
    pub fn written_by(&self) -> WrittenBy {
        match &self.device {
            Some((id, _)) if self.full.is_none() => WrittenBy::Device(*id),
            _ => WrittenBy::Full,
        }
    }

    /// The key that MACs a snapshot (or with `index`, an index object) written `by` someone:
    /// a full device can make every writer's, a write-only device only its own.
    pub fn mac_key(&self, by: &WrittenBy, index: bool) -> Result<SecretKey> {
        match (by, &self.full, &self.device) {
            (WrittenBy::Full, Some(f), _) => Ok(if index {
                f.index_mac.clone()
            } else {
                f.snapshot_mac.clone()
            }),
            (WrittenBy::Device(id), Some(f), _) => Ok(device_mac_key(&f.device_mac, id)),
            (WrittenBy::Device(id), None, Some((own, k))) if own == id => Ok(k.clone()),
            _ => Err(Error::WriteOnly),
        }
    }

    pub fn snapshot_macs(&self) -> MacKeys<'_> {
        self.macs(false)
    }

    pub fn index_macs(&self) -> MacKeys<'_> {
        self.macs(true)
    }

    fn macs(&self, index: bool) -> MacKeys<'_> {
        MacKeys {
            full: self
                .full
                .as_ref()
                .map(|f| if index { &f.index_mac } else { &f.snapshot_mac }),
            devices: self.full.as_ref().map(|f| &f.device_mac),
            own: self.device.as_ref().map(|(id, k)| (*id, k)),
        }
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
