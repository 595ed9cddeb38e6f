//! The served model as the HTTP layer sees it: the name clients use for it, and what only the
//! API needs beyond the engine's [`ModelInfo`] (the tool-call format, the grammar compiler).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ferrolm_engine::ModelInfo;
use ferrolm_grammar::GrammarCompiler;

use super::tools::CallFormat;

/// What the handlers know about the served model besides the engine's [`ModelInfo`].
#[derive(Debug)]
pub struct ServedModel {
    /// The name clients use for it.
    pub id: String,
    /// Unix time the server loaded it.
    pub created: u64,
    /// How it writes tool calls (from its chat template).
    pub tool_format: CallFormat,
    /// The grammar compiler for its vocabulary, made on the first constrained request.
    pub grammar: OnceLock<Result<GrammarCompiler, String>>,
}

impl ServedModel {
    /// The model the engine loaded (`info`), served as `id`, loaded now.
    pub fn new(id: String, info: &ModelInfo) -> Self {
        Self {
            id,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            tool_format: info
                .tokenizer
                .chat_template()
                .map_or(CallFormat::Generic, |t| CallFormat::of_template(t.source())),
            grammar: OnceLock::new(),
        }
    }

    /// Whether `name` names this model: its id, or the name of the file it was loaded from
    /// (`path`) with or without `.gguf`.
    pub fn is_named(&self, path: &Path, name: &str) -> bool {
        let file = path.file_name().and_then(|f| f.to_str());
        let stem = path.file_stem().and_then(|f| f.to_str());
        [Some(self.id.as_str()), file, stem]
            .into_iter()
            .flatten()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}
