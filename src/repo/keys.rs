//! Unlocking a repository and managing its key files (one per unlock method, §4.3, §4.4), and
//! write-only device profiles.

use zeroize::Zeroizing;

use super::{check_marker, now, Repository};
use crate::backend::short_name;
use crate::backend::{FileType, Store};
use crate::crypto::{self, Passphrase, Unwrap};
use crate::error::{Error, Result};
use crate::format::keyfile::{self, KeyInfo, KeyMaterial, Method};
use crate::ids::Id;
use crate::keys::Keys;

/// First characters of the profile line in a write-only profile file.
pub const PROFILE_PREFIX: &str = "VAULT-WRITE-ONLY-PROFILE-7:";

/// Parse a write-only profile file's text.
pub fn parse_profile(text: &str) -> Result<KeyMaterial> {
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(PROFILE_PREFIX))
        .ok_or_else(|| {
            if text.contains("VAULT-WRITE-ONLY-PROFILE-") {
                Error::Invalid(
                    "this device profile is for an older repository format; make a new one with \
                     `vault key add --write-only` on a full device"
                        .into(),
                )
            } else {
                Error::Invalid("not a vault device profile".into())
            }
        })?;
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
    /// The method its public label names (§4.3), or "damaged".
    pub kind: &'static str,
    /// The key file this run unlocked with.
    pub current: bool,
}

impl Repository {
    /// Unlock with a passphrase.
    pub fn open(store: Store, pass: &Passphrase) -> Result<Repository> {
        Repository::unlock(store, &Unlock::Passphrase(pass))
    }

    /// Unlock with any method.
    pub fn unlock(store: Store, how: &Unlock<'_>) -> Result<Repository> {
        check_marker(&store)?;
        let mut material = None;
        let mut hostile = None;
        let mut files = Vec::new();
        // Key files whose bytes no longer match their name (§4.3), with the method their label
        // names if it is still legible: if nothing opens, the user hears which one is damaged
        // instead of "wrong passphrase".
        let mut damaged: Vec<(Id, Option<Method>)> = Vec::new();
        for (name, _) in store.list(FileType::Key)? {
            let data = match store.get(FileType::Key, &name.to_hex()) {
                Ok(data) => data,
                Err(e) if e.is_corrupt() => {
                    damaged.push((name, None));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match keyfile::open_envelope(&name, &data) {
                Ok(env) => {
                    let age = env.age.to_vec();
                    files.push((name, age));
                }
                Err(_) => {
                    let method = keyfile::parse_envelope(&data).ok().map(|e| e.method);
                    damaged.push((name, method));
                }
            }
        }
        // Cheapest first: key files of this method before the others, passphrase files by
        // their scrypt work factor, so that a planted costly one is tried last, if at all.
        let cost = |data: &[u8]| {
            let factor = crypto::scrypt_work_factor(data);
            let wanted = matches!(how, Unlock::Passphrase(_)) == factor.is_some();
            (!wanted, factor.unwrap_or(0))
        };
        files.sort_by_key(|(_, data)| cost(data));
        for (name, data) in files {
            let what = format!("key file {}", name.short());
            let tried = match how {
                Unlock::Passphrase(p) => crypto::open_with_passphrase(p, &data, &what),
                Unlock::Identities(ids, _) => crypto::open_with_identities(ids, &data, &what),
            };
            match tried {
                // A removed key file put back (by someone who kept a copy) stays removed while
                // its `revoked/` record exists (§4.4): one HEAD, for the file that opened.
                Ok(Unwrap::Opened(_))
                    if store.stat(FileType::Revoked, &name.to_hex())?.is_some() =>
                {
                    continue
                }
                Ok(Unwrap::Opened(plain)) => {
                    let costly = crypto::scrypt_work_factor(&data)
                        .filter(|f| *f > crypto::DEFAULT_SCRYPT_LOG_N);
                    material = Some((keyfile::decode(&plain)?.0, name, costly));
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
        let Some((material, unlocked_with, costly)) = material else {
            return Err(Self::why_locked(&store, how, hostile, &damaged)?);
        };
        let mut repo =
            Repository::finish_open(store, Keys::from_material(material), Some(unlocked_with))?;
        repo.costly_unlock = costly;
        Ok(repo)
    }

    /// Open with a device profile's key material directly (write-only devices); no key file is
    /// involved. The config must verify under the profile's keys.
    pub fn open_with_material(store: Store, material: KeyMaterial) -> Result<Repository> {
        check_marker(&store)?;
        Repository::finish_open(store, Keys::from_material(material), None).map_err(|e| match e {
            Error::Corrupt { what, .. } if what == "config" => {
                Error::Invalid("this device profile belongs to another repository".into())
            }
            other => other,
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
        let plain = keyfile::encode(&self.keys.write_only_material()?, &info);
        Ok(Zeroizing::new(format!(
            "# vault write-only device profile for repository {} at {}\n# It can back up into the repository and read nothing back. Keep it private (0600).\n{PROFILE_PREFIX}{}\n",
            self.keys.repo_id.short(),
            self.store.location(),
            hex::encode(&plain[..])
        )))
    }

    /// The most helpful error when no key file opened.
    fn why_locked(
        store: &Store,
        how: &Unlock<'_>,
        hostile: Option<Error>,
        damaged: &[(Id, Option<Method>)],
    ) -> Result<Error> {
        for (name, _) in store.list(FileType::Revoked)? {
            let Ok(header) = store.get(FileType::Revoked, &name.to_hex()) else {
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
        // A damaged key file of the method tried may be the one this secret opens. Only a
        // label still legible says which method a file was: a file of unknown kind is no
        // reason to doubt the secret.
        let passphrase = matches!(how, Unlock::Passphrase(_));
        let suspect = damaged
            .iter()
            .find(|(_, m)| m.is_some_and(|m| (m == Method::Passphrase) == passphrase));
        if hostile.is_none() {
            if let Some((name, Some(method))) = suspect {
                return Ok(Error::KeyFileDamaged {
                    key: name.short(),
                    method: method.name().to_string(),
                    tried: how.kind(),
                    other: if passphrase {
                        "your recovery key (`--identity FILE`) or another method".into()
                    } else {
                        "your passphrase or another method".into()
                    },
                });
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
            let data = self.store.get(FileType::Key, &name.to_hex())?;
            out.push(KeyFileInfo {
                id: name.short(),
                kind: match keyfile::open_envelope(&name, &data) {
                    Ok(env) => env.method.name(),
                    Err(_) => "damaged",
                },
                current: Some(name) == self.unlocked_with,
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
        let (name, object) =
            keyfile::seal_envelope(method, &self.keys.full()?.key_file_mac, &sealed);
        self.store.put(FileType::Key, &name.to_hex(), &object)?;
        Ok(name.short())
    }

    /// Remove an unlock method by key file id prefix. Keeps the key file's public header under
    /// `revoked/` so the removed method is recognised (and refused) later; the secrets it wrapped
    /// are deleted. Refuses to remove the last key file.
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.store.list(FileType::Key)?;
        let prefix_l = prefix.to_ascii_lowercase();
        let matching: Vec<Id> = keys
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| prefix.len() >= 4 && n.to_hex().starts_with(&prefix_l))
            .collect();
        let name = match matching.as_slice() {
            [one] => one.to_hex(),
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
        // A damaged key file is removed without a record: it unlocks nothing anyway.
        let Ok(env) = keyfile::parse_envelope(&data) else {
            self.store.delete(FileType::Key, &name)?;
            return Ok(short_name(&name).to_string());
        };
        let header = crypto::header_only(env.age).ok_or_else(|| {
            Error::corrupt(format!("key file {}", short_name(&name)), "no age header")
        })?;
        self.store.put(FileType::Revoked, &name, &header)?;
        self.store.delete(FileType::Key, &name)?;
        Ok(short_name(&name).to_string())
    }
}
