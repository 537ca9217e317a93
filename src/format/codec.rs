//! Little-endian binary writer and a bounds-checked reader shared by every on-disk structure.

use crate::error::{Error, Result};
use crate::ids::Id;

/// Appends encoded values to a byte vector.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn id(&mut self, id: &Id) {
        self.buf.extend_from_slice(&id.0);
    }
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// A byte string: u32 length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.raw(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads encoded values; every read is bounds-checked and a short input is a `Corrupt` error
/// naming `what`.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], what: &'a str) -> Self {
        Reader { data, pos: 0, what }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn err(&self, detail: impl Into<String>) -> Error {
        Error::corrupt(self.what, detail)
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.err(format!(
                "truncated at byte {} (needs {} more bytes)",
                self.pos, n
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn id(&mut self) -> Result<Id> {
        Ok(Id(self.array()?))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("text field is not UTF-8"))
    }
    /// A count of items that each take at least `min_item` bytes; refuses counts the remaining
    /// input cannot hold, so a damaged count cannot make us allocate gigabytes.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(self.err(format!("item count {n} exceeds the object size")));
        }
        Ok(n)
    }
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(a: u8, b: u16, c: u32, d: u64, e: i64, s in ".*", bs in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut w = Writer::new();
            w.u8(a); w.u16(b); w.u32(c); w.u64(d); w.i64(e); w.str(&s); w.bytes(&bs);
            let v = w.into_vec();
            let mut r = Reader::new(&v, "t");
            prop_assert_eq!(r.u8().unwrap(), a);
            prop_assert_eq!(r.u16().unwrap(), b);
            prop_assert_eq!(r.u32().unwrap(), c);
            prop_assert_eq!(r.u64().unwrap(), d);
            prop_assert_eq!(r.i64().unwrap(), e);
            prop_assert_eq!(r.str().unwrap(), s);
            prop_assert_eq!(r.bytes().unwrap(), &bs[..]);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn truncation_is_an_error(bs in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut r = Reader::new(&bs, "t");
            let _ = r.bytes();
            let _ = r.u64();
            // Never panics; either values or a Corrupt error.
        }
    }

    #[test]
    fn huge_count_refused() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let v = w.into_vec();
        assert!(Reader::new(&v, "t").count(8).is_err());
    }
}
