//! The hand-written pre-tokenizer matchers split text exactly as a regex
//! engine running llama.cpp's expressions does.
//!
//! The reference applies each expression of a pre-tokenizer to every piece the
//! previous one left, keeping matches and the gaps between them, the way
//! llama.cpp's `unicode_regex_split` does. Expressions without `\p{..}` see
//! non-ASCII whitespace as a vertical tab, as llama.cpp's wide-regex path does.

use fancy_regex::Regex;
use ferrolm_tokenizer::{PreTokenizer, split_words};
use proptest::prelude::*;

fn expressions(pre: PreTokenizer) -> Vec<&'static str> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)";
    const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
    const CJK: &str = "[\u{4E00}-\u{9FA5}\u{0800}-\u{4E00}\u{AC00}-\u{D7FF}]+";
    const DEEPSEEK_LETTERS: &str = "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+";
    const DEEPSEEK_PUNCT: &str =
        "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+";
    match pre {
        PreTokenizer::Default => vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        PreTokenizer::Gpt2 => vec![GPT2],
        PreTokenizer::DigitsThenGpt2 => vec![r"\p{N}", GPT2],
        PreTokenizer::Llama3 => vec![LLAMA3],
        PreTokenizer::Qwen2 => vec![QWEN2],
        PreTokenizer::DeepseekLlm => {
            vec![
                "[\r\n]",
                DEEPSEEK_LETTERS,
                DEEPSEEK_PUNCT,
                r"\s+$",
                CJK,
                r"\p{N}+",
            ]
        }
        PreTokenizer::DeepseekCoder => vec!["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"],
        PreTokenizer::Falcon => vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
        PreTokenizer::Gpt4o => vec![GPT4O],
        PreTokenizer::Tekken => vec![TEKKEN],
        PreTokenizer::Bloom => vec![BLOOM],
        PreTokenizer::Viking => vec![BLOOM, r"\p{N}"],
    }
}

const ALL: &[PreTokenizer] = &[
    PreTokenizer::Default,
    PreTokenizer::Gpt2,
    PreTokenizer::DigitsThenGpt2,
    PreTokenizer::Llama3,
    PreTokenizer::Qwen2,
    PreTokenizer::DeepseekLlm,
    PreTokenizer::DeepseekCoder,
    PreTokenizer::Falcon,
    PreTokenizer::Gpt4o,
    PreTokenizer::Tekken,
    PreTokenizer::Bloom,
    PreTokenizer::Viking,
];

fn is_non_ascii_space(c: char) -> bool {
    (c as u32) > 0x7F && c.is_whitespace()
}

/// Pieces as char ranges.
fn reference_split(pre: PreTokenizer, text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut bounds = vec![chars.len()];
    if chars.is_empty() {
        bounds.clear();
    }
    for expr in expressions(pre) {
        let re = Regex::new(expr).expect("valid expression");
        let wide = !expr.contains(r"\p{");
        let mut next = Vec::new();
        let mut start = 0;
        for &end in &bounds {
            let piece: String = chars[start..end]
                .iter()
                .map(|&c| {
                    if wide && is_non_ascii_space(c) {
                        '\u{0B}'
                    } else {
                        c
                    }
                })
                .collect();
            let char_at = |byte: usize| start + piece[..byte].chars().count();
            let mut last = start;
            for m in re.find_iter(&piece) {
                let m = m.expect("regex run");
                let (a, b) = (char_at(m.start()), char_at(m.end()));
                if a > last {
                    next.push(a);
                }
                next.push(b);
                last = b;
            }
            if last < end {
                next.push(end);
            }
            start = end;
        }
        bounds = next;
    }
    let mut out = Vec::new();
    let mut start = 0;
    for end in bounds {
        out.push(chars[start..end].iter().collect());
        start = end;
    }
    out
}

fn fast_split(pre: PreTokenizer, text: &str) -> Vec<String> {
    split_words(pre, text)
        .into_iter()
        .map(|r| text[r].to_owned())
        .collect()
}

const POOL: &[&str] = &[
    "a", "b", "Z", "Q", "s", "t", "re", "ll", "S", "E", "L", "D", "M", "0", "7", "123", "4567",
    " ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "'", "'s", "'S", "'ll",
    "'Re", "!", "?", ".", ",", "(", ")", "|", "$", "+", "<", "=", ">", "^", "`", "~", "/", "-",
    "_", "@", "#", "%", "é", "É", "ß", "Ω", "\u{2126}", "\u{212A}", "ǅ", "ʰ", "日", "本", "한",
    "ࠀ", "٣", "½", "Ⅻ", "\u{A0}", "\u{3000}", "\u{2003}", "\u{85}", "\u{1C}", "\u{200D}", "😀",
    "👨", "\u{301}", "！", "Ａ", "ａ", "\u{2018}", "\u{201D}", "…", "。", "，", "、", "।", "€",
    "\u{E000}", "\u{1F}", "ǈ", "Я", "я", "ά", "\u{1F7D}", "\u{1FBE}",
];

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(0..POOL.len(), 0..48)
        .prop_map(|ix| ix.into_iter().map(|i| POOL[i]).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
    ))]

    #[test]
    fn matchers_agree_with_the_regex_engine(text in text_strategy()) {
        for &pre in ALL {
            prop_assert_eq!(fast_split(pre, &text), reference_split(pre, &text), "{:?} on {:?}", pre, text);
        }
    }
}

#[test]
fn matchers_agree_on_the_golden_texts() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden");
    let gpl = std::fs::read_to_string(dir.join("texts/gpl-3.txt")).expect("gpl-3.txt");
    let sample: String = gpl.chars().take(6000).collect();
    let mut texts = vec![sample];
    for name in ["smollm2.json", "gemma3.json"] {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).expect("golden"))
                .expect("json");
        for case in json["tokenize"].as_array().expect("cases") {
            texts.push(case["text"].as_str().expect("text").to_owned());
        }
    }
    for text in &texts {
        for &pre in ALL {
            assert_eq!(
                fast_split(pre, text),
                reference_split(pre, text),
                "{pre:?} on {text:?}"
            );
        }
    }
}

#[test]
fn pieces_cover_the_text_in_order() {
    let text = "It's 2024: naïve café, 日本語 😀👨\u{200D}👩 \t\n  end";
    for &pre in ALL {
        let ranges = split_words(pre, text);
        let mut pos = 0;
        for r in &ranges {
            assert_eq!(r.start, pos, "{pre:?}");
            assert!(r.end > r.start, "{pre:?}");
            pos = r.end;
        }
        assert_eq!(pos, text.len(), "{pre:?}");
    }
}
