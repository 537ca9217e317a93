//! All cryptography in one place: age encryption to the data identity, keyed BLAKE3 hashing and
//! subkey derivation, and the OS random generator; wrapping the master keys (passphrases,
//! identities, plugins) is in `keywrap`.

use std::io::{self, Read, Seek, Write};
use std::iter;

use age::secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::ids::Id;

/// Largest scrypt work factor (log2 N) accepted when unlocking: 2^22 is ~4 GiB of RAM.
pub const MAX_SCRYPT_LOG_N: u8 = 22;
/// Smallest work factor accepted when creating a key file.
pub const MIN_SCRYPT_LOG_N: u8 = 10;
/// Default work factor for new key files: about 0.5 s and 256 MiB on a laptop.
pub const DEFAULT_SCRYPT_LOG_N: u8 = 18;

mod keywrap;

pub use crate::random::{fill_random, random_below};
pub use keywrap::*;

/// A 256-bit secret key. No `Debug`, zeroed on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        fill_random(&mut k[..]);
        SecretKey(k)
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        SecretKey(Zeroizing::new(b))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derive an independent subkey for one purpose (BLAKE3 derive_key, distinct context strings).
    pub fn derive(&self, context: &str) -> SecretKey {
        SecretKey(Zeroizing::new(blake3::derive_key(context, &self.0[..])))
    }

    /// Keyed BLAKE3 of `data`.
    pub fn keyed_hash(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.0, data).as_bytes())
    }

    /// An incremental keyed hasher, for data that arrives in pieces.
    pub fn hasher(&self) -> KeyedHasher {
        KeyedHasher(Box::new(blake3::Hasher::new_keyed(&self.0)))
    }

    /// Fill `out` with the keyed XOF stream of `label` (used for the chunker's gear table).
    pub fn xof(&self, label: &[u8], out: &mut [u8]) {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(label);
        h.finalize_xof().fill(out);
    }

    /// Constant-time comparison of a MAC computed with this key.
    pub fn verify_mac(&self, data: &[u8], mac: &[u8; 32]) -> bool {
        blake3::keyed_hash(&self.0, data) == blake3::Hash::from_bytes(*mac)
    }
}

/// Authenticated encryption of local-index rows (XChaCha20-Poly1305, random 192-bit nonces).
/// The row's key is the associated data, so a row moved to another key does not open.
pub struct RowCipher(chacha20poly1305::XChaCha20Poly1305);

/// Bytes a sealed row adds to its plaintext: nonce and tag.
pub const ROW_OVERHEAD: usize = 24 + 16;

impl RowCipher {
    pub fn new(key: &SecretKey) -> RowCipher {
        use chacha20poly1305::KeyInit;
        RowCipher(chacha20poly1305::XChaCha20Poly1305::new(
            key.expose().into(),
        ))
    }

    /// Encrypt `plain` bound to `aad`: nonce, then ciphertext and tag.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, Payload};
        let mut nonce = [0u8; 24];
        fill_random(&mut nonce);
        let ct = self
            .0
            .encrypt((&nonce).into(), Payload { msg: plain, aad })
            // Encryption fails only for messages beyond 256 GiB; rows are a few KiB.
            .expect("row encryption cannot fail for row-sized input");
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt a row sealed with `aad`; `None` when it does not authenticate.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        use chacha20poly1305::aead::{Aead, Payload};
        if sealed.len() < ROW_OVERHEAD {
            return None;
        }
        let (nonce, ct) = sealed.split_at(24);
        self.0
            .decrypt(nonce.into(), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

/// Incremental keyed BLAKE3.
pub struct KeyedHasher(Box<blake3::Hasher>);

impl KeyedHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finalize(&self) -> Id {
        Id(*self.0.finalize().as_bytes())
    }
}

/// Feed everything `r` yields to each of `hashers`, read through `buf`; returns the byte count.
pub fn hash_reader(
    r: &mut impl Read,
    buf: &mut [u8],
    hashers: &mut [KeyedHasher],
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for h in hashers.iter_mut() {
            h.update(&buf[..n]);
        }
        total += n as u64;
    }
}

/// The repository's age X25519 data identity: every object is encrypted to its recipient.
pub struct DataIdentity(age::x25519::Identity);

impl DataIdentity {
    pub fn generate() -> Self {
        DataIdentity(age::x25519::Identity::generate())
    }

    /// Parse the `AGE-SECRET-KEY-1...` form stored in key files.
    pub fn parse(s: &str) -> Result<Self> {
        s.parse::<age::x25519::Identity>()
            .map(DataIdentity)
            .map_err(|_| {
                Error::corrupt("key file", "the data identity is not a valid age identity")
            })
    }

    /// The secret in its text form, for writing into a key file.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.to_string().expose_secret().to_string())
    }

    pub fn recipient(&self) -> DataRecipient {
        DataRecipient(self.0.to_public())
    }

    /// Decrypt a whole age object held in memory.
    pub fn decrypt(&self, ciphertext: &[u8], what: &str) -> Result<Vec<u8>> {
        let mut reader = self.open(ciphertext, what)?;
        let mut out = Vec::with_capacity(ciphertext.len());
        reader
            .read_to_end(&mut out)
            .map_err(|e| read_error(what, e))?;
        Ok(out)
    }

    /// Start decrypting a (seekable) age stream; plaintext is authenticated per 64 KiB chunk.
    pub fn open<R: Read>(&self, input: R, what: &str) -> Result<age::stream::StreamReader<R>> {
        let dec = age::Decryptor::new(input).map_err(|e| {
            Error::corrupt(what, format!("not a readable age file: {}", reason(&e)))
        })?;
        dec.decrypt(iter::once(&self.0 as &dyn age::Identity))
            .map_err(|e| Error::corrupt(what, format!("cannot decrypt: {}", reason(&e))))
    }
}

/// The public half of the data identity. Enough to write, never to read.
#[derive(Clone)]
pub struct DataRecipient(age::x25519::Recipient);

impl std::fmt::Display for DataRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn age_encrypt<'a>(
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    // STREAM adds 16 bytes per 64 KiB chunk; reserved so the output never reallocates.
    let out = Vec::with_capacity(age_payload_size(plaintext.len() as u64) as usize + 1024);
    let mut w = age_stream(recipients, out)?;
    w.write_all(plaintext)?;
    Ok(w.finish()?.0)
}

/// Encrypt `plaintext` into one age object readable by any of `recipients`.
pub fn encrypt_to_all(recipients: &[&DataRecipient], plaintext: &[u8]) -> Result<Vec<u8>> {
    age_encrypt(
        recipients.iter().map(|r| &r.0 as &dyn age::Recipient),
        plaintext,
    )
}

impl DataRecipient {
    /// Parse the `age1...` form.
    pub fn parse(s: &str) -> Result<Self> {
        s.trim()
            .parse::<age::x25519::Recipient>()
            .map(DataRecipient)
            .map_err(|_| Error::Invalid(format!("not an age X25519 recipient: {s:?}")))
    }

    /// Encrypt `plaintext` into one age object. Returns the object bytes.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        encrypt_to_all(&[self], plaintext)
    }
}

/// Counts what passes through to `W`: the age header's length, then the object's.
struct Counted<W> {
    inner: W,
    n: u64,
    /// `n` as seen from outside while age owns the writer.
    shared: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        self.shared
            .store(self.n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An age object being written: plaintext goes in piece by piece, ciphertext out to `W` one
/// STREAM chunk at a time, so a pack never exists whole in memory, in plaintext or encrypted.
pub struct EncryptWriter<W: Write> {
    stream: age::stream::StreamWriter<Counted<W>>,
    payload_offset: u64,
}

impl DataRecipient {
    /// Start an age object written to `out`.
    pub fn encrypt_to<W: Write>(&self, out: W) -> Result<EncryptWriter<W>> {
        age_stream(std::iter::once(&self.0 as &dyn age::Recipient), out)
    }
}

/// The one place age encryption starts: an object for `recipients`, written to `out`.
fn age_stream<'a, W: Write>(
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
    out: W,
) -> Result<EncryptWriter<W>> {
    let enc = age::Encryptor::with_recipients(recipients)
        .map_err(|e| Error::Invalid(format!("cannot set up encryption: {e}")))?;
    let shared = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = enc
        .wrap_output(Counted {
            inner: out,
            n: 0,
            shared: shared.clone(),
        })
        .map_err(|e| Error::io("encrypting", e))?;
    // `wrap_output` writes the header and the payload nonce before any payload.
    let payload_offset = shared.load(std::sync::atomic::Ordering::Relaxed);
    Ok(EncryptWriter {
        stream,
        payload_offset,
    })
}

impl<W: Write> EncryptWriter<W> {
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.stream
            .write_all(data)
            .map_err(|e| Error::io("encrypting", e))
    }

    /// Ciphertext offset of the first STREAM chunk (age header plus nonce).
    pub fn payload_offset(&self) -> u64 {
        self.payload_offset
    }

    /// Encrypt the last chunk; returns the output and the object's total length.
    pub fn finish(self) -> Result<(W, u64)> {
        let c = self
            .stream
            .finish()
            .map_err(|e| Error::io("encrypting", e))?;
        Ok((c.inner, c.n))
    }
}

/// Length of an age object's header including the 16-byte payload nonce: the ciphertext offset
/// at which the first STREAM chunk starts. Recorded in the index so ranged reads can plan.
pub fn age_payload_offset(object: &[u8]) -> Option<u64> {
    let marker = b"\n--- ";
    let pos = object.windows(marker.len()).position(|w| w == marker)?;
    let end = object[pos + 1..].iter().position(|&b| b == b'\n')? + pos + 2;
    Some((end + 16) as u64)
}

/// Size in bytes of the age ciphertext for a plaintext of `len` bytes, excluding the header.
pub fn age_payload_size(len: u64) -> u64 {
    const CHUNK: u64 = 64 * 1024;
    let chunks = if len == 0 { 1 } else { len.div_ceil(CHUNK) };
    16 + len + chunks * 16
}

/// Make a seekable plaintext reader over any seekable ciphertext source.
pub fn seekable<R: Read + Seek>(
    id: &DataIdentity,
    input: R,
    what: &str,
) -> Result<age::stream::StreamReader<R>> {
    id.open(input, what)
}

/// An age error as one line: age's messages can run over several lines with advice meant for
/// its own command-line tool ("Have you tried upgrading…"), which means nothing to a vault user.
pub fn reason(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_string()
}

/// Map an I/O error raised while reading decrypted plaintext: age reports authentication failures
/// as `InvalidData`.
pub fn read_error(what: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::corrupt(what, "it ends too early (truncated)")
    } else if e.kind() == io::ErrorKind::InvalidData {
        Error::corrupt(what, format!("decryption failed: {}", reason(&e)))
    } else {
        Error::storage(format!("reading {what}"), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_decrypt_round_trip_and_offsets() {
        let id = DataIdentity::generate();
        for len in [0usize, 1, 65536, 65537, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let ct = id.recipient().encrypt(&data).unwrap();
            let off = age_payload_offset(&ct).unwrap();
            assert_eq!(off - 16 + age_payload_size(len as u64), ct.len() as u64);
            assert_eq!(id.decrypt(&ct, "t").unwrap(), data);
        }
    }

    #[test]
    fn tampering_is_detected() {
        let id = DataIdentity::generate();
        let mut ct = id.recipient().encrypt(b"hello photos").unwrap();
        let n = ct.len();
        ct[n - 3] ^= 1;
        assert!(id.decrypt(&ct, "t").unwrap_err().is_corrupt());
        let other = DataIdentity::generate();
        let ct = id.recipient().encrypt(b"x").unwrap();
        assert!(other.decrypt(&ct, "t").is_err());
    }

    #[test]
    fn passphrase_wrap() {
        let p = Passphrase::new("correct horse".into());
        let ct = seal_with_passphrase(&p, 10, b"secret").unwrap();
        match open_with_passphrase(&p, &ct, "k").unwrap() {
            Unwrap::Opened(v) => assert_eq!(&v[..], b"secret"),
            _ => panic!("should open"),
        }
        let wrong = Passphrase::new("wrong".into());
        assert!(matches!(
            open_with_passphrase(&wrong, &ct, "k").unwrap(),
            Unwrap::WrongPassphrase
        ));
        assert!(seal_with_passphrase(&p, 5, b"x").is_err());
    }

    #[test]
    fn subkeys_differ() {
        let m = SecretKey::generate();
        assert_ne!(m.derive("a").expose(), m.derive("b").expose());
        assert_eq!(m.derive("a").expose(), m.derive("a").expose());
    }
}
