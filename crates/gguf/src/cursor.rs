//! Bounds-checked little-endian reads over the file's bytes.

use crate::GgufError;

/// A read position in a byte slice; every read checks the remaining length first.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub(crate) fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    /// `n` bytes, or a truncation error naming `what` (built only on failure).
    pub(crate) fn take(
        &mut self,
        n: u64,
        what: impl FnOnce() -> String,
    ) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos(),
                needed: n,
                available: self.remaining(),
            });
        }
        // n <= remaining <= usize::MAX, so these conversions and the slice are in range.
        let start = self.pos;
        let end = start + n as usize;
        self.pos = end;
        Ok(&self.bytes[start..end])
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length, then that many bytes of UTF-8.
    pub(crate) fn string(&mut self, what: impl Fn() -> String) -> Result<&'a str, GgufError> {
        let len_offset = self.pos();
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: len_offset + 8,
                needed: len,
                available: self.remaining(),
            });
        }
        let start = self.pos();
        let bytes = self.take(len, &what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset: start,
        })
    }

    /// Reads an element count and checks that the remaining bytes could hold
    /// that many elements of at least `min_len` bytes each, so the caller can
    /// allocate `count` slots without trusting the file.
    pub(crate) fn count(
        &mut self,
        min_len: u64,
        what: impl Fn() -> String,
    ) -> Result<usize, GgufError> {
        let offset = self.pos();
        let count = self.u64(|| format!("{} count", what()))?;
        let max = self.remaining() / min_len.max(1);
        if count > max {
            return Err(GgufError::CountTooLarge {
                what: what(),
                count,
                offset,
                available: self.remaining(),
                max,
            });
        }
        // count <= remaining bytes, which fit in usize.
        Ok(count as usize)
    }
}

/// `x` rounded up to a multiple of `alignment` (a nonzero power of two).
pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    let mask = alignment - 1;
    x.checked_add(mask).map(|v| v & !mask)
}
