//! The tokenizer: a vocabulary, its algorithm and its special-token matcher.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrolm_gguf::Gguf;

use crate::bpe::{BpeModel, BpeScratch};
use crate::pretokenizer::PreTokenizer;
use crate::special::{Fragment, SpecialMatcher};
use crate::spm::{SpmModel, SpmScratch};
use crate::vocab::{TokenType, TokenizerConfig, Vocab, VocabKind, attr, select_kind};
use crate::{TokenId, TokenizerError};

/// Switches for [`Tokenizer::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add BOS/EOS as the vocabulary's `add_bos_token`/`add_eos_token` say.
    pub add_special: bool,
    /// Turn the text of control tokens (`<|im_start|>`, `<start_of_turn>`)
    /// into those tokens. User-defined tokens are matched either way.
    pub parse_special: bool,
}

impl Default for EncodeOptions {
    /// BOS/EOS as the model says, special-token text left as text.
    fn default() -> Self {
        EncodeOptions {
            add_special: true,
            parse_special: false,
        }
    }
}

enum Model {
    Bpe(Box<BpeModel>),
    Spm(SpmModel),
}

#[derive(Default)]
struct Scratch {
    /// The tokenizer whose words the BPE cache holds.
    owner: u64,
    fragments: Vec<Fragment>,
    bpe: BpeScratch,
    spm: SpmScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A tokenizer that gives the token ids llama.cpp gives for the same
/// vocabulary and text. Immutable once built; share it across threads freely.
pub struct Tokenizer {
    pub(crate) vocab: Vocab,
    model: Model,
    special: SpecialMatcher,
    pub(crate) config_extra: ConfigExtra,
    /// Identifies this tokenizer to the per-thread word cache.
    uid: u64,
}

/// What the tokenizer keeps of its configuration besides the vocabulary.
pub(crate) struct ConfigExtra {
    pub chat_template: Option<String>,
    pub architecture: Option<String>,
    pub model_name: Option<String>,
    pub pre: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.vocab.kind)
            .field("pre", &self.pre_tokenizer())
            .field("n_vocab", &self.n_vocab())
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads the vocabulary of a GGUF file (`tokenizer.*` metadata; a file
    /// with no tensors is fine). A `no_vocab` model is
    /// [`TokenizerError::NoVocabulary`]; see [`Tokenizer::from_gguf_if_present`].
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<Tokenizer, TokenizerError> {
        let b = TokenizerConfig::borrow_gguf(gguf)?;
        Tokenizer::build(b.cfg, b.tokens, b.merges)
    }

    /// Like [`Tokenizer::from_gguf`], but `Ok(None)` for a file without a
    /// vocabulary: `tokenizer.ggml.model` is `no_vocab` (as in synthetic
    /// benchmark models) or absent.
    pub fn from_gguf_if_present(gguf: &Gguf<'_>) -> Result<Option<Tokenizer>, TokenizerError> {
        match Tokenizer::from_gguf(gguf) {
            Ok(t) => Ok(Some(t)),
            Err(TokenizerError::NoVocabulary { .. }) => Ok(None),
            Err(TokenizerError::MissingKey { key })
                if key == ferrolm_gguf::keys::tokenizer::MODEL =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Builds a tokenizer from metadata values.
    pub fn from_config(mut cfg: TokenizerConfig) -> Result<Tokenizer, TokenizerError> {
        let tokens = std::mem::take(&mut cfg.tokens);
        let merges = cfg.merges.take();
        Tokenizer::build(cfg, &tokens, merges.as_deref())
    }

    fn build<S: AsRef<str>, M: AsRef<str>>(
        cfg: TokenizerConfig,
        tokens: &[S],
        merges: Option<&[M]>,
    ) -> Result<Tokenizer, TokenizerError> {
        let (kind, preset) = select_kind(&cfg.model, cfg.pre.as_deref())?;
        let vocab = Vocab::build(&cfg, tokens, kind, preset)?;
        let model = match (kind, preset) {
            (VocabKind::Bpe, Some(p)) => {
                let merges = merges.ok_or(TokenizerError::MissingKey {
                    key: ferrolm_gguf::keys::tokenizer::MERGES,
                })?;
                Model::Bpe(Box::new(BpeModel::new(
                    &vocab,
                    merges,
                    p.pre,
                    p.ignore_merges,
                )))
            }
            _ => Model::Spm(SpmModel::new(&vocab)),
        };
        let special = SpecialMatcher::new(&vocab);
        Ok(Tokenizer {
            vocab,
            model,
            special,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            config_extra: ConfigExtra {
                chat_template: cfg.chat_template,
                architecture: cfg.architecture,
                model_name: cfg.model_name,
                pre: cfg.pre,
            },
        })
    }

    /// Tokenizes text.
    pub fn encode(&self, text: &str, opts: EncodeOptions) -> Vec<TokenId> {
        self.encode_bytes(text.as_bytes(), opts)
    }

    /// Tokenizes bytes that need not be valid UTF-8 (llama.cpp accepts any bytes).
    pub fn encode_bytes(&self, text: &[u8], opts: EncodeOptions) -> Vec<TokenId> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => self.encode_into(text, opts, &mut s, &mut out),
            Err(_) => self.encode_into(text, opts, &mut Scratch::default(), &mut out),
        });
        out
    }

    fn encode_into(
        &self,
        text: &[u8],
        opts: EncodeOptions,
        s: &mut Scratch,
        out: &mut Vec<TokenId>,
    ) {
        let v = &self.vocab;
        if s.owner != self.uid {
            s.bpe.clear_cache();
            s.spm.clear_cache();
            s.owner = self.uid;
        }
        s.fragments.clear();
        self.special
            .partition(v, text, opts.parse_special, &mut s.fragments);
        let add_bos = opts.add_special && v.add_bos;
        let add_eos = opts.add_special && v.add_eos;
        if add_bos && let Some(bos) = v.ids.bos {
            out.push(bos);
        }
        match &self.model {
            Model::Spm(spm) => {
                let mut prev_special = true;
                for f in &s.fragments {
                    match *f {
                        Fragment::Text(a, b) => {
                            spm.encode(
                                v,
                                &text[a..b],
                                v.add_space_prefix && prev_special,
                                &mut s.spm,
                                out,
                            );
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                for f in &s.fragments {
                    match *f {
                        Fragment::Text(a, b) => bpe.encode(&text[a..b], &mut s.bpe, out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_eos && let Some(eos) = v.ids.eos {
            out.push(eos);
        }
    }

    /// The algorithm of the vocabulary.
    pub fn kind(&self) -> VocabKind {
        self.vocab.kind
    }

    /// The pre-tokenizer of a BPE vocabulary (`None` for SentencePiece).
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        match &self.model {
            Model::Bpe(b) => Some(b.pre_tokenizer()),
            Model::Spm(_) => None,
        }
    }

    /// `tokenizer.ggml.pre` as the file spells it.
    pub fn pre_name(&self) -> Option<&str> {
        self.config_extra.pre.as_deref()
    }

    /// The number of tokens.
    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// Whether encoding with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether encoding with `add_special` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether SentencePiece text fragments get a leading space.
    pub fn add_space_prefix(&self) -> bool {
        self.vocab.add_space_prefix
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<TokenId> {
        self.vocab.ids.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<TokenId> {
        self.vocab.ids.eos
    }

    /// End-of-turn token (from metadata, or found by its text).
    pub fn eot(&self) -> Option<TokenId> {
        self.vocab.ids.eot
    }

    /// End-of-message token.
    pub fn eom(&self) -> Option<TokenId> {
        self.vocab.ids.eom
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<TokenId> {
        self.vocab.ids.unk
    }

    /// Padding token.
    pub fn pad(&self) -> Option<TokenId> {
        self.vocab.ids.pad
    }

    /// Separator token.
    pub fn sep(&self) -> Option<TokenId> {
        self.vocab.ids.sep
    }

    /// Mask token.
    pub fn mask(&self) -> Option<TokenId> {
        self.vocab.ids.mask
    }

    /// Whether generating this token ends generation (EOS, EOT, `<|im_end|>`, ...).
    pub fn is_eog(&self, id: TokenId) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation tokens, sorted.
    pub fn eog_tokens(&self) -> &[TokenId] {
        &self.vocab.eog
    }

    /// The stored text of a token (`Ġ`-encoded for byte-level BPE, `▁` for spaces in SentencePiece).
    pub fn token_text(&self, id: TokenId) -> Result<&str, TokenizerError> {
        self.check(id)?;
        Ok(self.vocab.text(id))
    }

    /// The score of a token.
    pub fn token_score(&self, id: TokenId) -> Result<f32, TokenizerError> {
        self.check(id)?;
        Ok(self.vocab.scores[id as usize])
    }

    /// The type of a token, as the file gives it.
    pub fn token_type(&self, id: TokenId) -> Result<TokenType, TokenizerError> {
        self.check(id)?;
        Ok(self.vocab.types[id as usize])
    }

    /// Whether a token is a control token (including those llama.cpp promotes,
    /// like `<|im_end|>`); such tokens are not rendered unless asked for.
    pub fn is_control(&self, id: TokenId) -> bool {
        self.vocab
            .attrs
            .get(id as usize)
            .is_some_and(|a| a & attr::CONTROL != 0)
    }

    /// The id of the token whose stored text is `text`.
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.vocab.id_of(text.as_bytes())
    }

    /// `tokenizer.chat_template`, if the file has one.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.config_extra.chat_template.as_deref()
    }

    /// `general.name`, if the file has it.
    pub fn model_name(&self) -> Option<&str> {
        self.config_extra.model_name.as_deref()
    }

    /// `general.architecture`, if the file has it.
    pub fn architecture(&self) -> Option<&str> {
        self.config_extra.architecture.as_deref()
    }

    pub(crate) fn check(&self, id: TokenId) -> Result<(), TokenizerError> {
        if (id as usize) < self.vocab.n_tokens() {
            Ok(())
        } else {
            Err(TokenizerError::TokenOutOfRange {
                id,
                n_vocab: self.vocab.n_tokens(),
            })
        }
    }

    pub(crate) fn spm_byte_of(&self, id: TokenId) -> Option<u8> {
        self.check(id).ok()?;
        let text = self.vocab.text(id);
        let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
        u8::from_str_radix(hex, 16).ok()
    }
}
