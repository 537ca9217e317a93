//! The library's error type: one enum whose messages are written for the person at the terminal.

use std::io;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside vault.
///
/// Messages never contain secrets; they may contain repository object names (random hex) and,
/// where the user needs them to act, paths they gave on the command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no vault repository at {0}: create one there with `vault init`, or give the address of an existing one with --repo (`vault repo add NAME ADDRESS` names it)")]
    NoRepository(String),
    #[error("{0} is not a vault repository")]
    NotARepository(String),
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    #[error("repository format version {found} is not supported by this vault (it reads version {supported}); {}", version_advice(*.found, *.supported))]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("wrong passphrase: no key file of this repository opens with it. Forgot it? Save the recovery key in a file and pass --identity FILE")]
    WrongPassphrase,
    #[error("no passphrase: set VAULT_PASSWORD or VAULT_PASSWORD_FILE, pass --password-file, or run on a terminal")]
    NoPassphrase,
    #[error("the key file asks for a work factor of 2^{0}, above the allowed 2^{1}; refusing to unlock with it")]
    WorkFactorTooHigh(u8, u8),
    #[error("damaged {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("{0} not found in the repository")]
    NotFound(String),
    #[error("no snapshot matches {0}")]
    SnapshotNotFound(String),
    #[error("snapshot prefix {0} matches several snapshots; give more digits")]
    AmbiguousSnapshot(String),
    #[error("{0}")]
    Invalid(String),
    // The cause is part of the message and deliberately not a `source()`, so that printing the
    // error chain does not repeat it.
    #[error("storage: {context}: {cause}")]
    Storage {
        context: String,
        cause: io::Error,
        /// Worth another attempt (throttling, 5xx, a timeout, a broken connection).
        transient: bool,
    },
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    #[error("interrupted")]
    Interrupted,
    #[error(
        "{target} is full: stopped after {files} file(s) were in place. Free some space (or \
             choose another --target) and run the same command again: it restores what is \
             missing and keeps what is already there"
    )]
    TargetFull { files: u64, target: String },
    #[error("this device holds a write-only key: it can back up, but it cannot read backups (restore, ls, check, repair, snapshots, stats, forget and prune need a full key)")]
    WriteOnly,
    #[error("this {0} does not unlock the repository")]
    WrongKey(String),
    #[error("local index {path}: {detail} (it is only a cache: delete that folder and vault rebuilds it from the repository)")]
    Cache { path: String, detail: String },
    #[error("while this run was going, a prune on another computer {0}; no snapshot was written and nothing was lost: run the same command again")]
    Condemned(String),
    #[error("this {0} was removed from the repository and no longer unlocks it")]
    KeyRemoved(String),
    #[error("no intact key file opens with this {tried}, and key file {key} ({method}) is damaged (its bytes no longer match its name): if the {tried} is right, that was its key file. Unlock with {other}, then replace it with `vault key add` and `vault key remove {key}`")]
    KeyFileDamaged {
        key: String,
        method: String,
        tried: String,
        other: String,
    },
}

impl Error {
    /// A damaged object or blob; `what` names it (kind and id), `detail` says how.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// An I/O error on the local machine, with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause: source,
        }
    }

    /// An I/O error talking to the repository storage.
    pub fn storage(context: impl Into<String>, source: io::Error) -> Self {
        Error::Storage {
            context: context.into(),
            cause: source,
            transient: false,
        }
    }

    /// A storage failure that another attempt may not meet (throttling, 5xx, a timeout, a
    /// broken connection).
    pub fn transient(context: impl Into<String>, source: io::Error) -> Self {
        Error::Storage {
            context: context.into(),
            cause: source,
            transient: true,
        }
    }

    /// True for a failure worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                transient: true,
                ..
            }
        )
    }

    /// True when the error means stored data did not verify.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

/// Whether `e` is one of these operating-system errors.
pub fn os_error_in(e: &io::Error, codes: &[rustix::io::Errno]) -> bool {
    codes
        .iter()
        .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// What to do about a repository of another format version: a newer one needs a newer vault;
/// older ones come only from development builds, which can still read them.
fn version_advice(found: u32, supported: u32) -> &'static str {
    if found > supported {
        "upgrade vault"
    } else {
        "it was made by a development build of vault, which can still read it; restore with that \
         build and back up again into a new repository"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_errors_say_which_side_is_old() {
        let newer = Error::UnsupportedVersion {
            found: 9,
            supported: 5,
        };
        assert!(newer.to_string().ends_with("upgrade vault"));
        let older = Error::UnsupportedVersion {
            found: 4,
            supported: 5,
        }
        .to_string();
        assert!(older.contains("version 4") && older.contains("development build"));
        assert!(!older.contains("upgrade vault"));
    }
}
