//! A short string held inline, so the names built from it stay `Copy`.

/// At most `CAP` bytes of UTF-8, zero-padded. Comparing the padded bytes orders the strings
/// as `str` does, because the names built on it hold no NUL (a control character).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct InlineStr<const CAP: usize> {
    bytes: [u8; CAP],
    len: u8,
}

impl<const CAP: usize> InlineStr<CAP> {
    /// Copies `text`, which the caller has checked holds at most `CAP` bytes (and `CAP` is
    /// at most 255); a longer text is cut at `CAP`, at a character boundary.
    pub(crate) const fn new(text: &str) -> InlineStr<CAP> {
        let source = text.as_bytes();
        let mut len = if source.len() < CAP {
            source.len()
        } else {
            CAP
        };
        // Back to a character boundary: continuation bytes are 0b10xx_xxxx.
        while len > 0 && len < source.len() && source[len] & 0xC0 == 0x80 {
            len -= 1;
        }
        let mut bytes = [0; CAP];
        let mut i = 0;
        while i < len {
            bytes[i] = source[i];
            i += 1;
        }
        InlineStr {
            bytes,
            len: len as u8,
        }
    }

    /// The string.
    pub(crate) fn as_str(&self) -> &str {
        // Built only from a whole `&str` cut at a character boundary, so always UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_too_long_is_cut_at_a_character_boundary() {
        assert_eq!(InlineStr::<4>::new("abc").as_str(), "abc");
        assert_eq!(InlineStr::<4>::new("abcdef").as_str(), "abcd");
        assert_eq!(InlineStr::<4>::new("abcé").as_str(), "abc");
        assert_eq!(InlineStr::<4>::new("").as_str(), "");
    }
}
