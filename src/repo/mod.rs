//! An unlocked repository: one facade over its parts, each in a file of its own (unlocking and
//! key files in `keys`, the index in `index`, pack and blob reading in `packs`, snapshots in
//! `crate::snapshots`), with its store, config and local index.

mod index;
mod keys;
mod packs;
mod plan;
mod records;
pub use crate::format::keyfile::Method;
pub use index::Index;
pub use keys::{parse_profile, KeyFileInfo, Unlock, Wrap, PROFILE_PREFIX};
pub use packs::{read_table_from_end, PackReaders, PackStream, RepoTrees};
pub use plan::{PlanCounters, PlanFigures, PlanReader, AHEAD_BUDGET, MERGE_GAP_CHUNKS};
pub use records::{Forgotten, Marker};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{valid_name, FileType, Store};
use crate::cache::{CachePlace, LocalCache};
use crate::crypto::{self, Passphrase};
use crate::error::{Error, Result};
use crate::format;
use crate::format::config::{Config, ObjectLock, MAX_LOCK_DAYS};
use crate::format::keyfile::{self, KeyInfo};
use crate::format::snapshot::Snapshot;
use crate::ids::Id;
use crate::keys::Keys;

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

/// The local index, brought up to date with the repository.
struct Synced {
    cache: LocalCache,
    /// Index objects that could not be read, with the reason.
    index_errors: Vec<(Id, Error)>,
}

/// Repository objects fetched at once when the local index catches up.
pub(crate) const FETCH_THREADS: usize = 8;

/// Readable snapshots (sorted by time) and the names of unreadable ones with the reason.
pub type SnapshotList = (Vec<(Id, Snapshot)>, Vec<(Id, Error)>);

/// Snapshots found missing from the repository (`crate::snapshots`): reported on every listing
/// until acknowledged on this computer.
#[derive(Default)]
pub(crate) struct MissingSnapshots {
    pub(crate) reported: std::collections::BTreeSet<Id>,
    pub(crate) acknowledged: std::collections::BTreeSet<Id>,
}

/// An unlocked repository.
pub struct Repository {
    pub(crate) store: Store,
    pub(crate) keys: Arc<Keys>,
    config: Config,
    cache_place: CachePlace,
    /// Opened and synced on first use, so that commands that need no index never read it.
    synced: OnceLock<Synced>,
    sync_lock: Mutex<()>,
    /// The key file this run unlocked with (none for a device profile's own key material).
    unlocked_with: Option<Id>,
    /// The scrypt work factor of that key file when above the default: every unlock pays it.
    pub(crate) costly_unlock: Option<u8>,
    /// Snapshots found missing while listing (see `missing_snapshots`), and those of them the
    /// user acknowledged on this computer.
    pub(crate) missing_snapshots: Mutex<MissingSnapshots>,
    /// Objects whose first copy could not be used this run, their second copy having served
    /// (§2.2): said at the end of the command, so that the damage is repaired while the second
    /// copy is still there.
    damaged: Mutex<Vec<DamagedCopy>>,
}

/// An object of which one copy (§2.2) could not be used: the other served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedCopy {
    /// The kind of the copy that failed: a first copy (`Config`, `Snapshot`, `Pack`), or a
    /// second one (found by `check` and `repair`).
    pub kind: FileType,
    /// The object's name (none for the config).
    pub name: Option<Id>,
    pub error: String,
}

impl DamagedCopy {
    /// How users are told which object it is: "snapshot 1a2b3c4d", "tree pack …", "config".
    pub fn what(&self) -> String {
        let kind = match self.kind {
            FileType::Pack | FileType::TreePackCopy => "tree pack",
            FileType::Snapshot | FileType::SnapshotCopy => "snapshot",
            _ => "config",
        };
        match self.name {
            Some(n) => format!("{kind} {}", n.short()),
            None => kind.to_string(),
        }
    }

    /// True when it is the first copy that failed.
    pub fn is_first(&self) -> bool {
        self.kind.copy().is_some()
    }
}

/// Errors after which an object's second copy is tried (§2.2): anything that may be damage or
/// loss of the first, not a local failure or a missing key.
fn try_second_copy(e: &Error) -> bool {
    !matches!(
        e,
        Error::Cache { .. } | Error::Interrupted | Error::WriteOnly | Error::WrongKey(_)
    )
}

/// Read and decode an object of a kind kept twice (§2.2): the first copy, or when it cannot be
/// read or decoded, the second. Returns the first copy's error when the second served; when
/// both fail, the first copy's error.
pub(crate) fn get_either<T>(
    store: &Store,
    t: FileType,
    name: &str,
    decode: impl Fn(Vec<u8>) -> Result<T>,
) -> Result<(T, Option<Error>)> {
    let e = match store.get(t, name).and_then(&decode) {
        Ok(v) => return Ok((v, None)),
        Err(e) => e,
    };
    let Some(copy) = t.copy().filter(|_| try_second_copy(&e)) else {
        return Err(e);
    };
    match store.get(copy, name).and_then(&decode) {
        Ok(v) => Ok((v, Some(e))),
        Err(_) => Err(e),
    }
}

/// The time now: Unix seconds and nanoseconds.
pub fn now() -> (i64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// Replace the generic label of a Corrupt error with a specific one.
pub(crate) fn relabel(e: Error, what: &str) -> Error {
    match e {
        Error::Corrupt { detail, .. } => Error::corrupt(what, detail),
        other => other,
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
        if let Some(lock) = opts.object_lock {
            if !(1..=MAX_LOCK_DAYS).contains(&lock.days) {
                return Err(Error::Invalid(format!(
                    "Object Lock retention must be 1 to {MAX_LOCK_DAYS} days"
                )));
            }
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
        let (key_name, object) =
            keyfile::seal_envelope(Method::Passphrase, &keys.full()?.key_file_mac, &sealed);
        store.put(FileType::Key, &key_name.to_hex(), &object)?;
        config.repo_id = keys.repo_id;
        let ct = crypto::encrypt_to_all(
            &[&keys.recipient, &keys.index_recipient],
            &config.encode(&keys.config_check, &keys.full()?.config_mac),
        )?;
        store.put(FileType::Config, "", &ct)?;
        store.put(FileType::ConfigCopy, "", &ct)?;
        // The marker goes last: a folder without it is not (yet) a repository.
        store.put(
            FileType::Marker,
            "",
            marker_text(format::FORMAT_VERSION).as_bytes(),
        )?;
        Ok(Repository::new(store, keys, config, Some(key_name)))
    }

    /// True when the store holds a repository marker.
    pub fn exists(store: &Store) -> Result<bool> {
        Ok(store.stat(FileType::Marker, "")?.is_some())
    }

    /// Read the config with the unlocked keys.
    fn finish_open(store: Store, keys: Keys, unlocked_with: Option<Id>) -> Result<Repository> {
        let (config, damaged) = get_either(&store, FileType::Config, "", |ct| {
            // Write-only devices read the config with the index identity.
            let plain = match keys.data_identity() {
                Ok(id) => id.decrypt(&ct, "config")?,
                Err(_) => keys.index_identity.decrypt(&ct, "config")?,
            };
            Config::decode(
                &plain,
                &keys.repo_id,
                &keys.config_check,
                keys.full().ok().map(|f| &f.config_mac),
            )
        })?;
        // A local copy of a locked repository cannot lock; everything else keeps the rule.
        let _ = store.backend().set_object_lock(config.object_lock);
        let repo = Repository::new(store, keys, config, unlocked_with);
        if let Some(e) = damaged {
            repo.note_damaged(FileType::Config, None, &e);
        }
        Ok(repo)
    }

    /// Remember that an object's copy `kind` could not be used (the other served).
    pub(crate) fn note_damaged(&self, kind: FileType, name: Option<Id>, e: &Error) {
        let d = DamagedCopy {
            kind,
            name,
            error: e.to_string(),
        };
        let mut all = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
        if !all.iter().any(|x| x.kind == d.kind && x.name == d.name) {
            all.push(d);
        }
    }

    /// True when copy `kind` of object `name` was found damaged this run.
    pub(crate) fn is_damaged(&self, kind: FileType, name: &Id) -> bool {
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| d.kind == kind && d.name.as_ref() == Some(name))
    }

    /// Objects of which one copy could not be used so far this run, the other having served
    /// (§2.2). `vault repair metadata` rewrites them.
    pub fn damaged_copies(&self) -> Vec<DamagedCopy> {
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn new(store: Store, keys: Keys, config: Config, unlocked_with: Option<Id>) -> Repository {
        Repository {
            store,
            keys: Arc::new(keys),
            config,
            cache_place: CachePlace::Memory,
            synced: OnceLock::new(),
            sync_lock: Mutex::new(()),
            unlocked_with,
            costly_unlock: None,
            missing_snapshots: Mutex::new(Default::default()),
            damaged: Mutex::new(Vec::new()),
        }
    }

    /// The scrypt work factor (log2 N) of the passphrase key file this run unlocked with, when
    /// it is above the default: a key file planted with a high one costs seconds and gigabytes
    /// on every unlock (§4.3), so the user is told.
    pub fn costly_unlock(&self) -> Option<u8> {
        self.costly_unlock
    }

    /// Where the local index lives (in memory unless set). Takes effect at the next use.
    /// Packs bound for a network store are spooled next to it (§2.1).
    pub fn set_cache_place(&mut self, place: CachePlace) {
        if let CachePlace::Dir(d) = &place {
            self.store.set_spool_dir(d.join("spool"));
        }
        self.cache_place = place;
        self.synced = OnceLock::new();
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
    pub fn index_errors(&self) -> Result<&[(Id, Error)]> {
        Ok(&self.synced()?.index_errors)
    }

    pub(crate) fn names(&self, t: FileType) -> Result<Vec<Id>> {
        Ok(self.store.list(t)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Run `f` on each name with a few threads (repository reads are mostly waiting).
    /// Results come back in input order.
    pub(crate) fn fetch_all<T: Send>(
        &self,
        names: Vec<Id>,
        f: impl Fn(&Id) -> Result<T> + Sync,
    ) -> Vec<(Id, Result<T>)> {
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
        out.into_iter().map(|(i, r)| (names[i], r)).collect()
    }
}
