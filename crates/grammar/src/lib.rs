//! Constrained decoding: the model's output held to a JSON schema, to any JSON object, or to a
//! Lark grammar, as one stage of a [`ferrolm_sampling`] chain.
//!
//! The grammar engine is [llguidance](https://crates.io/crates/llguidance): it compiles a
//! grammar against the vocabulary once and, at each step, gives the set of tokens that keep the
//! output a prefix of some sentence of the grammar. [`Constraint`] is a [`Sampler`] that sets
//! every other token's logit to −∞ at the head of the chain, so top-k, top-p, temperature and
//! the draw all work on allowed tokens only. When the grammar is complete, only the
//! end-of-generation token is allowed, so generation stops there.
//!
//! ```no_run
//! use ferrolm_grammar::{Grammar, GrammarCompiler};
//! use ferrolm_sampling::{SamplerChain, SamplingConfig};
//! # fn demo(tokenizer: std::sync::Arc<ferrolm_tokenizer::Tokenizer>) -> Result<(), Box<dyn std::error::Error>> {
//! let compiler = GrammarCompiler::new(tokenizer)?;
//! let schema = serde_json::json!({
//!     "type": "object",
//!     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
//!     "required": ["name", "age"]
//! });
//! let constraint = compiler.compile(&Grammar::JsonSchema(schema))?;
//! let mut chain = SamplerChain::new()
//!     .with(constraint)
//!     .with(SamplingConfig::default().build()?);
//! # Ok(()) }
//! ```
//!
//! Tokens are handed to the grammar through [`Sampler::accept`] once the first token has been
//! sampled: the prompt tokens a generation loop accepts before that are not part of the
//! constrained output.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use ferrolm_sampling::{Candidates, RowEdit, Sampler, SamplingError};
use ferrolm_tokenizer::{EncodeOptions, Tokenizer};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{self, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON value valid under this JSON schema.
    JsonSchema(serde_json::Value),
    /// Any JSON object.
    JsonObject,
    /// A sentence of this grammar in llguidance's Lark syntax (rules `name: a | b`, terminals
    /// in capitals, regular expressions `/.../`, `%json {schema}`, GBNF-style repetition
    /// `x{2,5}`). GBNF's `::=` rules are not read.
    Lark(String),
}

/// Why a grammar could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    /// The vocabulary could not be turned into the grammar engine's token trie.
    #[error("cannot prepare the vocabulary for constrained decoding: {0}")]
    Vocabulary(String),
    /// The grammar or schema is invalid, or uses something the engine does not support.
    #[error("{0}")]
    Compile(String),
}

/// The vocabulary as the grammar engine sees it: each token's bytes (control and unknown
/// tokens as the engine's special tokens, which text never matches) and the tokenizer, for
/// turning forced text back into tokens.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<toktrie::TokenId> {
        self.tokenizer.encode_bytes(
            s,
            EncodeOptions {
                add_special: false,
                parse_special: false,
            },
        )
    }
}

/// Compiles grammars for one vocabulary. Building it reads every token once (tens of
/// milliseconds for a 262,144-token vocabulary); keep it for the model's lifetime and compile
/// each request's grammar with [`GrammarCompiler::compile`].
#[derive(Clone)]
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    n_vocab: usize,
}

impl fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("n_vocab", &self.n_vocab)
            .finish_non_exhaustive()
    }
}

/// The byte that starts a special token's name in the engine's trie.
const SPECIAL: u8 = 0xFF;

impl GrammarCompiler {
    /// A compiler for `tokenizer`'s vocabulary. The end of a constrained output is the
    /// vocabulary's end-of-turn token where it has one (chat models), else its end of sequence.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, GrammarError> {
        let n_vocab = tokenizer.n_vocab();
        let eos = tokenizer.eot().or_else(|| tokenizer.eos()).ok_or_else(|| {
            GrammarError::Vocabulary("the vocabulary has no end-of-generation token".into())
        })?;
        let mut words = Vec::with_capacity(n_vocab);
        for id in 0..n_vocab as u32 {
            let special = tokenizer.is_control(id)
                || tokenizer
                    .token_type(id)
                    .is_ok_and(|t| t == ferrolm_tokenizer::TokenType::Unknown);
            let bytes = if special {
                Vec::new()
            } else {
                tokenizer
                    .token_to_piece(id, false)
                    .map_err(|e| GrammarError::Vocabulary(e.to_string()))?
            };
            if bytes.is_empty() {
                // Control tokens, and tokens that stand for no text, can only be chosen where
                // the grammar names them (or as the end of generation).
                let mut name = vec![SPECIAL];
                let text = tokenizer.token_text(id).unwrap_or_default();
                if text.is_empty() {
                    name.extend_from_slice(format!("<[{id}]>").as_bytes());
                } else {
                    name.extend_from_slice(text.as_bytes());
                }
                words.push(name);
            } else {
                words.push(bytes);
            }
        }
        let info = TokRxInfo {
            vocab_size: n_vocab as u32,
            tok_eos: eos,
            tok_bos: tokenizer.bos(),
            tok_pad: tokenizer.pad(),
            tok_unk: tokenizer.unk(),
            tok_end_of_turn: tokenizer.eot(),
        };
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Vocabulary { trie, tokenizer });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Vocabulary(e.to_string()))?;
        // Warnings and errors come back through the results, not on stderr.
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            n_vocab,
        })
    }

    /// Tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// A fresh constraint for one generation under `grammar`. An invalid grammar, or a schema
    /// feature the engine does not support, is an error naming it.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, GrammarError> {
        let top = match grammar {
            Grammar::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(GrammarError::Compile(
                        "a JSON schema must be an object (or true/false)".into(),
                    ));
                }
                TopLevelGrammar::from_json_schema(with_whitespace_limit(schema.clone()))
            }
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(with_whitespace_limit(serde_json::json!({
                    "type": "object"
                })))
            }
            Grammar::Lark(source) => {
                if source.trim().is_empty() {
                    return Err(GrammarError::Compile("the grammar is empty".into()));
                }
                TopLevelGrammar::from_lark(source.clone())
            }
        };
        let parser = self
            .factory
            .create_parser(top)
            .map_err(|e| GrammarError::Compile(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(err) = matcher.get_error() {
            return Err(GrammarError::Compile(err));
        }
        Ok(Constraint {
            matcher,
            armed: false,
            n_vocab: self.n_vocab,
            allowed: Vec::new(),
        })
    }
}

/// Whitespace allowed between JSON tokens: up to 24 spaces, tabs and line breaks at a time
/// (pretty-printed JSON fits; an endless run of blanks does not).
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,24}";

/// `schema` with the engine's whitespace rule set to [`JSON_WHITESPACE`], unless the schema
/// sets the engine's options itself (its `x-guidance` key).
fn with_whitespace_limit(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = schema.as_object_mut()
        && !obj.contains_key("x-guidance")
    {
        obj.insert(
            "x-guidance".into(),
            serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }),
        );
    }
    schema
}

/// One generation's grammar state, as a sampler: put it first in the chain.
pub struct Constraint {
    matcher: Matcher,
    /// Whether generation has begun (tokens accepted from then on are output tokens).
    armed: bool,
    n_vocab: usize,
    /// The last mask, one flag per token, for [`Sampler::apply`].
    allowed: Vec<bool>,
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Constraint")
            .field("armed", &self.armed)
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// Whether the output so far is a complete sentence of the grammar.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// Whether the grammar allows nothing more than the end of generation.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// The error that stopped the grammar, if any (a token it did not allow was accepted).
    pub fn error(&self) -> Option<String> {
        self.matcher.get_error()
    }

    /// The mask of allowed tokens for the next step (a bit per token, bit `k % 32` of word
    /// `k / 32`).
    fn mask(&mut self) -> Result<SimpleVob, SamplingError> {
        self.armed = true;
        self.matcher
            .compute_mask_or_eos()
            .map_err(|_| SamplingError::NoSelection)
    }

    /// Computes the mask of allowed tokens for the next step into `self.allowed`.
    fn compute(&mut self) -> Result<(), SamplingError> {
        let mask = self.mask()?;
        self.allowed.clear();
        self.allowed
            .extend((0..self.n_vocab).map(|id| mask.is_allowed(id as u32)));
        Ok(())
    }

    /// The allowed-token flags of the last step (one per vocabulary entry).
    pub fn allowed(&self) -> &[bool] {
        &self.allowed
    }
}

impl Sampler for Constraint {
    fn name(&self) -> &'static str {
        "grammar"
    }

    fn apply(&mut self, candidates: &mut Candidates) -> Result<(), SamplingError> {
        self.compute()?;
        for c in candidates.as_mut_slice() {
            if !self.allowed.get(c.id as usize).copied().unwrap_or(false) {
                c.logit = f32::NEG_INFINITY;
            }
        }
        candidates.keep_logit_at_least(f32::MIN);
        if candidates.is_empty() {
            return Err(SamplingError::NoSelection);
        }
        Ok(())
    }

    fn row_edit(&self) -> RowEdit {
        RowEdit::Edit
    }

    fn edit_row(&mut self, row: &mut [f32]) {
        if self.compute().is_err() {
            // A broken grammar allows nothing; the chain then reports no selectable token.
            row.fill(f32::NEG_INFINITY);
            return;
        }
        for (logit, &ok) in row.iter_mut().zip(&self.allowed) {
            if !ok {
                *logit = f32::NEG_INFINITY;
            }
        }
        // Logits past the vocabulary (padding rows of the output matrix) are never text.
        if row.len() > self.allowed.len() {
            row[self.allowed.len()..].fill(f32::NEG_INFINITY);
        }
    }

    fn is_mask(&self) -> bool {
        true
    }

    fn restrict(&mut self, allowed: &mut [u32]) -> Result<(), SamplingError> {
        let mask = self.mask()?;
        let words = mask.as_slice();
        for (i, a) in allowed.iter_mut().enumerate() {
            // Words past the grammar's vocabulary (padding rows of the output matrix) are
            // never text.
            *a &= words.get(i).copied().unwrap_or(0);
        }
        // Bits past the vocabulary within its last word.
        let n = self.n_vocab;
        if !n.is_multiple_of(32)
            && let Some(a) = allowed.get_mut(n / 32)
        {
            *a &= (1u32 << (n % 32)) - 1;
        }
        Ok(())
    }

    fn accept(&mut self, token: u32) {
        if self.armed && !self.matcher.is_stopped() {
            // A token the mask did not allow puts the matcher in its error state, which
            // `error` reports and which allows nothing more.
            let _ = self.matcher.consume_token(token);
        }
    }

    fn reset(&mut self) {
        let _ = self.matcher.reset();
        self.armed = false;
    }
}
