//! Just enough MessagePack, read and written by hand: the codec's primitives.
//!
//! The writer picks the shortest encoding of every length and integer, as the MessagePack
//! specification recommends (and as `rmp` does, so the bytes are the same as before). The
//! reader borrows strings and byte strings from the frame, accepts every integer encoding of a
//! non-negative value, and never trusts a declared length: each is checked against the bytes
//! left before anything is allocated or skipped.

use std::fmt;

/// Why a value could not be read; the codec adds which field it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The frame ends before the value does.
    CutShort,
    /// The value is of another type than the one expected.
    Type {
        /// What was expected.
        expected: &'static str,
        /// What the marker byte says is there.
        found: &'static str,
    },
    /// An integer does not fit the field, or is negative.
    OutOfRange(&'static str),
    /// A string is not valid UTF-8.
    NotUtf8,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::CutShort => write!(f, "the frame ends in the middle of a value"),
            ReadError::Type { expected, found } => write!(f, "expected {expected}, found {found}"),
            ReadError::OutOfRange(what) => write!(f, "the number is out of range for {what}"),
            ReadError::NotUtf8 => write!(f, "the string is not valid UTF-8"),
        }
    }
}

/// The result of a read.
pub type Result<T> = std::result::Result<T, ReadError>;

/// What a marker byte announces, for error messages.
fn kind(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7f | 0xcc..=0xcf => "an unsigned integer",
        0xe0..=0xff | 0xd0..=0xd3 => "a signed integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc4..=0xc6 => "a byte string",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xca | 0xcb => "a float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension",
        0xc1 => "the unused marker 0xc1",
    }
}

/// A cursor over one frame.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The whole frame.
    bytes: &'a [u8],
    /// Where the next value starts.
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Bytes not read yet.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The next marker byte, without taking it.
    #[inline]
    pub fn peek(&self) -> Result<u8> {
        self.bytes.get(self.at).copied().ok_or(ReadError::CutShort)
    }

    /// Takes a nil if one is next; says whether it did.
    #[inline]
    pub fn nil(&mut self) -> bool {
        let nil = self.bytes.get(self.at) == Some(&0xc0);
        self.at += usize::from(nil);
        nil
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Ok(byte)
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(ReadError::CutShort);
        }
        let taken = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(taken)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut word = [0; N];
        word.copy_from_slice(self.take(N)?);
        Ok(word)
    }

    #[inline]
    fn length(&mut self, width: usize) -> Result<usize> {
        Ok(match width {
            1 => usize::from(self.byte()?),
            2 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    /// The length of a map.
    #[inline]
    pub fn map_len(&mut self) -> Result<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Ok(usize::from(m & 0x0f)),
            0xde => self.length(2),
            0xdf => self.length(4),
            m => Err(ReadError::Type { expected: "a map", found: kind(m) }),
        }
    }

    /// The length of an array.
    #[inline]
    pub fn array_len(&mut self) -> Result<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Ok(usize::from(m & 0x0f)),
            0xdc => self.length(2),
            0xdd => self.length(4),
            m => Err(ReadError::Type { expected: "an array", found: kind(m) }),
        }
    }

    /// A string or a byte string, as bytes; `expected` names what was wanted in the error.
    #[inline]
    fn raw(&mut self, expected: &'static str) -> Result<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xc4 | 0xd9 => self.length(1)?,
            0xc5 | 0xda => self.length(2)?,
            0xc6 | 0xdb => self.length(4)?,
            m => return Err(ReadError::Type { expected, found: kind(m) }),
        };
        self.take(len)
    }

    /// A map key: a string, or a byte string, as bytes (keys are matched byte for byte).
    #[inline]
    pub fn key(&mut self) -> Result<&'a [u8]> {
        self.raw("a string key")
    }

    /// A byte string (or a string, taken as its UTF-8 bytes).
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        self.raw("a byte string")
    }

    /// A string (or a byte string holding UTF-8).
    #[inline]
    pub fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.raw("a string")?).map_err(|_| ReadError::NotUtf8)
    }

    /// A non-negative integer in any encoding.
    #[inline]
    pub fn uint(&mut self) -> Result<u64> {
        let marker = self.byte()?;
        let signed = |value: i64| u64::try_from(value).map_err(|_| ReadError::OutOfRange("uint"));
        match marker {
            0x00..=0x7f => Ok(u64::from(marker)),
            0xcc => Ok(u64::from(self.byte()?)),
            0xcd => Ok(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Ok(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Ok(u64::from_be_bytes(self.be()?)),
            0xd0 => signed(i64::from(i8::from_be_bytes(self.be()?))),
            0xd1 => signed(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => signed(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => signed(i64::from_be_bytes(self.be()?)),
            0xe0..=0xff => Err(ReadError::OutOfRange("uint")),
            m => Err(ReadError::Type { expected: "an unsigned integer", found: kind(m) }),
        }
    }

    /// A boolean.
    #[inline]
    pub fn bool(&mut self) -> Result<bool> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            m => Err(ReadError::Type { expected: "a boolean", found: kind(m) }),
        }
    }

    /// Takes `prefix` and then a byte string, if that is exactly what comes next; otherwise
    /// takes nothing. The fast path for a record in the form the codec writes.
    #[inline]
    pub fn fast_value(&mut self, prefix: &[u8]) -> Option<&'a [u8]> {
        let mut ahead = self.clone();
        ahead.literal(prefix)?;
        let value = ahead.bin()?;
        *self = ahead;
        Some(value)
    }

    /// Takes `prefix`, a byte string, `infix` and another byte string, if that is exactly what
    /// comes next; otherwise takes nothing. The fast path for a record of two byte strings.
    #[inline]
    pub fn fast_pair(&mut self, prefix: &[u8], infix: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
        let mut ahead = self.clone();
        let first = ahead.fast_value(prefix)?;
        let second = ahead.fast_value(infix)?;
        *self = ahead;
        Some((first, second))
    }

    /// Takes `{"offset": uint, "timestamp": uint, "value": bin}` with its keys in that order,
    /// if that is exactly what comes next; otherwise takes nothing.
    #[inline]
    pub fn fast_record(&mut self) -> Option<(u64, u64, &'a [u8])> {
        let mut ahead = self.clone();
        ahead.literal(b"\x83\xa6offset")?;
        let offset = ahead.uint().ok()?;
        ahead.literal(b"\xa9timestamp")?;
        let timestamp = ahead.uint().ok()?;
        let value = ahead.fast_value(b"\xa5value")?;
        *self = ahead;
        Some((offset, timestamp, value))
    }

    /// Takes `bytes` if they come next.
    #[inline]
    fn literal(&mut self, bytes: &[u8]) -> Option<()> {
        let next = self.bytes.get(self.at..self.at + bytes.len())?;
        (next == bytes).then(|| self.at += bytes.len())
    }

    /// Takes a `bin` value if one comes next.
    #[inline]
    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.bytes.get(self.at)? {
            0xc4 => usize::from(*self.bytes.get(self.at + 1)?) + 2,
            _ => return self.bytes().ok(),
        };
        let value = self.bytes.get(self.at + 2..self.at + len)?;
        self.at += len;
        Some(value)
    }

    /// Skips one value of any type, however deeply nested, without recursion.
    pub fn skip(&mut self) -> Result<()> {
        // Values still to skip: a container adds its elements.
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let marker = self.byte()?;
            let (elements, bytes) = match marker {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
                0x80..=0x8f => (2 * usize::from(marker & 0x0f), 0),
                0x90..=0x9f => (usize::from(marker & 0x0f), 0),
                0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
                0xc4 | 0xd9 => (0, self.length(1)?),
                0xc5 | 0xda => (0, self.length(2)?),
                0xc6 | 0xdb => (0, self.length(4)?),
                0xc7 => (0, 1 + self.length(1)?),
                0xc8 => (0, 1 + self.length(2)?),
                0xc9 => (0, 1 + self.length(4)?),
                0xcc | 0xd0 => (0, 1),
                0xcd | 0xd1 => (0, 2),
                0xca | 0xce | 0xd2 => (0, 4),
                0xcb | 0xcf | 0xd3 => (0, 8),
                0xd4 => (0, 2),
                0xd5 => (0, 3),
                0xd6 => (0, 5),
                0xd7 => (0, 9),
                0xd8 => (0, 17),
                0xdc => (self.length(2)?, 0),
                0xdd => (self.length(4)?, 0),
                0xde => (2 * self.length(2)?, 0),
                0xdf => (self.length(4)?.saturating_mul(2), 0),
                0xc1 => return Err(ReadError::Type { expected: "a value", found: kind(marker) }),
            };
            self.take(bytes)?;
            pending += elements;
            // Every value takes at least a byte: a count beyond the bytes left is a lie.
            if pending > self.remaining() {
                return Err(ReadError::CutShort);
            }
        }
        Ok(())
    }
}

/// Appends a map header for `len` entries.
pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, 0x80, 16, [0xde, 0xdf]);
}

/// Appends an array header for `len` elements.
pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, 0x90, 16, [0xdc, 0xdd]);
}

/// Appends a string.
#[inline]
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let len = text.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len < 256 {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else {
        write_len(out, len, 0, 0, [0xda, 0xdb]);
    }
    out.extend_from_slice(text.as_bytes());
}

/// Appends a byte string.
#[inline]
pub fn write_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    write_bin_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends the header of a byte string of `len` bytes, which the caller writes next.
#[inline]
pub fn write_bin_len(out: &mut Vec<u8>, len: usize) {
    if len < 256 {
        out.extend_from_slice(&[0xc4, len as u8]);
    } else {
        write_len(out, len, 0, 0, [0xc5, 0xc6]);
    }
}

/// Appends a non-negative integer in its shortest encoding.
#[inline]
pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    if value < 128 {
        out.push(value as u8);
    } else if value < 1 << 8 {
        out.extend_from_slice(&[0xcc, value as u8]);
    } else if value < 1 << 16 {
        out.push(0xcd);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value < 1 << 32 {
        out.push(0xce);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Appends a boolean.
#[inline]
pub fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { 0xc3 } else { 0xc2 });
}

/// A length in its fixed form (`fixed | len` when below `fixed_limit`), else with 16 or 32
/// bits after the marker of that width. Lengths beyond 32 bits cannot be encoded; the frame
/// limits keep every length far below.
#[inline]
fn write_len(out: &mut Vec<u8>, len: usize, fixed: u8, fixed_limit: usize, wide: [u8; 2]) {
    if len < fixed_limit {
        out.push(fixed | len as u8);
    } else if len < 1 << 16 {
        out.push(wide[0]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(wide[1]);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(write: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out);
        out
    }

    #[test]
    fn shortest_encodings() {
        assert_eq!(written(|o| write_uint(o, 1)), [0x01]);
        assert_eq!(written(|o| write_uint(o, 200)), [0xcc, 200]);
        assert_eq!(written(|o| write_uint(o, 303)), [0xcd, 0x01, 0x2f]);
        assert_eq!(written(|o| write_uint(o, 1 << 16)), [0xce, 0, 1, 0, 0]);
        assert_eq!(written(|o| write_uint(o, 1 << 32)), [0xcf, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(written(|o| write_str(o, "hi")), b"\xa2hi");
        assert_eq!(written(|o| write_str(o, &"x".repeat(40)))[..2], [0xd9, 40]);
        assert_eq!(written(|o| write_str(o, &"x".repeat(300)))[..3], [0xda, 1, 44]);
        assert_eq!(written(|o| write_bin(o, b"hi")), b"\xc4\x02hi");
        assert_eq!(written(|o| write_bin(o, &[0; 300]))[..3], [0xc5, 1, 44]);
        assert_eq!(written(|o| write_array_len(o, 3)), [0x93]);
        assert_eq!(written(|o| write_array_len(o, 1000)), [0xdc, 3, 232]);
        assert_eq!(written(|o| write_map_len(o, 70_000)), [0xdf, 0, 1, 17, 112]);
        assert_eq!(written(|o| write_bool(o, false)), [0xc2]);
        assert_eq!(written(|o| write_bool(o, true)), [0xc3]);
    }

    #[test]
    fn booleans_and_nothing_else() {
        assert_eq!(Reader::new(&[0xc3]).bool(), Ok(true));
        assert_eq!(Reader::new(&[0xc2]).bool(), Ok(false));
        assert_eq!(
            Reader::new(&[0x01]).bool(),
            Err(ReadError::Type { expected: "a boolean", found: "an unsigned integer" })
        );
        assert_eq!(Reader::new(&[]).bool(), Err(ReadError::CutShort));
    }

    #[test]
    fn integers_in_any_encoding_but_not_negative() {
        for bytes in
            [&[0x05][..], &[0xcc, 5], &[0xcd, 0, 5], &[0xd0, 5], &[0xd3, 0, 0, 0, 0, 0, 0, 0, 5]]
        {
            assert_eq!(Reader::new(bytes).uint(), Ok(5), "{bytes:?}");
        }
        assert_eq!(Reader::new(&[0xff]).uint(), Err(ReadError::OutOfRange("uint")));
        assert_eq!(Reader::new(&[0xd0, 0xff]).uint(), Err(ReadError::OutOfRange("uint")));
        assert!(matches!(Reader::new(&[0xca, 0, 0, 0, 0]).uint(), Err(ReadError::Type { .. })));
        assert_eq!(Reader::new(&[0xcd, 0]).uint(), Err(ReadError::CutShort));
    }

    #[test]
    fn skipping_nested_values_and_refusing_lies() {
        // [ {"a": [1, 2.0, nil]}, ext8 of 2 bytes, "x" ], then 0x07.
        let bytes = b"\x93\x81\xa1a\x93\x01\xca\0\0\0\0\xc0\xc7\x02\x01ab\xa1x\x07";
        let mut reader = Reader::new(bytes);
        reader.skip().unwrap();
        assert_eq!(reader.uint(), Ok(7));
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100_000).chain([0x90]).collect();
        let mut reader = Reader::new(&deep);
        assert_eq!(reader.skip(), Ok(()));
        assert_eq!(reader.remaining(), 0);
        assert_eq!(Reader::new(b"\xdd\xff\xff\xff\xff\x01").skip(), Err(ReadError::CutShort));
        assert_eq!(Reader::new(b"\xdb\xff\xff\xff\xffab").skip(), Err(ReadError::CutShort));
        assert!(Reader::new(b"\xc1").skip().is_err());
    }
}
