//! 256-bit identifiers (blob, pack, snapshot, index and key ids) and their hex form.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A 32-byte identifier. Blob ids are keyed hashes of content; pack, index and key ids are random.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// A fresh random id from the OS generator.
    pub fn random() -> Id {
        let mut b = [0u8; 32];
        crate::random::fill_random(&mut b);
        Id(b)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown to users.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| Error::Invalid(format!("not a 64-digit hex id: {s:?}")))?;
        Ok(Id(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::random();
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!("zz".parse::<Id>().is_err());
    }
}
