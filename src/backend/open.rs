//! Opening a store from an address: a folder path, or `scheme://...` for a backend in the
//! registry below (S3 today). A new backend is one file and one line in `SCHEMES`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::retry::RetryPolicy;
use super::{local::LocalBackend, s3, Backend, Store};
use crate::error::{Error, Result};

/// Settings for network backends that do not belong to one repository.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// A request where no byte has moved for this long is abandoned and retried.
    pub stall: Duration,
    /// Attempts per request before giving up.
    pub attempts: u32,
    /// How long a failing request goes on being retried (an outage ridden out).
    pub network_wait: Duration,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            stall: s3::DEFAULT_STALL,
            attempts: RetryPolicy::default().attempts,
            network_wait: super::retry::DEFAULT_WINDOW,
        }
    }
}

/// Where a repository is: an address and its backend's settings (for S3: `endpoint`, `region`,
/// `addressing`), as a named repository records them or the command line gives them.
#[derive(Clone, Debug, Default)]
pub struct Location {
    pub address: String,
    pub options: BTreeMap<String, String>,
}

/// A backend opened from a location, and how its failures are retried (none: not at all).
pub type Opened = (Arc<dyn Backend>, Option<RetryPolicy>);

/// A backend kind: the addresses it takes, the settings it understands, and how to open it.
struct Scheme {
    prefix: &'static str,
    options: &'static [&'static str],
    open: fn(&Location, &BackendOptions) -> Result<Opened>,
}

/// Every backend but local folders.
const SCHEMES: &[Scheme] = &[Scheme {
    prefix: "s3://",
    options: s3::OPTIONS,
    open: s3::open,
}];

fn scheme(address: &str) -> Result<Option<&'static Scheme>> {
    if let Some(s) = SCHEMES.iter().find(|s| address.starts_with(s.prefix)) {
        return Ok(Some(s));
    }
    if address.contains("://") {
        let known: Vec<String> = SCHEMES.iter().map(|s| format!("{}...", s.prefix)).collect();
        return Err(Error::Invalid(format!(
            "unsupported repository address {address:?}: use a folder path, {} or a name from \
             `vault repo list`",
            known.join(", ")
        )));
    }
    Ok(None)
}

impl Location {
    pub fn new(address: impl Into<String>) -> Self {
        Location {
            address: address.into(),
            options: BTreeMap::new(),
        }
    }

    /// The folder, for a repository on a local (or mounted) filesystem.
    pub fn local_path(&self) -> Option<PathBuf> {
        match scheme(&self.address) {
            Ok(None) => Some(PathBuf::from(&self.address)),
            _ => None,
        }
    }

    /// Reached over a network: worth more transfers in flight.
    pub fn is_remote(&self) -> bool {
        self.local_path().is_none()
    }

    /// Refuse settings the address's backend does not know (a misspelt key in the settings
    /// file must not be ignored).
    pub fn check_options(address: &str, keys: impl Iterator<Item = impl AsRef<str>>) -> Result<()> {
        let known: &[&str] = match scheme(address)? {
            Some(s) => s.options,
            None => &[],
        };
        for k in keys {
            let k = k.as_ref();
            if !known.contains(&k) {
                return Err(Error::Invalid(format!(
                    "{k:?} is not a setting of {address} (it takes {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

/// The store of `loc`: its backend, metered, with the backend's retries.
pub fn open(loc: &Location, opts: &BackendOptions) -> Result<Store> {
    Location::check_options(&loc.address, loc.options.keys())?;
    match scheme(&loc.address)? {
        Some(s) => {
            let (backend, retry) = (s.open)(loc, opts)?;
            Store::layered(backend, retry)
        }
        None => Store::new(Arc::new(LocalBackend::new(&loc.address))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_choose_their_backend() {
        let o = BackendOptions::default();
        let dir = tempfile::tempdir().unwrap();
        let local = open(&Location::new(dir.path().to_str().unwrap()), &o).unwrap();
        assert_eq!(local.location(), dir.path().display().to_string());
        let s3 = open(&Location::new("s3://bucket/prefix"), &o).unwrap();
        assert_eq!(s3.location(), "s3://bucket/prefix");
        let e = open(&Location::new("sftp://host/x"), &o)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unsupported repository address"), "{e}");
        let mut bad = Location::new("s3://bucket");
        bad.options.insert("endpiont".into(), "x".into());
        assert!(open(&bad, &o).is_err());
        let mut bad = Location::new(dir.path().to_str().unwrap());
        bad.options.insert("region".into(), "x".into());
        assert!(open(&bad, &o).is_err());
    }
}
