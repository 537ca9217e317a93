//! An open repository: unlocking, keeping the local index in step with the repository, and
//! reading and writing every kind of object with the checks the format demands (headers, MACs,
//! keyed ids).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{valid_name, FileType, RangeReader, Store};
use crate::cache::{CachePlace, LocalCache};
use crate::compress;
use crate::crypto::{self, Passphrase, Unwrap};
use crate::error::{Error, Result};
use crate::format::config::{Config, ObjectLock};
use crate::format::index::{self, PackDesc, PackInfo};
pub use crate::format::keyfile::Method;
use crate::format::keyfile::{self, KeyInfo, KeyMaterial};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, Node, TreeSource};
use crate::format::{self, codec::Reader, BlobEntry, BlobType, Compression, ObjectKind};
use crate::ids::Id;
use crate::keys::Keys;
use zeroize::Zeroizing;

/// Plaintext content of the `VAULT` marker object.
pub fn marker_text(version: u32) -> String {
    format!("vault repository\nformat {version}\n")
}

fn parse_marker(data: &[u8], location: &str) -> Result<u32> {
    let s = std::str::from_utf8(data).map_err(|_| Error::NotARepository(location.into()))?;
    let mut lines = s.lines();
    if lines.next() != Some("vault repository") {
        return Err(Error::NotARepository(location.into()));
    }
    lines
        .next()
        .and_then(|l| l.strip_prefix("format "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::NotARepository(location.into()))
}

/// Check the plaintext marker: a repository, of a format version this build reads.
fn check_marker(store: &Store) -> Result<()> {
    let marker = match store.get(FileType::Marker, "") {
        Ok(m) => m,
        Err(Error::NotFound(_)) => return Err(Error::NoRepository(store.location())),
        Err(e) => return Err(e),
    };
    let version = parse_marker(&marker, &store.location())?;
    if version != format::FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: format::FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Options for creating a repository.
pub struct InitOptions {
    pub scrypt_log_n: u8,
    /// Retention for every object (S3 Object Lock), fixed for the repository's life.
    pub object_lock: Option<ObjectLock>,
    /// Chunk sizes (minimum, average, maximum) other than the defaults, within the bounds of
    /// §6; fixed for the repository's life.
    pub chunking: Option<(u32, u32, u32)>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            scrypt_log_n: crypto::DEFAULT_SCRYPT_LOG_N,
            object_lock: None,
            chunking: None,
        }
    }
}

/// First characters of the profile line in a write-only profile file.
pub const PROFILE_PREFIX: &str = "VAULT-WRITE-ONLY-PROFILE-3:";

/// Parse a write-only profile file's text.
pub fn parse_profile(text: &str) -> Result<KeyMaterial> {
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(PROFILE_PREFIX))
        .ok_or_else(|| Error::Invalid("not a vault device profile".into()))?;
    let bytes = Zeroizing::new(
        hex::decode(line).map_err(|_| Error::Invalid("the device profile is damaged".into()))?,
    );
    let (material, info) = keyfile::decode(&bytes)?;
    if info.method != Method::WriteOnly {
        return Err(Error::Invalid("not a write-only device profile".into()));
    }
    Ok(material)
}

/// How to unlock a repository.
pub enum Unlock<'a> {
    Passphrase(&'a Passphrase),
    /// An identity file, a recovery key or a device key.
    Identities(&'a crypto::Identities, &'a str),
}

impl Unlock<'_> {
    fn kind(&self) -> String {
        match self {
            Unlock::Passphrase(_) => "passphrase".into(),
            Unlock::Identities(_, kind) => kind.to_string(),
        }
    }
}

/// How a new key file is wrapped.
pub enum Wrap<'a> {
    Passphrase(&'a Passphrase, u8),
    Recipients(&'a crypto::KeyRecipients),
}

/// A key file as `key list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyFileInfo {
    pub id: String,
    /// From the public age header: passphrase, age identity or plugin.
    pub kind: &'static str,
    /// The key file this run unlocked with.
    pub current: bool,
}

/// The union of all index objects, held in memory (for `check`, which verifies the
/// repository itself rather than trusting the local index). About 100 bytes a blob: each pack's
/// table as decoded, and the blob ids sorted once for lookups.
#[derive(Default)]
pub struct Index {
    pub packs: Vec<PackInfo>,
    pack_pos: HashMap<Id, u32>,
    /// Each pack's blob entries, by position in `packs`.
    tables: Vec<Vec<BlobEntry>>,
    /// Every blob id with its first record (pack position, entry position), sorted by id by
    /// [`Self::finish`]; a blob recorded twice counts where it was recorded first.
    ids: Vec<(Id, u32, u32)>,
}

impl Index {
    /// Add a pack's description; a pack described again is taken as first described.
    pub fn add(&mut self, desc: PackDesc) {
        if self.pack_pos.contains_key(&desc.id) {
            return;
        }
        let pos = self.packs.len() as u32;
        self.packs.push(desc.info());
        self.pack_pos.insert(desc.id, pos);
        for (k, b) in desc.blobs.iter().enumerate() {
            self.ids.push((b.id, pos, k as u32));
        }
        self.tables.push(desc.blobs);
    }

    /// Sort the ids for lookups: call once everything is added.
    pub fn finish(&mut self) {
        // Stable: of two records of one blob, the first added stays.
        self.ids.sort_by_key(|e| e.0);
        self.ids.dedup_by(|later, first| later.0 == first.0);
        self.ids.shrink_to_fit();
    }

    fn find(&self, id: &Id) -> Option<&(Id, u32, u32)> {
        self.ids
            .binary_search_by(|e| e.0.cmp(id))
            .ok()
            .map(|i| &self.ids[i])
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    pub fn pack(&self, id: &Id) -> Option<&PackInfo> {
        self.pack_pos.get(id).map(|p| &self.packs[*p as usize])
    }

    /// The blobs the index places in the pack at position `pos` of [`Self::packs`], in offset
    /// order (for check --read-data).
    pub fn pack_entries(&self, pos: usize) -> Vec<BlobEntry> {
        let Some(table) = self.tables.get(pos) else {
            return Vec::new();
        };
        let mut v: Vec<BlobEntry> = table
            .iter()
            .enumerate()
            .filter(|(k, e)| {
                self.find(&e.id)
                    .is_some_and(|f| f.1 as usize == pos && f.2 as usize == *k)
            })
            .map(|(_, e)| *e)
            .collect();
        v.sort_by_key(|e| e.offset);
        v
    }
}

/// Readable snapshots (sorted by time) and the names of unreadable ones with the reason.
pub type SnapshotList = (Vec<(Id, Snapshot)>, Vec<(String, Error)>);

/// The local index, brought up to date with the repository.
struct Synced {
    cache: LocalCache,
    /// Index objects that could not be read, with the reason.
    index_errors: Vec<(String, Error)>,
}

/// Repository objects fetched at once when the local index catches up.
const FETCH_THREADS: usize = 8;

/// A pack's first bytes read to learn its age header and pack header: room for the age header
/// (one stanza, a few hundred bytes) and the first 64 KiB STREAM chunk with its tag.
const PACK_HEAD: u64 = 4096 + 65536 + 16;

/// An unlocked repository.
pub struct Repository {
    store: Store,
    keys: Arc<Keys>,
    config: Config,
    cache_place: CachePlace,
    /// Opened and synced on first use, so that commands that need no index never read it.
    synced: OnceLock<Synced>,
    sync_lock: Mutex<()>,
    /// Name of the key file this run unlocked with.
    unlocked_with: String,
    /// Snapshots found missing while listing (see `missing_snapshots`), and those of them the
    /// user acknowledged on this computer.
    missing_snapshots: Mutex<MissingSnapshots>,
}

#[derive(Default)]
struct MissingSnapshots {
    reported: std::collections::BTreeSet<Id>,
    acknowledged: std::collections::BTreeSet<Id>,
}

fn now() -> (i64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

impl Repository {
    /// Create a repository with one passphrase key file.
    pub fn init(store: Store, pass: &Passphrase, opts: &InitOptions) -> Result<Repository> {
        if pass.is_empty() {
            return Err(Error::Invalid("the passphrase must not be empty".into()));
        }
        let mut config = Config::new(Id::default(), now().0);
        config.object_lock = opts.object_lock;
        if let Some((min, avg, max)) = opts.chunking {
            (config.chunk_min, config.chunk_avg, config.chunk_max) = (min, avg, max);
            config
                .validate()
                .map_err(|_| Error::Invalid("chunk sizes out of range".into()))?;
        }
        store.backend().set_object_lock(opts.object_lock)?;
        store.create()?;
        if store.stat(FileType::Marker, "")?.is_some() {
            return Err(Error::AlreadyExists(store.location()));
        }
        let keys = Keys::generate();
        let info = KeyInfo {
            method: Method::Passphrase,
            created: now().0,
            label: "passphrase".into(),
        };
        let plain = keyfile::encode(&keys.material(), &info);
        let sealed = crypto::seal_with_passphrase(pass, opts.scrypt_log_n, &plain)?;
        let key_name = Id::random().to_hex();
        store.put(FileType::Key, &key_name, &sealed)?;
        config.repo_id = keys.repo_id;
        let ct = crypto::encrypt_to_all(
            &[&keys.recipient, &keys.index_recipient],
            &config.encode(&keys.config_mac),
        )?;
        store.put(FileType::Config, "", &ct)?;
        // The marker goes last: a folder without it is not (yet) a repository.
        store.put(
            FileType::Marker,
            "",
            marker_text(format::FORMAT_VERSION).as_bytes(),
        )?;
        Ok(Repository::new(store, keys, config, key_name))
    }

    /// True when the store holds a repository marker.
    pub fn exists(store: &Store) -> Result<bool> {
        Ok(store.stat(FileType::Marker, "")?.is_some())
    }

    /// Unlock with a passphrase.
    pub fn open(store: Store, pass: &Passphrase) -> Result<Repository> {
        Repository::unlock(store, &Unlock::Passphrase(pass))
    }

    /// Unlock with any method.
    pub fn unlock(store: Store, how: &Unlock<'_>) -> Result<Repository> {
        check_marker(&store)?;
        let mut material = None;
        let mut hostile = None;
        for (name, _) in store.list(FileType::Key)? {
            let data = store.get(FileType::Key, &name)?;
            let what = format!("key file {}", &name[..8]);
            let tried = match how {
                Unlock::Passphrase(p) => crypto::open_with_passphrase(p, &data, &what),
                Unlock::Identities(ids, _) => crypto::open_with_identities(ids, &data, &what),
            };
            match tried {
                Ok(Unwrap::Opened(plain)) => {
                    material = Some((keyfile::decode(&plain)?.0, name));
                    break;
                }
                Ok(Unwrap::WrongPassphrase | Unwrap::NotPassphrase) => continue,
                // A key file planted to make us spend gigabytes or hours: skip it, keep trying.
                Err(e @ Error::WorkFactorTooHigh(..)) => hostile = Some(e),
                // One damaged key file must not lock the owner out: try the others.
                Err(e) if e.is_corrupt() => continue,
                Err(e) => return Err(e),
            }
        }
        let Some((material, unlocked_with)) = material else {
            return Err(Self::why_locked(&store, how, hostile)?);
        };
        Repository::finish_open(store, Keys::from_material(material), unlocked_with)
    }

    /// Read the config with the unlocked keys.
    fn finish_open(store: Store, keys: Keys, unlocked_with: String) -> Result<Repository> {
        let ct = store.get(FileType::Config, "")?;
        // Write-only devices read the config with the index identity.
        let plain = match keys.data_identity() {
            Ok(id) => id.decrypt(&ct, "config")?,
            Err(_) => keys.index_identity.decrypt(&ct, "config")?,
        };
        let config = Config::decode(&plain, &keys.repo_id, &keys.config_mac)?;
        // A local copy of a locked repository cannot lock; everything else keeps the rule.
        let _ = store.backend().set_object_lock(config.object_lock);
        Ok(Repository::new(store, keys, config, unlocked_with))
    }

    fn new(store: Store, keys: Keys, config: Config, unlocked_with: String) -> Repository {
        Repository {
            store,
            keys: Arc::new(keys),
            config,
            cache_place: CachePlace::Memory,
            synced: OnceLock::new(),
            sync_lock: Mutex::new(()),
            unlocked_with,
            missing_snapshots: Mutex::new(Default::default()),
        }
    }

    /// Where the local index lives (in memory unless set). Takes effect at the next use.
    pub fn set_cache_place(&mut self, place: CachePlace) {
        self.cache_place = place;
        self.synced = OnceLock::new();
    }

    /// Open with a device profile's key material directly (write-only devices); no key file is
    /// involved. The config must verify under the profile's keys.
    pub fn open_with_material(store: Store, material: KeyMaterial) -> Result<Repository> {
        check_marker(&store)?;
        Repository::finish_open(store, Keys::from_material(material), String::new()).map_err(|e| {
            match e {
                Error::Corrupt { what, .. } if what == "config" => {
                    Error::Invalid("this device profile belongs to another repository".into())
                }
                other => other,
            }
        })
    }

    /// A write-only device profile for this repository, as text to save in a file.
    pub fn write_only_profile(&self, label: &str) -> Result<Zeroizing<String>> {
        if self.keys.is_write_only() {
            return Err(Error::WriteOnly);
        }
        let info = KeyInfo {
            method: Method::WriteOnly,
            created: now().0,
            label: label.to_string(),
        };
        let plain = keyfile::encode(&self.keys.write_only_material(), &info);
        Ok(Zeroizing::new(format!(
            "# vault write-only device profile for repository {} at {}\n# It can back up into the repository and read nothing back. Keep it private (0600).\n{PROFILE_PREFIX}{}\n",
            self.keys.repo_id.short(),
            self.store.location(),
            hex::encode(&plain[..])
        )))
    }

    /// The most helpful error when no key file opened.
    fn why_locked(store: &Store, how: &Unlock<'_>, hostile: Option<Error>) -> Result<Error> {
        for (name, _) in store.list(FileType::Revoked)? {
            let Ok(header) = store.get(FileType::Revoked, &name) else {
                continue;
            };
            let matched = match how {
                Unlock::Passphrase(p) => crypto::header_matches_passphrase(p, &header),
                Unlock::Identities(ids, _) => crypto::header_matches_identities(ids, &header),
            };
            if matched {
                return Ok(Error::KeyRemoved(how.kind()));
            }
        }
        Ok(match (hostile, how) {
            (Some(e), _) => e,
            (None, Unlock::Passphrase(_)) => Error::WrongPassphrase,
            (None, Unlock::Identities(..)) => Error::WrongKey(how.kind()),
        })
    }

    /// The key files, as far as their public headers tell.
    pub fn key_files(&self) -> Result<Vec<KeyFileInfo>> {
        let mut out = Vec::new();
        for (name, _) in self.store.list(FileType::Key)? {
            let data = self.store.get(FileType::Key, &name)?;
            out.push(KeyFileInfo {
                id: name[..8].to_string(),
                kind: crypto::stanza_kind(&data),
                current: name == self.unlocked_with,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Add an unlock method: a new key file wrapping this repository's keys. Only key files are
    /// written. Returns the new key file's short id.
    pub fn add_key(&self, wrap: &Wrap<'_>, method: Method, label: &str) -> Result<String> {
        if self.keys.is_write_only() {
            return Err(Error::WriteOnly);
        }
        let info = KeyInfo {
            method,
            created: now().0,
            label: label.to_string(),
        };
        let plain = keyfile::encode(&self.keys.material(), &info);
        let sealed = match wrap {
            Wrap::Passphrase(p, log_n) => {
                if p.is_empty() {
                    return Err(Error::Invalid("the passphrase must not be empty".into()));
                }
                crypto::seal_with_passphrase(p, *log_n, &plain)?
            }
            Wrap::Recipients(r) => crypto::seal_to_recipients(r, &plain)?,
        };
        let name = Id::random().to_hex();
        self.store.put(FileType::Key, &name, &sealed)?;
        Ok(name[..8].to_string())
    }

    /// Remove an unlock method by key file id prefix. Keeps the key file's public header under
    /// `revoked/` so the removed method is recognised (and refused) later; the secrets it wrapped
    /// are deleted. Refuses to remove the last key file.
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.store.list(FileType::Key)?;
        let matching: Vec<&String> = keys
            .iter()
            .map(|(n, _)| n)
            .filter(|n| prefix.len() >= 4 && n.starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        let name = match matching.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(Error::Invalid(format!(
                    "no key file {prefix:?}; see `vault key list`"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{prefix:?} matches several key files; give more digits"
                )))
            }
        };
        if keys.len() <= 1 {
            return Err(Error::Invalid(
                "refusing to remove the last key: the repository would be unreadable forever"
                    .into(),
            ));
        }
        let data = self.store.get(FileType::Key, &name)?;
        let header = crypto::header_only(&data)
            .ok_or_else(|| Error::corrupt(format!("key file {}", &name[..8]), "no age header"))?;
        self.store.put(FileType::Revoked, &name, &header)?;
        self.store.delete(FileType::Key, &name)?;
        Ok(name[..8].to_string())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn repo_id(&self) -> Id {
        self.keys.repo_id
    }

    fn synced(&self) -> Result<&Synced> {
        if let Some(s) = self.synced.get() {
            return Ok(s);
        }
        let _guard = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.synced.get().is_none() {
            let s = self.sync()?;
            let _ = self.synced.set(s);
        }
        self.synced
            .get()
            .ok_or_else(|| Error::Invalid("the local index could not be opened".into()))
    }

    /// The local index, opened and brought up to date with the repository on first use.
    pub fn cache(&self) -> Result<&LocalCache> {
        Ok(&self.synced()?.cache)
    }

    /// Index objects that could not be read when the local index was brought up to date.
    pub fn index_errors(&self) -> Result<&[(String, Error)]> {
        Ok(&self.synced()?.index_errors)
    }

    /// Open the local index and merge the index objects it has not seen. When one it had
    /// merged is gone from the repository (compacted or removed elsewhere), start over.
    fn sync(&self) -> Result<Synced> {
        let cache = LocalCache::open(&self.cache_place, &self.keys)?;
        let listed = self.names(FileType::Index)?;
        let listed_set: HashSet<&str> = listed.iter().map(|s| s.as_str()).collect();
        let mut merged = cache.index_objects()?;
        if merged.iter().any(|m| !listed_set.contains(m.as_str())) {
            cache.clear_index()?;
            merged.clear();
        }
        let new: Vec<String> = listed.into_iter().filter(|n| !merged.contains(n)).collect();
        let mut index_errors = Vec::new();
        for (name, r) in self.fetch_all(new, |name| {
            let packs = self.read_index_object(name)?;
            cache.add_packs(Some(name), &packs)
        }) {
            if let Err(e) = r {
                if matches!(e, Error::Cache { .. }) {
                    return Err(e);
                }
                index_errors.push((name, e));
            }
        }
        if !index_errors.is_empty() {
            for desc in self.unindexed_packs(|id| cache.has_pack(id))? {
                cache.add_packs(None, &[desc])?;
            }
        }
        Ok(Synced {
            cache,
            index_errors,
        })
    }

    fn names(&self, t: FileType) -> Result<Vec<String>> {
        Ok(self.store.list(t)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Run `f` on each name with a few threads (repository reads are mostly waiting).
    /// Results come back in input order.
    fn fetch_all<T: Send>(
        &self,
        names: Vec<String>,
        f: impl Fn(&str) -> Result<T> + Sync,
    ) -> Vec<(String, Result<T>)> {
        let next = AtomicUsize::new(0);
        let out = Mutex::new(Vec::with_capacity(names.len()));
        std::thread::scope(|scope| {
            for _ in 0..FETCH_THREADS.min(names.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(i) else { return };
                    let r = f(name);
                    out.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
                });
            }
        });
        let mut out = out.into_inner().unwrap_or_else(|p| p.into_inner());
        out.sort_by_key(|(i, _)| *i);
        out.into_iter()
            .map(|(i, r)| (names[i].clone(), r))
            .collect()
    }

    /// Every index object read straight from the repository into memory, for `check`. Damaged
    /// ones are returned with the reason; the packs they described are recovered from the packs'
    /// own tables.
    pub fn full_index(&self) -> Result<(Index, Vec<(String, Error)>)> {
        let names = self.names(FileType::Index)?;
        let mut index = Index::default();
        let mut errors = Vec::new();
        // A few at a time: the decoded objects are folded into the index as they come.
        for batch in names.chunks(FETCH_THREADS * 2) {
            for (name, r) in self.fetch_all(batch.to_vec(), |n| self.read_index_object(n)) {
                match r {
                    Ok(packs) => packs.into_iter().for_each(|p| index.add(p)),
                    Err(e) => errors.push((name, e)),
                }
            }
        }
        if !errors.is_empty() {
            for desc in self.unindexed_packs(|id| Ok(index.pack(id).is_some()))? {
                index.add(desc);
            }
        }
        index.finish();
        Ok((index, errors))
    }

    /// After a damaged index object: every stored pack that `known` does not know, described
    /// from the blob table inside the pack. Unreadable packs are left for `check` to report.
    fn unindexed_packs(&self, known: impl Fn(&Id) -> Result<bool>) -> Result<Vec<PackDesc>> {
        let mut out = Vec::new();
        for (name, size) in self.store.list(FileType::Pack)? {
            let id: Id = name.parse()?;
            if !known(&id)? {
                if let Ok(desc) = self.read_pack_table(&id, size) {
                    out.push(desc);
                }
            }
        }
        Ok(out)
    }

    /// True when the repository holds the blob (as far as the local index knows).
    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        self.cache()?.has_blob(id)
    }

    /// Read a pack's blob table straight from the pack (no index needed).
    pub fn read_pack_table(&self, id: &Id, object_len: u64) -> Result<PackDesc> {
        let name = id.to_hex();
        let what = format!("pack {}", id.short());
        // The age header and the first STREAM chunk (which holds the pack header) in one request;
        // the decrypting stream starts from these bytes.
        let head = self
            .store
            .get_range(FileType::Pack, &name, 0, PACK_HEAD.min(object_len))?;
        let payload_offset = crypto::age_payload_offset(&head)
            .ok_or_else(|| Error::corrupt(&what, "no age header"))?;
        // The plaintext length comes from the decrypting stream (age knows its own framing).
        let mut s = self.open_pack_from(id, self.pack_reader(id, object_len).with_head(head))?;
        let (plain_len, blobs) = read_table_from_end(&mut s.inner, &what)?;
        Ok(PackDesc {
            id: *id,
            pack_type: blobs.first().map(|b| b.blob_type).unwrap_or(BlobType::Data),
            object_len,
            payload_offset: payload_offset as u32,
            plain_len,
            blobs,
        })
    }

    pub fn read_index_object(&self, name: &str) -> Result<Vec<PackDesc>> {
        let ct = self.store.get(FileType::Index, name)?;
        let what = format!("index {}", &name[..8.min(name.len())]);
        let plain = self.keys.index_identity.decrypt(&ct, &what)?;
        index::decode(&plain, &self.keys.repo_id).map_err(|e| relabel(e, &what))
    }

    /// Store an index object describing `packs` (already stored) and merge it into the local
    /// index. Returns its name.
    pub fn put_index(&self, packs: &[PackDesc]) -> Result<String> {
        let name = Id::random().to_hex();
        let ct = self
            .keys
            .index_recipient
            .encrypt(&index::encode(&self.keys.repo_id, packs))?;
        self.store.put(FileType::Index, &name, &ct)?;
        self.cache()?.add_packs(Some(&name), packs)?;
        Ok(name)
    }

    /// Encrypt, MAC and store a snapshot. Returns its id.
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let plain = snap.encode(&self.keys.snapshot_mac);
        let id = self.keys.snapshot_id.keyed_hash(&plain);
        let ct = self.keys.recipient.encrypt(&plain)?;
        self.store.put(FileType::Snapshot, &id.to_hex(), &ct)?;
        if !self.keys.is_write_only() {
            self.cache()?.put_snapshot(&id, &plain)?;
        }
        Ok(id)
    }

    /// Read one snapshot, checking its MAC, header and that its name is its keyed id. The local
    /// index keeps snapshots already verified; their MAC is checked again on every read.
    pub fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        self.keys.data_identity()?;
        let cache = self.cache()?;
        if let Some(plain) = cache.snapshot(id)? {
            return Snapshot::decode(&plain, &self.keys.repo_id, &self.keys.snapshot_mac)
                .map_err(|e| relabel(e, &format!("snapshot {}", id.short())));
        }
        let (snap, plain) = self.fetch_snapshot(id)?;
        cache.put_snapshot(id, &plain)?;
        Ok(snap)
    }

    /// Download and verify one snapshot, bypassing the local index.
    fn fetch_snapshot(&self, id: &Id) -> Result<(Snapshot, Zeroizing<Vec<u8>>)> {
        let what = format!("snapshot {}", id.short());
        let ct = self.store.get(FileType::Snapshot, &id.to_hex())?;
        let plain = self.keys.data_identity()?.decrypt(&ct, &what)?;
        if self.keys.snapshot_id.keyed_hash(&plain) != *id {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        let snap = Snapshot::decode(&plain, &self.keys.repo_id, &self.keys.snapshot_mac)
            .map_err(|e| relabel(e, &what))?;
        Ok((snap, Zeroizing::new(plain)))
    }

    /// All readable snapshots sorted by time, plus the ones that failed to read. Only snapshots
    /// the local index has not seen are downloaded; ones it saw that are gone from the repository
    /// stay in it and are reported (`missing_snapshots`). With `verify_stored`, every snapshot is
    /// downloaded and verified (for `check`).
    pub fn snapshots_with(&self, verify_stored: bool) -> Result<SnapshotList> {
        self.keys.data_identity()?;
        let cache = self.cache()?;
        let names = self.names(FileType::Snapshot)?;
        let mut listed = HashSet::new();
        let mut ok = vec![];
        let mut bad = vec![];
        for (name, r) in self.fetch_all(names, |n| {
            let id: Id = n.parse()?;
            if verify_stored {
                self.fetch_snapshot(&id).map(|(s, _)| (id, s))
            } else {
                self.read_snapshot(&id).map(|s| (id, s))
            }
        }) {
            match r {
                Ok((id, s)) => {
                    listed.insert(id);
                    ok.push((id, s));
                }
                Err(e @ Error::Cache { .. }) => return Err(e),
                Err(e) => bad.push((name, e)),
            }
        }
        // vault never deletes a snapshot (§11): one that the local index saw, or that a listed
        // snapshot names as `previous`, and that the repository no longer has was deleted by
        // someone else or rolled back with the storage.
        // The local index keeps the ones it saw, so that every run says so until someone looks.
        // (`check` asks too: what this computer saw is a fact about the repository's past, not
        // data taken from the cache.) Present but unreadable ones are reported as damaged.
        let unreadable: HashSet<&str> = bad.iter().map(|(n, _)| n.as_str()).collect();
        let gone = |p: &Id| !listed.contains(p) && !unreadable.contains(p.to_hex().as_str());
        let mut missing: Vec<Id> = cache.snapshot_ids()?.into_iter().filter(gone).collect();
        missing.extend(ok.iter().filter_map(|(_, s)| s.previous).filter(gone));
        if !missing.is_empty() {
            let acked = cache.acknowledged()?;
            let mut m = self.missing();
            for id in missing {
                if acked.contains(&id) {
                    m.acknowledged.insert(id);
                } else {
                    m.reported.insert(id);
                }
            }
        }
        ok.sort_by_key(|(_, s)| (s.time, s.time_nanos, s.sequence));
        Ok((ok, bad))
    }

    fn missing(&self) -> std::sync::MutexGuard<'_, MissingSnapshots> {
        self.missing_snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshots that listing found missing: the local index had seen them, or a listed snapshot
    /// names them as its `previous`, and the repository no longer has them. vault never deletes
    /// snapshots, so someone deleted them or the storage was rolled back. Every listing reports
    /// them again until the user acknowledges them on this computer
    /// (`acknowledge_missing_snapshots`).
    pub fn missing_snapshots(&self) -> Vec<Id> {
        self.missing().reported.iter().copied().collect()
    }

    /// Missing snapshots not reported because the user acknowledged them on this computer.
    pub fn acknowledged_missing_snapshots(&self) -> Vec<Id> {
        self.missing().acknowledged.iter().copied().collect()
    }

    /// Stop reporting the snapshots `missing_snapshots` returned, on this computer only: the
    /// user has looked into why they are gone. Other computers, and this one with a new local
    /// index, still report them.
    pub fn acknowledge_missing_snapshots(&self) -> Result<Vec<Id>> {
        let ids = self.missing_snapshots();
        self.cache()?.acknowledge_missing(&ids)?;
        let mut m = self.missing();
        for id in &ids {
            m.reported.remove(id);
            m.acknowledged.insert(*id);
        }
        Ok(ids)
    }

    /// [`Self::snapshots_with`] through the local index.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        self.snapshots_with(false)
    }

    /// Resolve `latest` or a hex prefix (at least 4 digits) to one snapshot.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            let (mut all, bad) = self.snapshots()?;
            if let Some(last) = all.pop() {
                return Ok(last);
            }
            if let Some((_, e)) = bad.into_iter().next() {
                return Err(e);
            }
            return Err(Error::SnapshotNotFound(
                "latest (the repository has none)".into(),
            ));
        }
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.len() < 4 || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "snapshot must be `latest` or at least 4 hex digits of its id, not {spec:?}"
            )));
        }
        let matches: Vec<String> = self
            .store
            .list(FileType::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&spec_l))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound(spec.into())),
            1 => {
                let id: Id = matches[0].parse()?;
                Ok((id, self.read_snapshot(&id)?))
            }
            _ => Err(Error::AmbiguousSnapshot(spec.into())),
        }
    }

    /// The repository's tree blobs, for reading folders with [`tree::FolderCursor`].
    pub fn trees<'a>(&'a self, readers: &'a mut PackReaders) -> RepoTrees<'a> {
        RepoTrees {
            repo: self,
            readers,
        }
    }

    /// One entry of the folder whose top tree blob is `top`, without reading the others.
    pub fn lookup(&self, top: &Id, name: &[u8], readers: &mut PackReaders) -> Result<Option<Node>> {
        tree::lookup(&mut self.trees(readers), top, name)
    }

    /// Read, decompress and verify one blob.
    pub fn read_blob(&self, id: &Id, want: BlobType, readers: &mut PackReaders) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_blob_into(id, want, readers, &mut out)?;
        Ok(out)
    }

    /// `read_blob` into `out` (replacing its contents), reusing its allocation and the
    /// readers' scratch buffer: a restore reads thousands of blobs of up to 4 MiB.
    pub fn read_blob_into(
        &self,
        id: &Id,
        want: BlobType,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let (pack, entry) = self
            .cache()?
            .blob(id)?
            .ok_or_else(|| Error::NotFound(format!("blob {}", id.short())))?;
        if entry.blob_type != want {
            return Err(Error::corrupt(
                format!("blob {}", id.short()),
                "has the wrong type",
            ));
        }
        match entry.compression {
            Compression::None => {
                readers.read_into(self, &pack, entry.offset, entry.stored_len as usize, out)?
            }
            Compression::Zstd => {
                let mut stored = std::mem::take(&mut readers.scratch);
                let r = readers.read_into(
                    self,
                    &pack,
                    entry.offset,
                    entry.stored_len as usize,
                    &mut stored,
                );
                let r = r.and_then(|_| self.decompress_blob(&entry, &stored, out));
                readers.scratch = stored;
                r?
            }
        }
        self.check_blob(&entry, out)
    }

    /// Turn stored bytes into verified plaintext.
    pub fn decode_blob(&self, entry: &BlobEntry, stored: Vec<u8>) -> Result<Vec<u8>> {
        let plain = match entry.compression {
            Compression::None => stored,
            Compression::Zstd => {
                let mut out = Vec::new();
                self.decompress_blob(entry, &stored, &mut out)?;
                out
            }
        };
        self.check_blob(entry, &plain)?;
        Ok(plain)
    }

    /// Decompress a blob's stored bytes into `out`, bounded by its recorded size.
    fn decompress_blob(&self, entry: &BlobEntry, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let what = format!("blob {}", entry.id.short());
        compress::decompress_into(stored, entry.raw_len as usize, out, &what)
    }

    /// A blob is used only when its plaintext matches its keyed id (§12).
    fn check_blob(&self, entry: &BlobEntry, plain: &[u8]) -> Result<()> {
        if self.keys.blob_id(plain) != entry.id {
            return Err(Error::corrupt(
                format!("blob {}", entry.id.short()),
                "content does not match its id",
            ));
        }
        Ok(())
    }

    /// Open a pack for seekable plaintext reads, checking its object header.
    pub fn open_pack(&self, pack: &PackInfo) -> Result<PackStream> {
        self.open_pack_from(&pack.id, self.pack_reader(&pack.id, pack.object_len))
    }

    fn pack_reader(&self, id: &Id, object_len: u64) -> RangeReader {
        RangeReader::new(
            self.store.clone(),
            FileType::Pack,
            id.to_hex(),
            object_len,
            1 << 20,
        )
    }

    fn open_pack_from(&self, id: &Id, rr: RangeReader) -> Result<PackStream> {
        let what = format!("pack {}", id.short());
        let mut s = self.keys.data_identity()?.open(rr, &what)?;
        let mut hdr = [0u8; format::HEADER_LEN];
        s.read_exact(&mut hdr)
            .map_err(|e| crypto::read_error(&what, e))?;
        format::read_header(
            &mut Reader::new(&hdr, "pack"),
            Some(&self.keys.repo_id),
            ObjectKind::Pack,
        )
        .map_err(|e| relabel(e, &what))?;
        Ok(PackStream { inner: s, what })
    }
}

/// Tree blobs read from a repository, each verified (§12), for [`tree::FolderCursor`].
pub struct RepoTrees<'a> {
    repo: &'a Repository,
    readers: &'a mut PackReaders,
}

impl TreeSource for RepoTrees<'_> {
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
        self.repo.read_blob(id, BlobType::Tree, self.readers)
    }
}

/// Replace the generic label of a Corrupt error with a specific one.
fn relabel(e: Error, what: &str) -> Error {
    match e {
        Error::Corrupt { detail, .. } => Error::corrupt(what, detail),
        other => other,
    }
}

/// Decrypting reader of one pack.
/// Read a pack's table from its end through a decrypting stream (the object header is checked
/// by whoever opened the stream). Returns the plaintext length and the table.
pub fn read_table_from_end<S: Read + Seek>(s: &mut S, what: &str) -> Result<(u64, Vec<BlobEntry>)> {
    let io = |e: std::io::Error| crypto::read_error(what, e);
    let len = s.seek(SeekFrom::End(0)).map_err(io)?;
    if len < (format::HEADER_LEN + 4) as u64 {
        return Err(Error::corrupt(what, "too short for a pack"));
    }
    let mut last = [0u8; 4];
    s.seek(SeekFrom::Start(len - 4)).map_err(io)?;
    s.read_exact(&mut last).map_err(io)?;
    let n = format::pack::decode_count(&last, len).map_err(|e| relabel(e, what))?;
    let mut trailer = vec![0u8; format::pack::trailer_len(n)];
    s.seek(SeekFrom::Start(len - trailer.len() as u64))
        .map_err(io)?;
    s.read_exact(&mut trailer).map_err(io)?;
    let blobs = format::pack::decode_table(&trailer, len).map_err(|e| relabel(e, what))?;
    Ok((len, blobs))
}

pub struct PackStream {
    inner: age::stream::StreamReader<RangeReader>,
    what: String,
}

impl PackStream {
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_at_into(offset, len, &mut buf)?;
        Ok(buf)
    }

    /// `read_at` into `buf`, which ends up `len` bytes long; its allocation is reused.
    pub fn read_at_into(&mut self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        self.inner
            .seek(SeekFrom::Start(offset))
            .map_err(|e| crypto::read_error(&self.what, e))?;
        // Only bytes never used before are zeroed: a reused buffer costs no memset.
        buf.resize(len, 0);
        self.inner
            .read_exact(buf)
            .map_err(|e| crypto::read_error(&self.what, e))
    }
}

/// A few open pack streams, reused across blob reads (one per worker thread).
#[derive(Default)]
pub struct PackReaders {
    open: Vec<(Id, PackStream)>,
    /// Compressed bytes on their way to decompression, reused.
    scratch: Vec<u8>,
}

const OPEN_PACKS: usize = 2;

impl PackReaders {
    pub fn read(
        &mut self,
        repo: &Repository,
        pack: &PackInfo,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(repo, pack, offset, len, &mut buf)?;
        Ok(buf)
    }

    pub fn read_into(
        &mut self,
        repo: &Repository,
        pack: &PackInfo,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let pos = match self.open.iter().position(|(id, _)| *id == pack.id) {
            Some(p) => p,
            None => {
                let s = repo.open_pack(pack)?;
                if self.open.len() >= OPEN_PACKS {
                    self.open.remove(0);
                }
                self.open.push((pack.id, s));
                self.open.len() - 1
            }
        };
        let r = self.open[pos].1.read_at_into(offset, len, buf);
        if r.is_err() {
            // A failed chunk leaves the stream in an unknown state; reopen next time.
            self.open.remove(pos);
        }
        r
    }
}

/// Check a many-object name before using it as a path component.
pub fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid object name {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    #[test]
    fn a_pack_table_read_from_the_pack_matches_the_index_in_two_requests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(LocalBackend::new(dir.path()))).unwrap();
        let opts = InitOptions {
            scrypt_log_n: 10,
            ..Default::default()
        };
        let repo = Repository::init(store, &Passphrase::new("pw".into()), &opts).unwrap();
        // Incompressible blobs spanning many STREAM chunks: the table is far from the head.
        let blobs = (0..3)
            .map(|_| {
                let mut d = vec![0u8; 1_000_000];
                crypto::fill_random(&mut d);
                (BlobType::Data, d)
            })
            .collect();
        crate::blobwriter::write_blobs(&repo, blobs).unwrap();
        let indexes = repo.store().list(FileType::Index).unwrap();
        assert_eq!(indexes.len(), 1);
        let indexed = repo.read_index_object(&indexes[0].0).unwrap();
        assert_eq!(indexed.len(), 1);
        let want = &indexed[0];
        let before = repo.store().stats().get;
        let got = repo.read_pack_table(&want.id, want.object_len).unwrap();
        assert_eq!(&got, want);
        // The head (age header and pack header) and the tail (table); the head is not re-read.
        assert_eq!(repo.store().stats().get - before, 2);
    }
}
