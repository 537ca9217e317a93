//! Wrapping the master keys: passphrases (scrypt), age identities and plugin recipients, and
//! telling which method a key file was sealed with from its header alone.

use std::io::Read;
use std::iter;

use age::secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{
    age_encrypt, age_payload_offset, DataIdentity, DataRecipient, MAX_SCRYPT_LOG_N,
    MIN_SCRYPT_LOG_N,
};
use crate::error::{Error, Result};

/// A passphrase typed by the user. No `Debug`.
pub struct Passphrase(SecretString);

impl Passphrase {
    pub fn new(s: String) -> Self {
        Passphrase(SecretString::from(s))
    }
    pub fn is_empty(&self) -> bool {
        self.0.expose_secret().is_empty()
    }
    /// Its length in characters (to warn about a short one; nothing else of it leaves).
    pub fn char_count(&self) -> usize {
        self.0.expose_secret().chars().count()
    }
}

/// Encrypt `plaintext` to a passphrase with scrypt work factor 2^`log_n`. The scrypt stanza is the
/// only one in the file, as age requires.
pub fn seal_with_passphrase(pass: &Passphrase, log_n: u8, plaintext: &[u8]) -> Result<Vec<u8>> {
    if !(MIN_SCRYPT_LOG_N..=MAX_SCRYPT_LOG_N).contains(&log_n) {
        return Err(Error::Invalid(format!(
            "scrypt work factor must be between {MIN_SCRYPT_LOG_N} and {MAX_SCRYPT_LOG_N}"
        )));
    }
    let mut r = age::scrypt::Recipient::new(pass.0.clone());
    r.set_work_factor(log_n);
    age_encrypt(iter::once(&r as &dyn age::Recipient), plaintext)
}

/// Outcome of trying an unlock method on one key file.
pub enum Unwrap {
    Opened(Zeroizing<Vec<u8>>),
    /// The passphrase or identity is wrong for this file.
    WrongPassphrase,
    /// The file is for another kind of method (passphrase vs identity).
    NotPassphrase,
}

/// The terminal side of age plugins (a YubiKey asking for its PIN or a touch).
#[derive(Clone)]
struct TerminalCallbacks;

impl age::Callbacks for TerminalCallbacks {
    fn display_message(&self, message: &str) {
        eprintln!("{message}");
    }

    fn confirm(&self, message: &str, yes: &str, no: Option<&str>) -> Option<bool> {
        use std::io::{BufRead, IsTerminal};
        if !std::io::stdin().is_terminal() {
            return None;
        }
        eprint!(
            "{message} [{yes}{}]: ",
            no.map(|n| format!("/{n}")).unwrap_or_default()
        );
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(line.trim() == yes)
    }

    fn request_public_string(&self, description: &str) -> Option<String> {
        use std::io::{BufRead, IsTerminal};
        if !std::io::stdin().is_terminal() {
            return None;
        }
        eprint!("{description} ");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(line.trim().to_string())
    }

    fn request_passphrase(&self, description: &str) -> Option<SecretString> {
        rpassword::prompt_password(format!("{description} "))
            .ok()
            .map(SecretString::from)
    }
}

fn identity_file(text: &str) -> Result<age::IdentityFile<TerminalCallbacks>> {
    age::IdentityFile::from_buffer(text.as_bytes())
        .map(|f| f.with_callbacks(TerminalCallbacks))
        .map_err(|_| {
            Error::Invalid(
                "not an age identity file (expected AGE-SECRET-KEY-1... or AGE-PLUGIN-... lines)"
                    .into(),
            )
        })
}

/// age identities given by the user: an identity file (`age-keygen` output, or a plugin identity
/// such as age-plugin-yubikey's, run through the age plugin protocol), a recovery key, or a
/// device key. No `Debug`.
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl Identities {
    /// Parse identity-file text; `#` comments and blank lines are ignored.
    pub fn parse(text: &str) -> Result<Identities> {
        let ids = identity_file(text)?
            .into_identities()
            .map_err(|e| Error::Invalid(format!("cannot use the identity file: {e}")))?;
        if ids.is_empty() {
            return Err(Error::Invalid(
                "the identity file holds no age identity".into(),
            ));
        }
        Ok(Identities(ids))
    }

    pub fn from_identity(id: DataIdentity) -> Identities {
        Identities(vec![Box::new(id.0)])
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|b| b.as_ref() as &dyn age::Identity)
    }
}

/// Whom a new key file is encrypted to: one X25519 recipient, or the recipients of an identity
/// file (plugin identities wrap through their plugin).
pub struct KeyRecipients(Vec<Box<dyn age::Recipient + Send>>);

impl KeyRecipients {
    pub fn x25519(r: &DataRecipient) -> KeyRecipients {
        KeyRecipients(vec![Box::new(r.0.clone())])
    }

    /// The recipients matching the identities of an identity file, and whether any is a plugin.
    pub fn of_identity_file(text: &str) -> Result<(KeyRecipients, bool)> {
        let plugin = text.lines().any(|l| l.trim().starts_with("AGE-PLUGIN-"));
        let r = identity_file(text)?
            .to_recipients()
            .map_err(|e| Error::Invalid(format!("cannot use the identity file: {e}")))?;
        if r.is_empty() {
            return Err(Error::Invalid(
                "the identity file holds no age identity".into(),
            ));
        }
        Ok((KeyRecipients(r), plugin))
    }
}

/// Encrypt a key file to `recipients`.
pub fn seal_to_recipients(recipients: &KeyRecipients, plaintext: &[u8]) -> Result<Vec<u8>> {
    age_encrypt(
        recipients
            .0
            .iter()
            .map(|r| r.as_ref() as &dyn age::Recipient),
        plaintext,
    )
}

/// Try identities on a key file.
pub fn open_with_identities(ids: &Identities, ciphertext: &[u8], what: &str) -> Result<Unwrap> {
    let dec = age::Decryptor::new_buffered(ciphertext).map_err(|e| {
        Error::corrupt(
            what,
            format!("not a readable age file: {}", super::reason(&e)),
        )
    })?;
    if dec.is_scrypt() {
        return Ok(Unwrap::NotPassphrase);
    }
    match dec.decrypt(ids.iter()) {
        Ok(mut r) => {
            let mut out = Zeroizing::new(Vec::new());
            r.read_to_end(&mut out).map_err(|e| {
                Error::corrupt(what, format!("decryption failed: {}", super::reason(&e)))
            })?;
            Ok(Unwrap::Opened(out))
        }
        Err(age::DecryptError::NoMatchingKeys) | Err(age::DecryptError::DecryptionFailed) => {
            Ok(Unwrap::WrongPassphrase)
        }
        Err(e) => Err(Error::corrupt(what, format!("cannot decrypt: {e}"))),
    }
}

/// The header (and nonce) of an age file, without its payload: enough to recognise the method
/// it was made for, useless to decrypt anything.
pub fn header_only(object: &[u8]) -> Option<Vec<u8>> {
    age_payload_offset(object).map(|n| object[..n as usize].to_vec())
}

/// The kind of unlock method an age file was made for, read from its public header.
pub fn stanza_kind(object: &[u8]) -> &'static str {
    match age::Decryptor::new_buffered(object) {
        Ok(d) if d.is_scrypt() => "passphrase",
        Ok(_) if object.windows(10).any(|w| w == b"-> X25519 ") => "age identity",
        Ok(_) => "plugin",
        Err(_) => "unreadable",
    }
}

/// The scrypt work factor (log2 N) a passphrase key file asks for, read from its public header
/// without running scrypt; `None` for other files.
pub fn scrypt_work_factor(object: &[u8]) -> Option<u8> {
    let head = &object[..object.len().min(4096)];
    let line = head
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"-> scrypt "))?;
    let text = std::str::from_utf8(line).ok()?;
    text.split(' ').nth(3)?.parse().ok()
}

/// True when `header` (from [`header_only`]) was made for this passphrase or these identities:
/// used only to say "this method was removed" rather than "wrong passphrase".
pub fn header_matches_passphrase(pass: &Passphrase, header: &[u8]) -> bool {
    let Ok(dec) = age::Decryptor::new_buffered(header) else {
        return false;
    };
    if !dec.is_scrypt() {
        return false;
    }
    let mut id = age::scrypt::Identity::new(pass.0.clone());
    id.set_max_work_factor(MAX_SCRYPT_LOG_N);
    dec.decrypt(iter::once(&id as &dyn age::Identity)).is_ok()
}

pub fn header_matches_identities(ids: &Identities, header: &[u8]) -> bool {
    let Ok(dec) = age::Decryptor::new_buffered(header) else {
        return false;
    };
    !dec.is_scrypt() && dec.decrypt(ids.iter()).is_ok()
}

/// Try to open a passphrase-wrapped key file.
pub fn open_with_passphrase(pass: &Passphrase, ciphertext: &[u8], what: &str) -> Result<Unwrap> {
    let dec = age::Decryptor::new_buffered(ciphertext).map_err(|e| {
        Error::corrupt(
            what,
            format!("not a readable age file: {}", super::reason(&e)),
        )
    })?;
    if !dec.is_scrypt() {
        return Ok(Unwrap::NotPassphrase);
    }
    let mut id = age::scrypt::Identity::new(pass.0.clone());
    id.set_max_work_factor(MAX_SCRYPT_LOG_N);
    match dec.decrypt(iter::once(&id as &dyn age::Identity)) {
        Ok(mut r) => {
            let mut out = Zeroizing::new(Vec::new());
            r.read_to_end(&mut out).map_err(|e| {
                Error::corrupt(what, format!("decryption failed: {}", super::reason(&e)))
            })?;
            Ok(Unwrap::Opened(out))
        }
        Err(age::DecryptError::DecryptionFailed) | Err(age::DecryptError::NoMatchingKeys) => {
            Ok(Unwrap::WrongPassphrase)
        }
        Err(age::DecryptError::ExcessiveWork { required, .. }) => {
            Err(Error::WorkFactorTooHigh(required, MAX_SCRYPT_LOG_N))
        }
        Err(e) => Err(Error::corrupt(what, format!("cannot decrypt: {e}"))),
    }
}
