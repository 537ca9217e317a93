//! The settings file: named repositories (`vault repo add`), so that one command can back up to,
//! move into and check several repositories (an external drive and a bucket, say).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Location;
use crate::error::{Error, Result};

/// One named repository. Backend settings left out fall back to the command line and
/// environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RepoEntry {
    /// A folder path, or an address a backend understands (`s3://bucket/prefix`).
    pub address: String,
    /// Passphrase file for this repository (else the usual VAULT_PASSWORD, keyring, prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    /// The backend's settings (S3: `endpoint`, `region`, `addressing`); checked against what the
    /// address's backend understands when the file is read.
    #[serde(flatten)]
    pub options: BTreeMap<String, String>,
}

/// A repository as a command names it: by name from the settings file, or by address.
#[derive(Clone, Debug)]
pub struct Named {
    /// The settings name, when it was named.
    pub name: Option<String>,
    pub location: Location,
    pub passphrase_file: Option<PathBuf>,
}

impl Named {
    /// A repository given by address.
    pub fn address(address: &str) -> Named {
        Named {
            name: None,
            location: Location::new(address),
            passphrase_file: None,
        }
    }
    fn of(name: &str, e: &RepoEntry) -> Named {
        Named {
            name: Some(name.to_string()),
            location: Location {
                address: e.address.clone(),
                options: e.options.clone(),
            },
            passphrase_file: e.passphrase_file.clone(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    repositories: BTreeMap<String, RepoEntry>,
}

/// The settings file, loaded.
pub struct Settings {
    path: PathBuf,
    file: File,
}

/// Names are used on the command line and in messages: keep them plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl Settings {
    /// `$VAULT_CONFIG`, else `vault/config.toml` in the user's configuration folder.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("VAULT_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        dirs::config_dir().map(|d| d.join("vault").join("config.toml"))
    }

    /// Load the file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<Settings> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<File>(&text).map_err(|e| {
                Error::Invalid(format!("settings file {}: {}", path.display(), e.message()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        for (name, e) in &file.repositories {
            if !valid_name(name) {
                return Err(Error::Invalid(format!(
                    "settings file {}: {name:?} is not a valid repository name",
                    path.display()
                )));
            }
            Location::check_options(&e.address, e.options.keys()).map_err(|err| {
                Error::Invalid(format!("settings file {}: {name}: {err}", path.display()))
            })?;
        }
        Ok(Settings {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, name: &str) -> Option<&RepoEntry> {
        self.file.repositories.get(name)
    }

    /// The repository `r` names: a name in this file (with its settings), unless it looks like
    /// a path; else an address.
    pub fn locate(&self, r: &str) -> Named {
        if valid_name(r) && !r.contains('/') {
            if let Some(e) = self.get(r) {
                return Named::of(r, e);
            }
        }
        Named::address(r)
    }

    /// Every named repository, in name order.
    pub fn all(&self) -> Vec<Named> {
        self.repositories().map(|(n, e)| Named::of(n, e)).collect()
    }

    /// Named repositories in name order.
    pub fn repositories(&self) -> impl Iterator<Item = (&String, &RepoEntry)> {
        self.file.repositories.iter()
    }

    pub fn add(&mut self, name: &str, entry: RepoEntry) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::Invalid(format!(
                "{name:?} is not a valid repository name: use letters, digits, '-' and '_'"
            )));
        }
        if let Some(old) = self.file.repositories.get(name) {
            return Err(Error::Invalid(format!(
                "a repository named {name} already exists ({}); remove it first",
                old.address
            )));
        }
        self.file.repositories.insert(name.to_string(), entry);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<RepoEntry> {
        self.file
            .repositories
            .remove(name)
            .ok_or_else(|| Error::Invalid(format!("no repository is named {name}")))
    }

    /// Write the file atomically (temporary file, fsync, rename), readable by the user only:
    /// it names where the backups are.
    pub fn save(&self) -> Result<()> {
        let text = format!(
            "# vault settings: named repositories (`vault repo add NAME REPO`)\n\n{}",
            toml::to_string_pretty(&self.file)
                .map_err(|e| Error::Invalid(format!("cannot write settings: {e}")))?
        );
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("cannot write {}", self.path.display()), e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let mut s = Settings::load(&path).unwrap();
        assert_eq!(s.repositories().count(), 0);
        let e = RepoEntry {
            address: "s3://b/p".into(),
            options: [("endpoint".to_string(), "http://127.0.0.1:9000".to_string())].into(),
            ..Default::default()
        };
        s.add("cloud", e.clone()).unwrap();
        s.add(
            "drive",
            RepoEntry {
                address: "/mnt/d".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.add("cloud", e.clone()).is_err());
        assert!(s.add("../x", e.clone()).is_err());
        s.save().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut t = Settings::load(&path).unwrap();
        assert_eq!(t.get("cloud"), Some(&e));
        assert_eq!(
            t.repositories()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["cloud", "drive"]
        );
        t.remove("cloud").unwrap();
        assert!(t.remove("cloud").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[repositories.a]\naddress = \"/x\"\npassphrase-fil = \"/p\"\n",
        )
        .unwrap();
        let e = Settings::load(&path).err().unwrap().to_string();
        assert!(e.contains("passphrase-fil"), "{e}");
        std::fs::write(&path, "[repositories.\"a b\"]\naddress = \"/x\"\n").unwrap();
        assert!(Settings::load(&path).is_err());
    }
}
