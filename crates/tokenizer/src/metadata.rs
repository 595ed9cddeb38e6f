//! Reading a [`TokenizerConfig`] from a GGUF file's metadata, and writing it back.

use ferrolm_gguf::{Gguf, GgufWriter, MetadataArray, MetadataValue, OwnedArray, keys};

use crate::vocab::{SpecialTokenIds, TokenizerConfig};
use crate::{TokenId, TokenizerError};

fn opt_str(g: &Gguf<'_>, key: &'static str) -> Result<Option<String>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(MetadataValue::String(s)) => Ok(Some((*s).to_owned())),
        Some(_) => Err(TokenizerError::WrongType {
            key,
            expected: "a string",
        }),
    }
}

fn opt_bool(g: &Gguf<'_>, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or(TokenizerError::WrongType {
            key,
            expected: "a boolean",
        }),
    }
}

/// A token id key; negative values (some converters write -1) mean "none".
fn opt_id(g: &Gguf<'_>, key: &'static str) -> Result<Option<TokenId>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => {
            let id = v.as_i64().ok_or(TokenizerError::WrongType {
                key,
                expected: "an integer",
            })?;
            Ok(TokenId::try_from(id).ok())
        }
    }
}

fn opt_array<'g, 'a>(
    g: &'g Gguf<'a>,
    key: &'static str,
) -> Result<Option<&'g MetadataArray<'a>>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(MetadataValue::Array(a)) => Ok(Some(a)),
        Some(_) => Err(TokenizerError::WrongType {
            key,
            expected: "an array",
        }),
    }
}

fn strings<'g>(
    a: &'g MetadataArray<'_>,
    key: &'static str,
) -> Result<&'g [&'g str], TokenizerError> {
    a.as_strings().ok_or(TokenizerError::WrongType {
        key,
        expected: "an array of strings",
    })
}

/// The metadata of a file, with the two big string arrays still borrowed.
pub(crate) struct BorrowedConfig<'g> {
    /// Everything but `tokens` and `merges`.
    pub cfg: TokenizerConfig,
    pub tokens: &'g [&'g str],
    pub merges: Option<&'g [&'g str]>,
}

impl TokenizerConfig {
    /// Reads the `tokenizer.*` metadata (and `general.name`/`general.architecture`)
    /// of a GGUF file. Works on vocabulary-only files: no tensor is touched.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<TokenizerConfig, TokenizerError> {
        let b = TokenizerConfig::borrow_gguf(g)?;
        Ok(TokenizerConfig {
            tokens: b.tokens.iter().map(|&t| t.to_owned()).collect(),
            merges: b.merges.map(|m| m.iter().map(|&t| t.to_owned()).collect()),
            ..b.cfg
        })
    }

    /// Adds this vocabulary's `tokenizer.*` metadata (and `general.name` /
    /// `general.architecture` when set) to a GGUF writer: the keys
    /// [`TokenizerConfig::from_gguf`] reads, so a file holding only them is a
    /// vocabulary-only file that reads back to an equal configuration. Special
    /// ids are written as u32, token types as i32 and scores as f32.
    pub fn add_to_gguf(&self, writer: &mut GgufWriter<'_>) {
        use keys::tokenizer as k;
        if let Some(name) = &self.architecture {
            writer.add_metadata(keys::general::ARCHITECTURE, name.as_str());
        }
        if let Some(name) = &self.model_name {
            writer.add_metadata(keys::general::NAME, name.as_str());
        }
        writer.add_metadata(k::MODEL, self.model.as_str());
        if let Some(pre) = &self.pre {
            writer.add_metadata(k::PRE, pre.as_str());
        }
        writer.add_metadata(k::TOKENS, OwnedArray::String(self.tokens.clone()));
        if let Some(scores) = &self.scores {
            writer.add_metadata(k::SCORES, OwnedArray::F32(scores.clone()));
        }
        if let Some(types) = &self.token_types {
            writer.add_metadata(k::TOKEN_TYPE, OwnedArray::I32(types.clone()));
        }
        if let Some(merges) = &self.merges {
            writer.add_metadata(k::MERGES, OwnedArray::String(merges.clone()));
        }
        let s = &self.special;
        let ids = [
            (k::BOS_ID, s.bos),
            (k::EOS_ID, s.eos),
            (k::EOT_ID, s.eot),
            (k::EOM_ID, s.eom),
            (k::UNK_ID, s.unk),
            (k::SEP_ID, s.sep),
            (k::PAD_ID, s.pad),
            (k::MASK_ID, s.mask),
            (k::FIM_PAD_ID, s.fim_pad),
            (k::FIM_REP_ID, s.fim_rep),
            (k::FIM_SEP_ID, s.fim_sep),
        ];
        for (key, id) in ids {
            if let Some(id) = id {
                writer.add_metadata(key, id);
            }
        }
        let flags = [
            (k::ADD_BOS, self.add_bos),
            (k::ADD_EOS, self.add_eos),
            (k::ADD_SPACE_PREFIX, self.add_space_prefix),
        ];
        for (key, flag) in flags {
            if let Some(flag) = flag {
                writer.add_metadata(key, flag);
            }
        }
        if let Some(template) = &self.chat_template {
            writer.add_metadata(k::CHAT_TEMPLATE, template.as_str());
        }
    }

    pub(crate) fn borrow_gguf<'g>(g: &'g Gguf<'_>) -> Result<BorrowedConfig<'g>, TokenizerError> {
        use keys::tokenizer as k;
        let model = opt_str(g, k::MODEL)?.ok_or(TokenizerError::MissingKey { key: k::MODEL })?;
        let mut cfg = TokenizerConfig {
            model,
            pre: opt_str(g, k::PRE)?,
            chat_template: opt_str(g, k::CHAT_TEMPLATE)?,
            model_name: opt_str(g, keys::general::NAME)?,
            architecture: opt_str(g, keys::general::ARCHITECTURE)?,
            add_bos: opt_bool(g, k::ADD_BOS)?,
            add_eos: opt_bool(g, k::ADD_EOS)?,
            add_space_prefix: opt_bool(g, k::ADD_SPACE_PREFIX)?,
            special: SpecialTokenIds {
                bos: opt_id(g, k::BOS_ID)?,
                eos: opt_id(g, k::EOS_ID)?,
                eot: opt_id(g, k::EOT_ID)?,
                eom: opt_id(g, k::EOM_ID)?,
                unk: opt_id(g, k::UNK_ID)?,
                sep: opt_id(g, k::SEP_ID)?,
                pad: opt_id(g, k::PAD_ID)?,
                mask: opt_id(g, k::MASK_ID)?,
                fim_pad: opt_id(g, k::FIM_PAD_ID)?,
                fim_rep: opt_id(g, k::FIM_REP_ID)?,
                fim_sep: opt_id(g, k::FIM_SEP_ID)?,
            },
            ..TokenizerConfig::default()
        };
        if matches!(cfg.model.as_str(), "no_vocab" | "none") {
            return Err(TokenizerError::NoVocabulary { model: cfg.model });
        }
        let tokens =
            opt_array(g, k::TOKENS)?.ok_or(TokenizerError::MissingKey { key: k::TOKENS })?;
        let tokens = strings(tokens, k::TOKENS)?;
        if let Some(a) = opt_array(g, k::SCORES)? {
            cfg.scores = Some(match a {
                MetadataArray::F32(v) => v.clone(),
                MetadataArray::I32(v) => v.iter().map(|&x| x as f32).collect(),
                _ => {
                    return Err(TokenizerError::WrongType {
                        key: k::SCORES,
                        expected: "an array of f32 or i32",
                    });
                }
            });
        }
        if let Some(a) = opt_array(g, k::TOKEN_TYPE)? {
            let t = a.as_i32s().ok_or(TokenizerError::WrongType {
                key: k::TOKEN_TYPE,
                expected: "an array of i32",
            })?;
            cfg.token_types = Some(t.to_vec());
        }
        let merges = match opt_array(g, k::MERGES)? {
            Some(a) => Some(strings(a, k::MERGES)?),
            None => None,
        };
        Ok(BorrowedConfig {
            cfg,
            tokens,
            merges,
        })
    }
}
