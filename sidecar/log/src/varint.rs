//! LEB128 varints (unsigned) and zigzag varints (signed), as Kafka and protobuf use them.
//!
//! Decoding works on untrusted bytes: every read is bounds-checked and a varint longer than
//! ten bytes, or one that overflows 64 bits, is an error.

#![expect(
    clippy::inline_always,
    reason = "the reads are a few instructions each, on the path every record of every \
              batch takes (measured with callgrind: left to the inliner, the record checks \
              took 40 % more instructions)"
)]

/// Appends `value` as an unsigned LEB128 varint.
pub(crate) fn put_u64(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push(value.to_le_bytes()[0] | 0x80);
        value >>= 7;
    }
    buf.push(value.to_le_bytes()[0]);
}

/// Appends `value` as a zigzag varint.
pub(crate) fn put_i64(buf: &mut Vec<u8>, value: i64) {
    put_u64(buf, ((value << 1) ^ (value >> 63)).cast_unsigned());
}

/// How many bytes [`put_u64`] writes for `value`.
pub(crate) fn len_u64(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// How many bytes [`put_i64`] writes for `value`.
pub(crate) fn len_i64(value: i64) -> usize {
    len_u64(((value << 1) ^ (value >> 63)).cast_unsigned())
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// What went wrong reading a varint-coded structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFault {
    /// The bytes ended inside a field.
    Truncated,
    /// A varint was longer than ten bytes or overflowed 64 bits.
    Overlong,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self) -> Result<u8, ReadFault> {
        let byte = *self.buf.get(self.pos).ok_or(ReadFault::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Result<u64, ReadFault> {
        // Most varints in a batch (lengths, deltas, counts) take one byte.
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        // Two bytes: a record's length, a 100-byte value's length.
        if let Some(&[low, high]) = self.buf.get(self.pos..self.pos.wrapping_add(2))
            && high < 0x80
        {
            self.pos += 2;
            return Ok(u64::from(low & 0x7f) | u64::from(high) << 7);
        }
        self.long_u64()
    }

    /// [`u64`](Self::u64) of a varint longer than one byte (or of no byte at all).
    #[inline(never)]
    fn long_u64(&mut self) -> Result<u64, ReadFault> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(ReadFault::Overlong);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ReadFault::Overlong)
    }

    #[inline(always)]
    pub(crate) fn i64(&mut self) -> Result<i64, ReadFault> {
        let raw = self.u64()?;
        Ok((raw >> 1).cast_signed() ^ -((raw & 1).cast_signed()))
    }

    /// The bytes not read yet (without reading them).
    #[inline(always)]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    #[inline(always)]
    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], ReadFault> {
        let end = self.pos.checked_add(len).ok_or(ReadFault::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(ReadFault::Truncated)?;
        self.pos = end;
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values() {
        for value in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_u64(&mut buf, value);
            assert_eq!(buf.len(), len_u64(value));
            assert_eq!(Reader::new(&buf).u64(), Ok(value));
        }
        for value in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let mut buf = Vec::new();
            put_i64(&mut buf, value);
            assert_eq!(buf.len(), len_i64(value));
            assert_eq!(Reader::new(&buf).i64(), Ok(value));
        }
    }

    proptest::proptest! {
        /// The one- and two-byte paths of `u64` read what the general loop reads, on any
        /// bytes at all.
        #[test]
        fn the_short_paths_agree_with_the_general_one(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            at in 0usize..12,
        ) {
            let at = at.min(bytes.len());
            let mut quick = Reader::new(&bytes);
            quick.pos = at;
            let mut general = quick.clone();
            proptest::prop_assert_eq!(quick.u64(), general.long_u64());
            proptest::prop_assert_eq!(quick.position(), general.position());
        }
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        assert_eq!(Reader::new(&[0x80; 11]).u64(), Err(ReadFault::Overlong));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).u64(),
            Err(ReadFault::Overlong)
        );
        assert_eq!(Reader::new(&[0x80, 0x80]).u64(), Err(ReadFault::Truncated));
        assert_eq!(Reader::new(&[]).u8(), Err(ReadFault::Truncated));
    }
}
