//! The vocabulary: token texts, scores, types, special ids and the rules that
//! llama.cpp derives from them at load time.

use crate::TokenizerError;
use crate::pretokenizer::{BpePreset, PreTokenizer};
use crate::table::TextTable;

/// A token id: an index into the vocabulary.
pub type TokenId = u32;

/// The type of a token, as `tokenizer.ggml.token_type` stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// 0, or any value not listed here.
    Undefined,
    /// 1: ordinary text.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: control tokens (BOS, EOS, turn markers); not rendered by default.
    Control,
    /// 4: user-defined tokens, always matched as a whole in input text.
    UserDefined,
    /// 5: unused slots.
    Unused,
    /// 6: byte-fallback tokens `<0xNN>`.
    Byte,
}

impl TokenType {
    /// The type a GGUF `token_type` value stands for.
    pub fn from_gguf(value: i32) -> TokenType {
        match value {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// The GGUF `token_type` value of this type.
    pub fn to_gguf(self) -> i32 {
        match self {
            TokenType::Undefined => 0,
            TokenType::Normal => 1,
            TokenType::Unknown => 2,
            TokenType::Control => 3,
            TokenType::UserDefined => 4,
            TokenType::Unused => 5,
            TokenType::Byte => 6,
        }
    }
}

/// Token attribute bits (llama.cpp's `llama_token_attr`).
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

fn attr_of_type(t: TokenType) -> u16 {
    match t {
        TokenType::Undefined => 0,
        TokenType::Normal => attr::NORMAL,
        TokenType::Unknown => attr::UNKNOWN,
        TokenType::Control => attr::CONTROL,
        TokenType::UserDefined => attr::USER_DEFINED,
        TokenType::Unused => attr::UNUSED,
        TokenType::Byte => attr::BYTE,
    }
}

/// The tokenizer algorithm a vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VocabKind {
    /// `gpt2`: byte-level BPE with ranked merges and a pre-tokenizer.
    Bpe,
    /// `llama`: SentencePiece-style BPE over token scores, with byte fallback.
    Spm,
}

/// Special token ids as the metadata gives them (`None`: key absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokenIds {
    /// `tokenizer.ggml.bos_token_id`
    pub bos: Option<TokenId>,
    /// `tokenizer.ggml.eos_token_id`
    pub eos: Option<TokenId>,
    /// `tokenizer.ggml.eot_token_id`
    pub eot: Option<TokenId>,
    /// `tokenizer.ggml.eom_token_id`
    pub eom: Option<TokenId>,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk: Option<TokenId>,
    /// `tokenizer.ggml.seperator_token_id`
    pub sep: Option<TokenId>,
    /// `tokenizer.ggml.padding_token_id`
    pub pad: Option<TokenId>,
    /// `tokenizer.ggml.mask_token_id`
    pub mask: Option<TokenId>,
    /// `tokenizer.ggml.fim_pad_token_id`
    pub fim_pad: Option<TokenId>,
    /// `tokenizer.ggml.fim_rep_token_id`
    pub fim_rep: Option<TokenId>,
    /// `tokenizer.ggml.fim_sep_token_id`
    pub fim_sep: Option<TokenId>,
}

/// Everything a vocabulary is built from: the `tokenizer.*` metadata of a
/// GGUF file as owned values, plus the two `general.*` keys that select
/// per-model rules. [`crate::Tokenizer::from_gguf`] fills it from a file;
/// BPE training and tests fill it directly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenizerConfig {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (all 0 when absent).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (all normal when absent).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs, highest priority first.
    pub merges: Option<Vec<String>>,
    /// The special token ids the metadata names.
    pub special: SpecialTokenIds,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `general.name`.
    pub model_name: Option<String>,
    /// `general.architecture`.
    pub architecture: Option<String>,
}

/// The special ids after defaults, metadata and text-based detection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Specials {
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    pub eot: Option<TokenId>,
    pub eom: Option<TokenId>,
    pub unk: Option<TokenId>,
    pub sep: Option<TokenId>,
    pub pad: Option<TokenId>,
    pub mask: Option<TokenId>,
}

/// A loaded vocabulary.
pub(crate) struct Vocab {
    pub kind: VocabKind,
    pub texts: TextTable,
    pub scores: Vec<f32>,
    pub types: Vec<TokenType>,
    pub attrs: Vec<u16>,
    pub ids: Specials,
    /// Sorted ids that end generation.
    pub eog: Vec<TokenId>,
    /// Control, user-defined and unknown tokens, longest text first.
    pub special_order: Vec<TokenId>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl Vocab {
    /// Builds the vocabulary the way llama.cpp's loader does, given the
    /// tokenizer kind and the BPE preset already chosen from the metadata.
    pub fn build<S: AsRef<str>>(
        cfg: &TokenizerConfig,
        tokens: &[S],
        kind: VocabKind,
        preset: Option<BpePreset>,
    ) -> Result<Vocab, TokenizerError> {
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if let Some(s) = &cfg.scores
            && s.len() < n
        {
            return Err(TokenizerError::LengthMismatch {
                key: ferrolm_gguf::keys::tokenizer::SCORES,
                expected: n,
                got: s.len(),
            });
        }
        if let Some(t) = &cfg.token_types
            && t.len() < n
        {
            return Err(TokenizerError::LengthMismatch {
                key: ferrolm_gguf::keys::tokenizer::TOKEN_TYPE,
                expected: n,
                got: t.len(),
            });
        }
        let texts = TextTable::new(tokens, true).map_err(|(first, second)| {
            TokenizerError::DuplicateToken {
                text: tokens[second as usize].as_ref().to_owned(),
                first,
                second,
            }
        })?;
        let scores = cfg
            .scores
            .as_ref()
            .map_or_else(|| vec![0.0; n], |s| s[..n].to_vec());
        let types: Vec<TokenType> = cfg.token_types.as_ref().map_or_else(
            || vec![TokenType::Normal; n],
            |t| t[..n].iter().map(|&v| TokenType::from_gguf(v)).collect(),
        );
        let attrs = types.iter().map(|&t| attr_of_type(t)).collect();

        let in_range = |id: Option<TokenId>| id.filter(|&i| (i as usize) < n);
        let (mut ids, add_space_prefix, add_bos) = match kind {
            VocabKind::Spm => (
                Specials {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    ..Specials::default()
                },
                true,
                true,
            ),
            VocabKind::Bpe => (
                Specials {
                    bos: Some(11),
                    eos: Some(11),
                    ..Specials::default()
                },
                false,
                preset.is_some_and(|p| p.add_bos),
            ),
        };
        for slot in [&mut ids.bos, &mut ids.eos, &mut ids.unk] {
            *slot = in_range(*slot);
        }
        // A metadata id past the vocabulary keeps the default, as llama.cpp does.
        let meta = &cfg.special;
        let pick = |meta: Option<TokenId>, default: Option<TokenId>| in_range(meta).or(default);
        ids.bos = pick(meta.bos, ids.bos);
        ids.eos = pick(meta.eos, ids.eos);
        ids.eot = pick(meta.eot, None);
        ids.eom = pick(meta.eom, None);
        ids.unk = pick(meta.unk, ids.unk);
        ids.sep = pick(meta.sep, None);
        ids.pad = pick(meta.pad, None);
        ids.mask = pick(meta.mask, None);

        let mut vocab = Vocab {
            kind,
            texts,
            scores,
            types,
            attrs,
            ids,
            eog: Vec::new(),
            special_order: Vec::new(),
            add_bos: cfg.add_bos.unwrap_or(add_bos),
            add_eos: cfg.add_eos.unwrap_or(false),
            add_space_prefix: cfg.add_space_prefix.unwrap_or(add_space_prefix),
        };
        if vocab.add_bos && vocab.ids.bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                flag: ferrolm_gguf::keys::tokenizer::ADD_BOS,
                token: "BOS",
            });
        }
        if vocab.add_eos && vocab.ids.eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                flag: ferrolm_gguf::keys::tokenizer::ADD_EOS,
                token: "EOS",
            });
        }
        vocab.detect_special_tokens(meta);
        vocab.special_order = (0..n as TokenId)
            .filter(|&id| {
                vocab.attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        let mut order = std::mem::take(&mut vocab.special_order);
        order.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));
        vocab.special_order = order;
        vocab.apply_model_attrs(cfg);
        Ok(vocab)
    }

    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    #[inline]
    pub fn id_of(&self, text: &[u8]) -> Option<TokenId> {
        self.texts.id(text)
    }

    pub fn text(&self, id: TokenId) -> &str {
        self.texts.text(id)
    }

    fn force_control(&mut self, id: TokenId) {
        self.attrs[id as usize] |= attr::CONTROL;
    }

    /// The first token (by id) whose text is in `texts`.
    fn find_text(&self, texts: &[&str]) -> Option<TokenId> {
        texts.iter().filter_map(|t| self.id_of(t.as_bytes())).min()
    }

    /// EOT/EOM/FIM detection by text, unused slots, the end-of-generation set.
    fn detect_special_tokens(&mut self, meta: &SpecialTokenIds) {
        let n = self.n_tokens();
        let in_range = |id: Option<TokenId>| id.filter(|&i| (i as usize) < n);
        if self.ids.eot.is_none() {
            self.ids.eot = self.find_text(EOT_TEXTS);
        }
        if self.ids.eom.is_none() {
            self.ids.eom = self.find_text(&["<|eom_id|>"]);
        }
        let fim_pad = in_range(meta.fim_pad).or_else(|| self.find_text(FIM_PAD_TEXTS));
        let fim_rep = in_range(meta.fim_rep).or_else(|| self.find_text(FIM_REP_TEXTS));
        let fim_sep = in_range(meta.fim_sep).or_else(|| self.find_text(FIM_SEP_TEXTS));
        let detected = [
            self.ids.eot,
            self.ids.eom,
            self.find_text(FIM_PRE_TEXTS),
            self.find_text(FIM_SUF_TEXTS),
            self.find_text(FIM_MID_TEXTS),
            fim_pad,
            fim_rep,
            fim_sep,
        ];
        for id in detected.into_iter().flatten() {
            self.force_control(id);
        }
        for id in 0..n {
            if self.attrs[id] & attr::CONTROL != 0
                && self.texts.text(id as TokenId).contains("unused")
            {
                self.attrs[id] |= attr::UNUSED;
            }
        }

        let mut eog: Vec<TokenId> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for t in EOG_TEXTS {
            if let Some(id) = self.id_of(t.as_bytes()) {
                eog.push(id);
                self.force_control(id);
            }
        }
        for t in ALWAYS_RENDERED {
            if let Some(id) = self.id_of(t.as_bytes()) {
                self.attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend(
            [self.ids.eos, self.ids.eot, self.ids.eom]
                .into_iter()
                .flatten(),
        );
        eog.sort_unstable();
        eog.dedup();

        let has = |v: &Self, eog: &[TokenId], text: &str| {
            v.id_of(text.as_bytes()).filter(|id| eog.contains(id))
        };
        let end = has(self, &eog, "<|end|>");
        let harmony =
            has(self, &eog, "<|return|>").is_some() && has(self, &eog, "<|call|>").is_some();
        let solar =
            has(self, &eog, "<|calls|>").is_some() && has(self, &eog, "<|flush|>").is_some();
        if let Some(end) = end
            && (harmony || solar)
        {
            eog.retain(|&id| id != end);
            self.attrs[end as usize] = attr::USER_DEFINED;
        }
        if let Some(s) = has(self, &eog, "</s>")
            && has(self, &eog, "<|tool_response>").is_some()
        {
            eog.retain(|&id| id != s);
            self.attrs[s as usize] = attr::NORMAL;
        }
        self.eog = eog;
    }

    /// Strip attributes that llama.cpp sets from the model's name or family.
    fn apply_model_attrs(&mut self, cfg: &TokenizerConfig) {
        let name = cfg.model_name.as_deref().unwrap_or("").to_ascii_lowercase();
        let pre = cfg.pre.as_deref().unwrap_or("");
        let arch = cfg.architecture.as_deref().unwrap_or("");
        let set = |v: &mut Self, text: &str, bit: u16, on: bool| {
            if let Some(id) = v.id_of(text.as_bytes()) {
                let a = &mut v.attrs[id as usize];
                *a = if on { *a | bit } else { *a & !bit };
            }
        };
        let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
            || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
        {
            set(self, "<mask>", attr::LSTRIP, true);
        } else if any(&name, &["phi-3", "phi3"]) {
            for &id in &self.special_order {
                self.attrs[id as usize] |= attr::RSTRIP;
            }
            set(self, "</s>", attr::RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(self, t, attr::RSTRIP, false);
            }
        } else if any(&name, &["modern-bert"]) {
            set(self, "[MASK]", attr::LSTRIP, true);
        }
    }
}

/// The kind and preset a `tokenizer.ggml.model`/`tokenizer.ggml.pre` pair selects.
pub(crate) fn select_kind(
    model: &str,
    pre: Option<&str>,
) -> Result<(VocabKind, Option<BpePreset>), TokenizerError> {
    match model {
        "gpt2" => {
            // A missing pre-tokenizer is llama.cpp's "default" (it only warns).
            let name = pre.filter(|p| !p.is_empty()).unwrap_or("default");
            let preset =
                PreTokenizer::preset(name).ok_or_else(|| TokenizerError::UnknownPreTokenizer {
                    pre: name.to_owned(),
                    model: model.to_owned(),
                })?;
            Ok((VocabKind::Bpe, Some(preset)))
        }
        "llama" => match pre.unwrap_or("") {
            "" | "default" | "llama" | "llama-spm" | "phi-3" | "gemma" | "gemma2" | "gemma3"
            | "mistral" => Ok((VocabKind::Spm, None)),
            other => Err(TokenizerError::UnknownPreTokenizer {
                pre: other.to_owned(),
                model: model.to_owned(),
            }),
        },
        "no_vocab" | "none" => Err(TokenizerError::NoVocabulary {
            model: model.to_owned(),
        }),
        _ => Err(TokenizerError::UnsupportedModel {
            model: model.to_owned(),
        }),
    }
}
