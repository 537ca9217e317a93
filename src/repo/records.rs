//! Reading and writing the maintenance records (§11.1 forget records, §13.2 condemn markers).

use std::collections::HashSet;

use super::{relabel, Repository};
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::records::{CondemnMarker, ForgetRecord};
use crate::ids::Id;

/// Every forget record of the repository, read and verified.
#[derive(Default)]
pub struct Forgotten {
    /// Snapshots some verified record names.
    pub ids: HashSet<Id>,
    /// The records' object names (a forget merges them into one, §11.1).
    pub records: Vec<Id>,
    /// Records that failed to read or verify, with the reason: they count for nothing.
    pub bad: Vec<(Id, Error)>,
}

/// Readable condemn markers, and the names of unreadable ones with the reason.
pub type Markers = (Vec<Marker>, Vec<(Id, Error)>);

/// One condemn marker with its object name and when the store wrote it (store clock).
pub struct Marker {
    pub name: Id,
    pub modified: i64,
    pub marker: CondemnMarker,
}

impl Repository {
    /// Read every forget record (full devices only: they are encrypted to the data key).
    pub fn forgotten(&self) -> Result<Forgotten> {
        let full = self.keys.full()?;
        let identity = self.keys.data_identity()?;
        let names = self.names(FileType::Forgotten)?;
        let mut out = Forgotten::default();
        for (name, r) in self.fetch_all(names, |id| {
            let what = format!("forget record {}", id.short());
            let ct = self.store.get(FileType::Forgotten, &id.to_hex())?;
            let plain = identity.decrypt(&ct, &what)?;
            ForgetRecord::decode(&plain, &self.keys.repo_id, &full.forget_mac)
                .map_err(|e| relabel(e, &what))
        }) {
            match r {
                Ok(rec) => {
                    out.ids.extend(rec.snapshots);
                    out.records.push(name);
                }
                Err(e) => out.bad.push((name, e)),
            }
        }
        Ok(out)
    }

    /// Store a forget record under a random name. Returns the name.
    pub fn write_forget_record(&self, rec: &ForgetRecord) -> Result<Id> {
        let full = self.keys.full()?;
        let plain = rec.encode(&self.keys.repo_id, &full.forget_mac);
        let ct = self.keys.recipient.encrypt(&plain)?;
        let name = Id::random();
        self.store.put(FileType::Forgotten, &name.to_hex(), &ct)?;
        Ok(name)
    }

    /// Read every condemn marker. A full device checks each MAC and reports failures apart; a
    /// write-only device cannot, and takes them as they are (it only ever avoids packs for one).
    pub fn condemn_markers(&self) -> Result<Markers> {
        let listed = self.store.list_dated(FileType::Condemned)?;
        let names: Vec<Id> = listed.iter().map(|(n, _, _)| *n).collect();
        let key = self.keys.full().ok().map(|f| &f.prune_mac);
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for ((name, r), (_, _, modified)) in self
            .fetch_all(names, |id| self.read_condemn_marker(id, key))
            .into_iter()
            .zip(listed)
        {
            match r {
                Ok(marker) => ok.push(Marker {
                    name,
                    modified,
                    marker,
                }),
                Err(e) => bad.push((name, e)),
            }
        }
        Ok((ok, bad))
    }

    pub(crate) fn read_condemn_marker(
        &self,
        id: &Id,
        key: Option<&crate::crypto::SecretKey>,
    ) -> Result<CondemnMarker> {
        let what = format!("condemn marker {}", id.short());
        let ct = self.store.get(FileType::Condemned, &id.to_hex())?;
        let plain = self.keys.index_identity.decrypt(&ct, &what)?;
        CondemnMarker::decode(&plain, &self.keys.repo_id, key).map_err(|e| relabel(e, &what))
    }

    /// Store a condemn marker under `name` (random, chosen by the caller). Returns the name.
    pub fn write_condemn_marker(&self, name: Id, m: &CondemnMarker) -> Result<Id> {
        let full = self.keys.full()?;
        let plain = m.encode(&self.keys.repo_id, &full.prune_mac);
        let ct = self.keys.index_recipient.encrypt(&plain)?;
        self.store.put(FileType::Condemned, &name.to_hex(), &ct)?;
        Ok(name)
    }
}
