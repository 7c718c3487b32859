//! A short string held inline, so the names built from it stay `Copy`.

/// At most `CAP` bytes of UTF-8, zero-padded, so equal strings have equal bytes (equality
/// stays structural, for the constants matched in patterns). It orders as its `str` does,
/// reading only the bytes in use: the transition table orders States on every lookup, and a
/// State's capacity is four times its longest name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct InlineStr<const CAP: usize> {
    bytes: [u8; CAP],
    len: u8,
}

impl<const CAP: usize> InlineStr<CAP> {
    fn used(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The bytes in use after the eighth.
    fn tail(&self) -> &[u8] {
        self.used().get(8..).unwrap_or_default()
    }
}

impl<const CAP: usize> PartialOrd for InlineStr<CAP> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const CAP: usize> Ord for InlineStr<CAP> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // The first eight bytes, zero-padded, as one big-endian number order as the bytes
        // do, and they tell most names apart. When they are equal the two names are equally
        // long up to there (a name holds no NUL), so the rest of each decides.
        let head = |s: &Self| {
            let mut word = [0; 8];
            let n = CAP.min(8);
            word[..n].copy_from_slice(&s.bytes[..n]);
            u64::from_be_bytes(word)
        };
        head(self)
            .cmp(&head(other))
            .then_with(|| self.tail().cmp(other.tail()))
    }
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
        std::str::from_utf8(self.used()).unwrap_or_default()
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

    #[test]
    fn names_compare_and_order_as_their_strings() {
        let names = [
            "",
            "a",
            "ab",
            "b",
            "Confirm Price",
            "Confirm",
            "Confirm Pricing",
            "Confirm ",
            "Confirm P",
            "Error",
            "é",
            "éé",
            "ABCDEFGH",
            "ABCDEFGHI",
        ];
        for x in names {
            for y in names {
                let (a, b) = (InlineStr::<16>::new(x), InlineStr::<16>::new(y));
                assert_eq!(a == b, x == y, "{x:?} == {y:?}");
                assert_eq!(a.cmp(&b), x.cmp(y), "{x:?} cmp {y:?}");
                assert_eq!(
                    a.partial_cmp(&b),
                    x.partial_cmp(y),
                    "{x:?} partial_cmp {y:?}"
                );
            }
        }
    }
}
