//! Prompts as token ids: conversations through the model's chat template, text as
//! `ferrolm run -p` tokenizes it, ids checked against the vocabulary.

use ferrolm_tokenizer::{ChatMessage, EncodeOptions, Tokenizer, TokenizerError};

use super::error::ApiError;
use super::request::Prompt;

/// The tokens of a conversation as `ferrolm chat` sends it to the model: the chat template
/// rendered with the assistant's turn opened, special-token text turned into tokens, BOS as
/// the model's metadata says.
pub fn chat_prompt(
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
) -> Result<Vec<u32>, TokenizerError> {
    chat_prompt_with_tools(tokenizer, messages, None)
}

/// [`chat_prompt`] with the template's `tools` variable set.
pub fn chat_prompt_with_tools(
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    tools: Option<&serde_json::Value>,
) -> Result<Vec<u32>, TokenizerError> {
    let text = tokenizer.apply_chat_template_with_tools(messages, tools, true)?;
    Ok(tokenizer.encode(
        &text,
        EncodeOptions {
            add_special: true,
            parse_special: true,
        },
    ))
}

/// The token ids of a request's prompt, checked to leave room for at least one new token
/// in a context of `n_ctx`.
pub fn prompt_ids(
    tokenizer: &Tokenizer,
    prompt: &Prompt,
    tools: Option<&serde_json::Value>,
    n_vocab: usize,
    n_ctx: usize,
) -> Result<Vec<u32>, ApiError> {
    let (ids, param) = match prompt {
        Prompt::Chat(messages) => (
            chat_prompt_with_tools(tokenizer, messages, tools).map_err(|e| {
                ApiError::field(
                    "messages",
                    format!("the chat template cannot render these messages: {e}"),
                )
            })?,
            "messages",
        ),
        Prompt::Text(text) => (tokenizer.encode(text, EncodeOptions::default()), "prompt"),
        Prompt::Tokens(ids) => {
            let limit = n_vocab.min(tokenizer.n_vocab());
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= limit) {
                return Err(ApiError::field(
                    "prompt",
                    format!("token id {bad} is outside the vocabulary of {limit} tokens"),
                ));
            }
            (ids.clone(), "prompt")
        }
    };
    if ids.is_empty() {
        return Err(ApiError::field(param, "the prompt has no tokens"));
    }
    if ids.len() >= n_ctx {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::field(
                param,
                format!(
                    "the prompt is {} tokens; this server's context is {n_ctx} tokens, which must hold the prompt and at least one generated token",
                    ids.len()
                ),
            )
        });
    }
    Ok(ids)
}
