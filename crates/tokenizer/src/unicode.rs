//! Code point classes as the pre-tokenizers see them, and the lenient UTF-8
//! decoding that llama.cpp applies before pre-tokenizing.
//!
//! A class is one of the top-level Unicode general categories (letter, number,
//! punctuation, mark, symbol) plus the `White_Space` property, which is what
//! the pre-tokenizer patterns (`\p{L}`, `\p{N}`, `\s`, ...) ask about.

use unicode_general_category::{GeneralCategory, get_general_category};

/// `\p{L}`.
pub(crate) const LETTER: u8 = 1;
/// `\p{N}`.
pub(crate) const NUMBER: u8 = 2;
/// `\p{P}`.
pub(crate) const PUNCT: u8 = 4;
/// `\p{M}`.
pub(crate) const MARK: u8 = 8;
/// `\p{S}`.
pub(crate) const SYMBOL: u8 = 16;
/// `\s`: the `White_Space` property.
pub(crate) const SPACE: u8 = 32;

const fn ascii_class(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' | b'a'..=b'z' => LETTER,
        b'0'..=b'9' => NUMBER,
        b'\t'..=b'\r' | b' ' => SPACE,
        b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~' => SYMBOL,
        b'!'..=b'/' | b':'..=b'@' | b'['..=b'_' | b'{'..=b'}' => PUNCT,
        _ => 0,
    }
}

static ASCII_CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ascii_class(i as u8);
        i += 1;
    }
    t
};

/// The `White_Space` code points above ASCII.
fn is_non_ascii_space(cp: u32) -> bool {
    matches!(
        cp,
        0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}

/// The class bits of one code point (surrogates and values past U+10FFFF have none).
#[inline]
pub(crate) fn class_of(cp: u32) -> u8 {
    use GeneralCategory as G;
    if cp < 128 {
        return ASCII_CLASS[cp as usize];
    }
    if is_non_ascii_space(cp) {
        return SPACE;
    }
    let Some(c) = char::from_u32(cp) else {
        return 0;
    };
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => LETTER,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => NUMBER,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::OpenPunctuation
        | G::ClosePunctuation
        | G::InitialPunctuation
        | G::FinalPunctuation
        | G::OtherPunctuation => PUNCT,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => MARK,
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => SYMBOL,
        _ => 0,
    }
}

/// Length in bytes of the UTF-8 sequence a lead byte announces, as llama.cpp
/// counts it from the high nibble (continuation bytes count as 1).
#[inline]
pub(crate) fn utf8_len(lead: u8) -> usize {
    const LEN: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LEN[(lead >> 4) as usize] as usize
}

/// The replacement character, used for bytes that do not decode.
pub(crate) const REPLACEMENT: u32 = 0xFFFD;

/// Decodes one code point at `*pos` the lenient way llama.cpp does: lead and
/// continuation bits are checked, but overlong forms and surrogates are
/// accepted. A byte that starts no valid sequence yields U+FFFD and advances by
/// one; values past U+10FFFF (which llama.cpp cannot re-encode) also yield
/// U+FFFD.
#[inline]
pub(crate) fn decode_lenient(bytes: &[u8], pos: &mut usize) -> u32 {
    let i = *pos;
    let b0 = bytes[i];
    let cont = |k: usize| bytes.get(i + k).is_some_and(|&b| b & 0xC0 == 0x80);
    if b0 < 0x80 {
        *pos += 1;
        return u32::from(b0);
    }
    let (len, init) = match b0 {
        0xC0..=0xDF => (2, u32::from(b0 & 0x1F)),
        0xE0..=0xEF => (3, u32::from(b0 & 0x0F)),
        0xF0..=0xF7 => (4, u32::from(b0 & 0x07)),
        _ => {
            *pos += 1;
            return REPLACEMENT;
        }
    };
    if !(1..len).all(cont) {
        *pos += 1;
        return REPLACEMENT;
    }
    let cp = (1..len).fold(init, |acc, k| (acc << 6) | u32::from(bytes[i + k] & 0x3F));
    *pos += len;
    if cp > 0x10FFFF { REPLACEMENT } else { cp }
}

/// Appends the UTF-8 encoding of `cp` (surrogates encoded like any other
/// three-byte value, as llama.cpp does).
#[inline]
pub(crate) fn push_utf8(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => out.extend_from_slice(&[
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        _ => out.extend_from_slice(&[
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}

/// The bytes llama.cpp actually tokenizes for a BPE fragment: valid UTF-8 is
/// kept as is; otherwise every code point is decoded leniently and encoded
/// again, so undecodable bytes become U+FFFD.
pub(crate) fn canonical_utf8(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if std::str::from_utf8(bytes).is_ok() {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut pos = 0;
    while pos < bytes.len() {
        let cp = decode_lenient(bytes, &mut pos);
        push_utf8(&mut out, cp);
    }
    std::borrow::Cow::Owned(out)
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes map to U+0100.. in byte order.
pub(crate) fn gpt2_byte_char(b: u8) -> char {
    let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable {
        return char::from(b);
    }
    let rank = (0..b)
        .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
        .count() as u32;
    char::from_u32(0x100 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Inverse of [`gpt2_byte_char`].
pub(crate) fn gpt2_char_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 {
        let b = cp as u8;
        return matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF).then_some(b);
    }
    let rank = cp.checked_sub(0x100)?;
    (0..=255u8)
        .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
        .nth(rank as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes_match_unicode_categories() {
        for b in 0u8..128 {
            let c = char::from(b);
            let expected = if matches!(b, b'\t'..=b'\r' | b' ') {
                SPACE
            } else if c.is_ascii_alphabetic() {
                LETTER
            } else if c.is_ascii_digit() {
                NUMBER
            } else {
                use GeneralCategory as G;
                match get_general_category(c) {
                    G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol => SYMBOL,
                    G::ConnectorPunctuation
                    | G::DashPunctuation
                    | G::OpenPunctuation
                    | G::ClosePunctuation
                    | G::OtherPunctuation => PUNCT,
                    _ => 0,
                }
            };
            assert_eq!(class_of(u32::from(b)), expected, "byte {b:#x}");
        }
    }

    #[test]
    fn non_ascii_classes() {
        assert_eq!(class_of('é' as u32), LETTER);
        assert_eq!(class_of('日' as u32), LETTER);
        assert_eq!(class_of('٣' as u32), NUMBER);
        assert_eq!(class_of('½' as u32), NUMBER);
        assert_eq!(class_of('。' as u32), PUNCT);
        assert_eq!(class_of('\u{301}' as u32), MARK);
        assert_eq!(class_of('€' as u32), SYMBOL);
        assert_eq!(class_of('😀' as u32), SYMBOL);
        assert_eq!(class_of(0xA0), SPACE);
        assert_eq!(class_of(0x3000), SPACE);
        assert_eq!(
            class_of(0x200D),
            0,
            "zero width joiner is a format character"
        );
        assert_eq!(class_of(0x1C), 0, "file separator is not White_Space");
        assert_eq!(class_of(0xD800), 0);
    }

    #[test]
    fn gpt2_byte_table_is_a_bijection() {
        let chars: Vec<char> = (0..=255u8).map(gpt2_byte_char).collect();
        assert_eq!(chars[usize::from(b' ')], 'Ġ');
        assert_eq!(chars[usize::from(b'\n')], 'Ċ');
        assert_eq!(chars[usize::from(b'\t')], 'ĉ');
        assert_eq!(chars[usize::from(b'a')], 'a');
        assert_eq!(chars[0xAD], 'Ń');
        for (b, &c) in chars.iter().enumerate() {
            assert_eq!(gpt2_char_byte(c), Some(b as u8));
        }
        assert_eq!(gpt2_char_byte('日'), None);
    }

    #[test]
    fn lenient_decoding_replaces_only_what_cannot_decode() {
        let bytes = b"a\xC3\xA9\xFF\xE2\x82\xAC\x80\xC0\x80\xED\xA0\x80\xF4\x90\x80\x80\xE2\x82";
        let mut pos = 0;
        let mut cps = Vec::new();
        while pos < bytes.len() {
            cps.push(decode_lenient(bytes, &mut pos));
        }
        assert_eq!(
            cps,
            vec![
                0x61,
                0xE9,
                REPLACEMENT,
                0x20AC,
                REPLACEMENT,
                0,
                0xD800,
                REPLACEMENT,
                REPLACEMENT,
                REPLACEMENT
            ]
        );
        let canon = canonical_utf8(bytes);
        assert!(canon.starts_with("aé\u{FFFD}€\u{FFFD}\0".as_bytes()));
        assert!(matches!(
            canonical_utf8("ok".as_bytes()),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
