//! Pre-tokenizers: the splitting of text into words before byte-level BPE.
//!
//! Each pre-tokenizer that `tokenizer.ggml.pre` can name is a list of regular
//! expressions applied one after the other: every expression splits each piece
//! left by the previous one into its matches and the gaps between them, and no
//! match crosses a piece boundary. The expressions are implemented here as
//! hand-written matchers over code points and their Unicode classes, with the
//! same leftmost-first, backtracking semantics a regex engine gives them (the
//! tests compare every matcher with a regex engine running the expression).

use crate::unicode::{LETTER, NUMBER, PUNCT, SPACE, class_of, decode_lenient};

/// A pre-tokenizer family, as `tokenizer.ggml.pre` names it for byte-level
/// BPE vocabularies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreTokenizer {
    /// llama.cpp's fallback for `default`: punctuation runs, the GPT-2
    /// expression, number runs, then groups of three ASCII digits.
    Default,
    /// GPT-2's expression: contractions, optional space plus letters, numbers
    /// or other symbols, and whitespace runs (`gpt-2`, `mpt`, `olmo`, ...).
    Gpt2,
    /// Single digits first, then the GPT-2 expression (`starcoder`, `refact`,
    /// `command-r`, `smollm`, ...).
    DigitsThenGpt2,
    /// Llama 3's expression: case-insensitive contractions, numbers in groups
    /// of up to three, newlines kept with their run (`llama-bpe`, `dbrx`, ...).
    Llama3,
    /// The Llama 3 expression with single digits (`qwen2`, `stablelm2`, ...).
    Qwen2,
    /// DeepSeek LLM's expressions (newlines, Latin/Greek/Cyrillic letter runs,
    /// ASCII and full-width punctuation, CJK runs, numbers).
    DeepseekLlm,
    /// DeepSeek Coder's expressions (newlines, letters, punctuation, CJK, single digits).
    DeepseekCoder,
    /// Falcon's expressions (punctuation runs, GPT-2, groups of three digits).
    Falcon,
    /// GPT-4o's expression (`gpt-4o`, `llama4`): words split at case changes,
    /// numbers in groups of up to three.
    Gpt4o,
    /// Mistral's Tekken expression: like GPT-4o without contractions, single digits.
    Tekken,
    /// BLOOM's expression (`bloom`, `poro-chat`, `gpt3-finnish`).
    Bloom,
    /// Viking's expressions: BLOOM's, then single digits.
    Viking,
}

/// How a `tokenizer.ggml.pre` name configures a byte-level BPE vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BpePreset {
    pub pre: PreTokenizer,
    /// Words that are whole tokens skip the merges.
    pub ignore_merges: bool,
    /// The BOS default when `tokenizer.ggml.add_bos_token` is absent.
    pub add_bos: bool,
}

impl PreTokenizer {
    /// Every `tokenizer.ggml.pre` name this crate understands for BPE vocabularies.
    pub const NAMES: &'static [&'static str] = &[
        "default",
        "llama3",
        "llama-v3",
        "llama-bpe",
        "falcon3",
        "falcon-h1",
        "pixtral",
        "midm-2.0",
        "lfm2",
        "dbrx",
        "smaug-bpe",
        "deepseek-llm",
        "deepseek-coder",
        "falcon",
        "mpt",
        "starcoder",
        "gpt-2",
        "phi-2",
        "jina-es",
        "jina-de",
        "gigachat",
        "jina-v2-es",
        "jina-v2-de",
        "a.x-4.0",
        "mellum",
        "olmo",
        "jais",
        "trillion",
        "granite-docling",
        "exaone4",
        "refact",
        "command-r",
        "smollm",
        "codeshell",
        "exaone",
        "minerva-7b",
        "qwen2",
        "deepseek-r1-qwen",
        "megrez",
        "stablelm2",
        "hunyuan",
        "gpt-4o",
        "llama4",
        "tekken",
        "bloom",
        "poro-chat",
        "gpt3-finnish",
        "viking",
    ];

    /// The pre-tokenizer a `tokenizer.ggml.pre` name selects, or `None` for a
    /// name this crate does not know.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        Self::preset(name).map(|p| p.pre)
    }

    /// A `tokenizer.ggml.pre` name that selects this pre-tokenizer (with no
    /// other effect on the vocabulary).
    pub fn name(self) -> &'static str {
        match self {
            PreTokenizer::Default => "default",
            PreTokenizer::Gpt2 => "gpt-2",
            PreTokenizer::DigitsThenGpt2 => "starcoder",
            PreTokenizer::Llama3 => "dbrx",
            PreTokenizer::Qwen2 => "qwen2",
            PreTokenizer::DeepseekLlm => "deepseek-llm",
            PreTokenizer::DeepseekCoder => "deepseek-coder",
            PreTokenizer::Falcon => "falcon",
            PreTokenizer::Gpt4o => "gpt-4o",
            PreTokenizer::Tekken => "tekken",
            PreTokenizer::Bloom => "bloom",
            PreTokenizer::Viking => "viking",
        }
    }

    pub(crate) fn preset(name: &str) -> Option<BpePreset> {
        use PreTokenizer as P;
        let plain = |pre| BpePreset {
            pre,
            ignore_merges: false,
            add_bos: false,
        };
        let preset = match name {
            "default" => plain(P::Default),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => BpePreset {
                pre: P::Llama3,
                ignore_merges: true,
                add_bos: true,
            },
            "dbrx" | "smaug-bpe" => plain(P::Llama3),
            "deepseek-llm" => plain(P::DeepseekLlm),
            "deepseek-coder" => plain(P::DeepseekCoder),
            "falcon" => plain(P::Falcon),
            "mpt" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "olmo" | "jais" | "trillion"
            | "granite-docling" | "exaone4" => plain(P::Gpt2),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => plain(P::DigitsThenGpt2),
            "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" | "hunyuan" => plain(P::Qwen2),
            "gpt-4o" | "llama4" => plain(P::Gpt4o),
            "tekken" => BpePreset {
                pre: P::Tekken,
                ignore_merges: true,
                add_bos: true,
            },
            "bloom" | "poro-chat" | "gpt3-finnish" => plain(P::Bloom),
            "viking" => plain(P::Viking),
            _ => return None,
        };
        Some(preset)
    }

    fn stages(self) -> &'static [Stage] {
        use Stage as S;
        match self {
            PreTokenizer::Default => &[
                S::PunctRun { backtick: false },
                S::Gpt2,
                S::NumberRun,
                S::Ascii3Digits,
            ],
            PreTokenizer::Gpt2 => &[S::Gpt2],
            PreTokenizer::DigitsThenGpt2 => &[S::EachNumber, S::Gpt2],
            PreTokenizer::Llama3 => &[S::Llama3 { max_digits: 3 }],
            PreTokenizer::Qwen2 => &[S::Llama3 { max_digits: 1 }],
            PreTokenizer::DeepseekLlm => &[
                S::EachNewline,
                S::SpaceThenClass(Class::DeepseekLetters),
                S::SpaceThenClass(Class::DeepseekPunct),
                S::TrailingSpace,
                S::ClassRun(Class::Cjk),
                S::NumberRun,
            ],
            PreTokenizer::DeepseekCoder => &[
                S::EachNewline,
                S::SpaceThenClass(Class::Letter),
                S::SpaceThenClass(Class::Punct),
                S::ClassRun(Class::Cjk),
                S::EachNumber,
            ],
            PreTokenizer::Falcon => &[S::PunctRun { backtick: true }, S::Gpt2, S::Ascii3Digits],
            PreTokenizer::Gpt4o => &[S::CaseWords {
                max_digits: 3,
                contractions: true,
                final_space_run: true,
            }],
            PreTokenizer::Tekken => &[S::CaseWords {
                max_digits: 1,
                contractions: false,
                final_space_run: false,
            }],
            PreTokenizer::Bloom => &[S::Bloom],
            PreTokenizer::Viking => &[S::Bloom, S::EachNumber],
        }
    }
}

/// One expression of a pre-tokenizer.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3 { max_digits: usize },
    /// GPT-4o's expression as llama.cpp writes it, where "upper" means a letter
    /// other than a-z and "lower" a letter other than A-Z:
    /// `P?U*L+C?|P?U+L*C?|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// with `P = [^\r\n\p{L}\p{N}]` and `C` the optional contraction.
    CaseWords {
        max_digits: usize,
        contractions: bool,
        final_space_run: bool,
    },
    /// `\p{N}`
    EachNumber,
    /// `\p{N}+`
    NumberRun,
    /// `[0-9][0-9][0-9]`
    Ascii3Digits,
    /// `[\p{P}\$\+<=>\^~\|]+`, with `` ` `` added for Falcon.
    PunctRun { backtick: bool },
    /// `[\r\n]`
    EachNewline,
    /// `\s?[class]+`
    SpaceThenClass(Class),
    /// `\s+$`
    TrailingSpace,
    /// `[class]+`
    ClassRun(Class),
    /// ` ?[^(\s|.,!?…。，、।۔،)]+`
    Bloom,
}

/// Character classes of the DeepSeek expressions and friends.
#[derive(Clone, Copy, Debug)]
enum Class {
    Letter,
    Punct,
    DeepseekLetters,
    DeepseekPunct,
    Cjk,
}

/// DeepSeek LLM's letter class: cased letters of Latin, Greek, Cyrillic,
/// Armenian, Georgian, Cherokee, Glagolitic, Coptic, Deseret, ... scripts.
const DEEPSEEK_LETTERS: &[(u32, u32)] = &[
    (0x41, 0x5A),
    (0x61, 0x7A),
    (0xB5, 0xB5),
    (0xC0, 0xD6),
    (0xD8, 0xF6),
    (0xF8, 0x1BA),
    (0x1BC, 0x1BF),
    (0x1C4, 0x293),
    (0x295, 0x2AF),
    (0x370, 0x373),
    (0x376, 0x377),
    (0x37B, 0x37D),
    (0x37F, 0x37F),
    (0x386, 0x386),
    (0x388, 0x38A),
    (0x38C, 0x38C),
    (0x38E, 0x3A1),
    (0x3A3, 0x3F5),
    (0x3F7, 0x481),
    (0x48A, 0x52F),
    (0x531, 0x556),
    (0x10A0, 0x10C5),
    (0x13A0, 0x13F5),
    (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF),
    (0x1D00, 0x1D2B),
    (0x1D6B, 0x1D77),
    (0x1D79, 0x1D9A),
    (0x1E00, 0x1F15),
    (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D),
    (0x1F50, 0x1F57),
    (0x1F59, 0x1F59),
    (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D),
    (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC),
    (0x1FBE, 0x1FBE),
    (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB),
    (0x1FE0, 0x1FEC),
    (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC),
    (0x2102, 0x2102),
    (0x2107, 0x2107),
    (0x210A, 0x2113),
    (0x2115, 0x2115),
    (0x2119, 0x211D),
    (0x2124, 0x2124),
    (0x2126, 0x2126),
    (0x2128, 0x2128),
    (0x212A, 0x212D),
    (0x212F, 0x2134),
    (0x2139, 0x2139),
    (0x213C, 0x213F),
    (0x2145, 0x2149),
    (0x214E, 0x214E),
    (0x2183, 0x2184),
    (0x2C00, 0x2C7B),
    (0x2C7E, 0x2CE4),
    (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF3),
    (0xA640, 0xA66D),
    (0xA680, 0xA69B),
    (0xA722, 0xA76F),
    (0xA771, 0xA787),
    (0xA78B, 0xA78E),
    (0xAB70, 0xABBF),
    (0xFB00, 0xFB06),
    (0xFB13, 0xFB17),
    (0xFF21, 0xFF3A),
    (0xFF41, 0xFF5A),
    (0x10400, 0x1044F),
    (0x104B0, 0x104D3),
    (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2),
    (0x118A0, 0x118DF),
    (0x1E900, 0x1E943),
];

/// DeepSeek LLM's punctuation class: ASCII punctuation and symbols, their
/// full-width forms, curly quotes, and the CJK ideographic space, comma and stop.
const DEEPSEEK_PUNCT: &[(u32, u32)] = &[
    (0x21, 0x2F),
    (0x3A, 0x7E),
    (0x2018, 0x201F),
    (0x3000, 0x3002),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF5E),
];

/// `[一-龥ࠀ-一가-퟿]`: CJK ideographs, most scripts between U+0800 and
/// U+4E00, and Hangul.
const CJK: &[(u32, u32)] = &[(0x800, 0x4E00), (0x4E00, 0x9FA5), (0xAC00, 0xD7FF)];

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&cp))
}

impl Class {
    /// Whether a code point is in the class. Whitespace above ASCII never is:
    /// the expressions without `\p{..}` are matched on text in which such
    /// whitespace has been replaced by a vertical tab.
    fn contains(self, cp: u32, cls: u8) -> bool {
        match self {
            Class::Letter => cls & LETTER != 0,
            Class::Punct => cls & PUNCT != 0,
            Class::DeepseekLetters => cls & SPACE == 0 && in_ranges(DEEPSEEK_LETTERS, cp),
            Class::DeepseekPunct => cls & SPACE == 0 && in_ranges(DEEPSEEK_PUNCT, cp),
            Class::Cjk => cls & SPACE == 0 && in_ranges(CJK, cp),
        }
    }
}

/// Decoded text: one entry per code point, with its class and the byte offset
/// where it starts in the (canonical) text.
#[derive(Default)]
pub(crate) struct Units {
    cps: Vec<u32>,
    cls: Vec<u8>,
    offs: Vec<u32>,
    bounds: Vec<usize>,
    next_bounds: Vec<usize>,
}

impl Units {
    /// Splits `text` (canonical UTF-8: see [`crate::unicode::canonical_utf8`])
    /// into words and calls `word` with the byte range of each, in order.
    pub(crate) fn split(
        &mut self,
        pre: PreTokenizer,
        text: &[u8],
        mut word: impl FnMut(usize, usize),
    ) {
        self.cps.clear();
        self.cls.clear();
        self.offs.clear();
        let mut pos = 0;
        while pos < text.len() {
            self.offs.push(pos as u32);
            let cp = decode_lenient(text, &mut pos);
            self.cps.push(cp);
            self.cls.push(class_of(cp));
        }
        self.offs.push(text.len() as u32);
        let n = self.cps.len();
        self.bounds.clear();
        if n == 0 {
            return;
        }
        self.bounds.push(n);
        for stage in pre.stages() {
            self.next_bounds.clear();
            let mut start = 0;
            for &end in &self.bounds {
                let view = View {
                    cps: &self.cps,
                    cls: &self.cls,
                    end,
                };
                view.split(*stage, start, &mut self.next_bounds);
                start = end;
            }
            std::mem::swap(&mut self.bounds, &mut self.next_bounds);
        }
        let mut start = 0;
        for &end in &self.bounds {
            word(self.offs[start] as usize, self.offs[end] as usize);
            start = end;
        }
    }
}

/// Splits `text` into words with a pre-tokenizer and returns them as byte
/// ranges of the text (for inspection and tests; the encoder uses the same code).
pub fn split_words(pre: PreTokenizer, text: &str) -> Vec<std::ops::Range<usize>> {
    let mut units = Units::default();
    let mut out = Vec::new();
    units.split(pre, text.as_bytes(), |a, b| out.push(a..b));
    out
}

/// One piece of text, bounded at `end`: reads past it see nothing, as a regex
/// run on the piece alone would.
struct View<'a> {
    cps: &'a [u32],
    cls: &'a [u8],
    end: usize,
}

const NONE: u32 = u32::MAX;

impl View<'_> {
    #[inline]
    fn cp(&self, i: usize) -> u32 {
        if i < self.end { self.cps[i] } else { NONE }
    }

    /// Class bits; 0 past the end.
    #[inline]
    fn cls(&self, i: usize) -> u8 {
        if i < self.end { self.cls[i] } else { 0 }
    }

    #[inline]
    fn has(&self, i: usize) -> bool {
        i < self.end
    }

    #[inline]
    fn is_letter(&self, i: usize) -> bool {
        self.cls(i) & LETTER != 0
    }

    #[inline]
    fn is_number(&self, i: usize) -> bool {
        self.cls(i) & NUMBER != 0
    }

    #[inline]
    fn is_space(&self, i: usize) -> bool {
        self.cls(i) & SPACE != 0
    }

    /// `[^\s\p{L}\p{N}]`
    #[inline]
    fn is_other(&self, i: usize) -> bool {
        self.has(i) && self.cls(i) & (SPACE | LETTER | NUMBER) == 0
    }

    fn run(&self, mut i: usize, pred: impl Fn(&Self, usize) -> bool) -> usize {
        while i < self.end && pred(self, i) {
            i += 1;
        }
        i
    }

    /// Splits `[start, self.end)` into matches of `stage` and the gaps between
    /// them, pushing each piece's end.
    fn split(&self, stage: Stage, start: usize, out: &mut Vec<usize>) {
        let mut gap = start;
        let mut pos = start;
        while pos < self.end {
            match self.match_at(stage, pos) {
                Some(m) => {
                    debug_assert!(m > pos && m <= self.end);
                    if gap < pos {
                        out.push(pos);
                    }
                    out.push(m);
                    pos = m;
                    gap = m;
                }
                None => pos += 1,
            }
        }
        if gap < self.end {
            out.push(self.end);
        }
    }

    /// The end of the match of `stage` starting exactly at `pos`, if any.
    fn match_at(&self, stage: Stage, pos: usize) -> Option<usize> {
        match stage {
            Stage::Gpt2 => self.gpt2(pos),
            Stage::Llama3 { max_digits } => self.llama3(pos, max_digits),
            Stage::CaseWords {
                max_digits,
                contractions,
                final_space_run,
            } => self.case_words(pos, max_digits, contractions, final_space_run),
            Stage::EachNumber => self.is_number(pos).then_some(pos + 1),
            Stage::NumberRun => self.is_number(pos).then(|| self.run(pos, Self::is_number)),
            Stage::Ascii3Digits => {
                let digit = |i| matches!(self.cp(i), 0x30..=0x39);
                (digit(pos) && digit(pos + 1) && digit(pos + 2)).then_some(pos + 3)
            }
            Stage::PunctRun { backtick } => {
                let punct = |v: &Self, i: usize| {
                    v.cls(i) & PUNCT != 0
                        || matches!(
                            v.cp(i),
                            0x24 | 0x2B | 0x3C | 0x3D | 0x3E | 0x5E | 0x7E | 0x7C
                        )
                        || (backtick && v.cp(i) == 0x60)
                };
                punct(self, pos).then(|| self.run(pos, punct))
            }
            Stage::EachNewline => matches!(self.cp(pos), 0x0A | 0x0D).then_some(pos + 1),
            Stage::SpaceThenClass(class) => {
                let inside = |v: &Self, i: usize| v.has(i) && class.contains(v.cp(i), v.cls(i));
                let first = if self.is_space(pos) && inside(self, pos + 1) {
                    pos + 1
                } else {
                    pos
                };
                inside(self, first).then(|| self.run(first, inside))
            }
            Stage::TrailingSpace => (self.is_space(pos)
                && self.run(pos, Self::is_space) == self.end)
                .then_some(self.end),
            Stage::ClassRun(class) => {
                let inside = |v: &Self, i: usize| v.has(i) && class.contains(v.cp(i), v.cls(i));
                inside(self, pos).then(|| self.run(pos, inside))
            }
            Stage::Bloom => {
                let word = |v: &Self, i: usize| {
                    v.has(i)
                        && !v.is_space(i)
                        && !matches!(
                            v.cp(i),
                            0x28 | 0x7C
                                | 0x2E
                                | 0x2C
                                | 0x21
                                | 0x3F
                                | 0x2026
                                | 0x3002
                                | 0xFF0C
                                | 0x3001
                                | 0x0964
                                | 0x06D4
                                | 0x060C
                                | 0x29
                        )
                };
                let first = if self.cp(pos) == 0x20 && word(self, pos + 1) {
                    pos + 1
                } else {
                    pos
                };
                word(self, first).then(|| self.run(first, word))
            }
        }
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` (`fold`: also upper case), returning the end.
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.cp(pos) != u32::from(b'\'') {
            return None;
        }
        let low = |i: usize| {
            let c = self.cp(i);
            if fold && (0x41..=0x5A).contains(&c) {
                c + 0x20
            } else {
                c
            }
        };
        let (a, b) = (low(pos + 1), low(pos + 2));
        let is = |c: u32, x: u8| c == u32::from(x);
        if is(a, b's') || is(a, b't') || is(a, b'm') || is(a, b'd') {
            return Some(pos + 2);
        }
        if (is(a, b'r') && is(b, b'e'))
            || (is(a, b'v') && is(b, b'e'))
            || (is(a, b'l') && is(b, b'l'))
        {
            return Some(pos + 3);
        }
        None
    }

    /// `\s+(?!\S)` then (when `plain_too`) `\s+`.
    fn space_run(&self, pos: usize, plain_too: bool) -> Option<usize> {
        let end = self.run(pos, Self::is_space);
        let n = end - pos;
        if n == 0 {
            None
        } else if end == self.end {
            Some(end)
        } else if n > 1 {
            Some(end - 1)
        } else if plain_too {
            Some(end)
        } else {
            None
        }
    }

    /// `\s*[\r\n]+`: a whitespace run up to its last CR or LF.
    fn space_to_newline(&self, pos: usize) -> Option<usize> {
        let end = self.run(pos, Self::is_space);
        (pos..end)
            .rev()
            .find(|&i| matches!(self.cp(i), 0x0A | 0x0D))
            .map(|i| i + 1)
    }

    fn gpt2(&self, pos: usize) -> Option<usize> {
        if let Some(m) = self.contraction(pos, false) {
            return Some(m);
        }
        let first = if self.cp(pos) == 0x20 { pos + 1 } else { pos };
        if self.is_letter(first) {
            return Some(self.run(first, Self::is_letter));
        }
        if self.is_number(first) {
            return Some(self.run(first, Self::is_number));
        }
        if self.is_other(first) {
            return Some(self.run(first, Self::is_other));
        }
        self.space_run(pos, false)
    }

    fn llama3(&self, pos: usize, max_digits: usize) -> Option<usize> {
        if let Some(m) = self.contraction(pos, true) {
            return Some(m);
        }
        let c = self.cp(pos);
        if !matches!(c, 0x0A | 0x0D)
            && !self.is_number(pos)
            && (self.is_letter(pos) || self.is_letter(pos + 1))
        {
            return Some(self.run(pos + 1, Self::is_letter));
        }
        if self.is_number(pos) {
            return Some(self.run(pos, Self::is_number).min(pos + max_digits));
        }
        let first = if c == 0x20 { pos + 1 } else { pos };
        if self.is_other(first) {
            let m = self.run(first, Self::is_other);
            return Some(self.run(m, |v, i| matches!(v.cp(i), 0x0A | 0x0D)));
        }
        self.space_to_newline(pos)
            .or_else(|| self.space_run(pos, true))
    }

    fn case_words(
        &self,
        pos: usize,
        max_digits: usize,
        contractions: bool,
        final_space_run: bool,
    ) -> Option<usize> {
        let upper = |v: &Self, i: usize| v.is_letter(i) && !(0x61..=0x7A).contains(&v.cp(i));
        let lower = |v: &Self, i: usize| v.is_letter(i) && !(0x41..=0x5A).contains(&v.cp(i));
        let tail = |m: usize| {
            if contractions {
                self.contraction(m, true).unwrap_or(m)
            } else {
                m
            }
        };
        let c = self.cp(pos);
        let word_start = if self.is_letter(pos) {
            Some(pos)
        } else if self.has(pos) && !matches!(c, 0x0A | 0x0D) && !self.is_number(pos) {
            Some(pos + 1)
        } else {
            None
        };
        if let Some(s) = word_start {
            // U*L+: the greedy upper run backs off to the last position where a lower letter can start.
            let u_end = self.run(s, upper);
            if let Some(k) = (s..=u_end).rev().find(|&k| lower(self, k)) {
                return Some(tail(self.run(k, lower)));
            }
            // U+L*
            if u_end > s {
                return Some(tail(self.run(u_end, lower)));
            }
        }
        if self.is_number(pos) {
            return Some(self.run(pos, Self::is_number).min(pos + max_digits));
        }
        let first = if c == 0x20 { pos + 1 } else { pos };
        if self.is_other(first) {
            let m = self.run(first, Self::is_other);
            return Some(self.run(m, |v, i| matches!(v.cp(i), 0x0A | 0x0D | 0x2F)));
        }
        self.space_to_newline(pos)
            .or_else(|| self.space_run(pos, final_space_run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        split_words(pre, text)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn gpt2_splits_contractions_words_and_spaces() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "don't  stop  \tnow's 42x"),
            vec![
                "don", "'t", " ", " stop", "  ", "\t", "now", "'s", " 42", "x"
            ]
        );
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(
            words(PreTokenizer::DigitsThenGpt2, "ab 123"),
            vec!["ab", " ", "1", "2", "3"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines() {
        assert_eq!(
            words(PreTokenizer::Llama3, "1234567 I'LL go!\n\n  x"),
            vec!["123", "456", "7", " I", "'LL", " go", "!\n\n", " ", " x"]
        );
        assert_eq!(words(PreTokenizer::Qwen2, "12"), vec!["1", "2"]);
    }

    #[test]
    fn gpt4o_splits_at_case_changes() {
        assert_eq!(
            words(PreTokenizer::Gpt4o, "HelloWorld ABCdef"),
            vec!["Hello", "World", " ABCdef"]
        );
        assert_eq!(words(PreTokenizer::Gpt4o, "ÉCOLE"), vec!["É", "COLE"]);
    }

    #[test]
    fn empty_text_has_no_words() {
        assert!(words(PreTokenizer::Default, "").is_empty());
    }

    #[test]
    fn every_preset_name_resolves() {
        for name in PreTokenizer::NAMES {
            assert!(PreTokenizer::from_name(name).is_some(), "{name}");
        }
        assert_eq!(PreTokenizer::from_name("no-such-pre"), None);
    }
}
