//! Device keys in the OS keyring (Secret Service on Linux desktops, Keychain on macOS, Credential
//! Manager on Windows, or the Linux kernel keyutils store when chosen explicitly), so scheduled
//! backups run without a passphrase. The only module that uses the `keyring` crates. Where no
//! store exists we say so and the caller asks for the passphrase: never a plaintext file.

use zeroize::Zeroizing;

use crate::error::{Error, Result};

const SERVICE: &str = "vault";

/// Which credential store to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// The platform's own store (Secret Service, Keychain, Credential Manager).
    Platform,
    /// The Linux kernel keyutils store (headless machines; lost at reboot).
    Keyutils,
}

/// What the keyring holds for one repository: the device key file's name and the identity.
pub struct DeviceKey {
    pub key_file: String,
    pub identity: Zeroizing<String>,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "no OS keyring is available here ({e}); vault will ask for the passphrase instead (on headless Linux, `--keyring keyutils` uses the kernel store)"
    ))
}

fn entry(store: Store, location: &str) -> Result<keyring_core::Entry> {
    match store {
        Store::Platform => keyring::Entry::new(SERVICE, location)
            .map(|e| e.inner)
            .map_err(unavailable),
        #[cfg(target_os = "linux")]
        Store::Keyutils => {
            let s = linux_keyutils_keyring_store::Store::new().map_err(unavailable)?;
            keyring_core::set_default_store(s);
            keyring_core::Entry::new(SERVICE, location).map_err(unavailable)
        }
        #[cfg(not(target_os = "linux"))]
        Store::Keyutils => Err(unavailable("keyutils exists only on Linux")),
    }
}

/// Save the device key for the repository at `location`.
pub fn remember(store: Store, location: &str, key: &DeviceKey) -> Result<()> {
    let text = Zeroizing::new(format!("{}\n{}", key.key_file, *key.identity));
    entry(store, location)?.set_password(&text).map_err(|e| {
        Error::Invalid(format!(
            "the OS keyring refused to store the device key: {e}"
        ))
    })
}

/// The device key for `location`, if this device has one. Errors only when a store exists but
/// fails; no store at all is `Ok(None)` so callers fall back to the passphrase.
pub fn recall(store: Store, location: &str) -> Result<Option<DeviceKey>> {
    let Ok(e) = entry(store, location) else {
        return Ok(None);
    };
    match e.get_password() {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let (name, identity) = text.split_once('\n').ok_or_else(|| {
                Error::Invalid("the device key in the OS keyring is damaged".into())
            })?;
            Ok(Some(DeviceKey {
                key_file: name.to_string(),
                identity: Zeroizing::new(identity.to_string()),
            }))
        }
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(keyring_core::Error::NoStorageAccess(_))
        | Err(keyring_core::Error::PlatformFailure(_)) => Ok(None),
        Err(e) => Err(Error::Invalid(format!("cannot read the OS keyring: {e}"))),
    }
}

/// Remove the device key for `location`. Returns whether there was one.
pub fn forget(store: Store, location: &str) -> Result<bool> {
    let e = entry(store, location)?;
    match e.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring_core::Error::NoEntry) => Ok(false),
        Err(e) => Err(Error::Invalid(format!(
            "cannot remove the device key from the OS keyring: {e}"
        ))),
    }
}
