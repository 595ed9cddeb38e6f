//! Token ids back to bytes and text, at once or as a stream.

use crate::unicode::gpt2_char_byte;
use crate::vocab::{VocabKind, attr};
use crate::{TokenId, Tokenizer, TokenizerError};

/// Switches for [`Tokenizer::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Render control tokens (`<|im_end|>`, `<bos>`) as their text; when off
    /// they render as nothing. User-defined tokens always render.
    pub render_special: bool,
    /// Drop the space a SentencePiece vocabulary with `add_space_prefix` puts
    /// before the first word (as llama.cpp's detokenizer does).
    pub strip_space_prefix: bool,
}

impl Default for DecodeOptions {
    /// Control tokens hidden, the added leading space removed.
    fn default() -> Self {
        DecodeOptions {
            render_special: false,
            strip_space_prefix: true,
        }
    }
}

impl Tokenizer {
    /// Appends the bytes one token stands for.
    pub fn append_piece(
        &self,
        id: TokenId,
        render_special: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        self.check(id)?;
        let a = self.vocab.attrs[id as usize];
        if !render_special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return Ok(());
        }
        let text = self.vocab.text(id);
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            out.extend_from_slice(text.as_bytes());
            return Ok(());
        }
        match self.vocab.kind {
            VocabKind::Spm => {
                if a & attr::NORMAL != 0 {
                    for piece in text.split('▁').enumerate() {
                        if piece.0 > 0 {
                            out.push(b' ');
                        }
                        out.extend_from_slice(piece.1.as_bytes());
                    }
                } else if a & attr::BYTE != 0
                    && let Some(b) = self.spm_byte_of(id)
                {
                    out.push(b);
                }
            }
            VocabKind::Bpe => {
                if a & attr::NORMAL != 0 {
                    for c in text.chars() {
                        match gpt2_char_byte(c) {
                            Some(b) => out.push(b),
                            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes one token stands for (possibly part of a UTF-8 character).
    pub fn token_to_piece(
        &self,
        id: TokenId,
        render_special: bool,
    ) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        self.append_piece(id, render_special, &mut out)?;
        Ok(out)
    }

    /// The bytes a sequence of tokens stands for.
    pub fn decode_bytes(
        &self,
        ids: &[TokenId],
        opts: DecodeOptions,
    ) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let start = out.len();
            self.append_piece(id, opts.render_special, &mut out)?;
            if i == 0
                && opts.strip_space_prefix
                && self.vocab.add_space_prefix
                && out.get(start) == Some(&b' ')
            {
                out.remove(start);
            }
        }
        Ok(out)
    }

    /// The text a sequence of tokens stands for; bytes that do not form UTF-8
    /// become U+FFFD.
    pub fn decode(&self, ids: &[TokenId], opts: DecodeOptions) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids, opts)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// Turns tokens into text one at a time, emitting only complete UTF-8
/// characters: a character split over several byte tokens comes out whole
/// once its last byte arrives.
#[derive(Debug)]
pub struct StreamingDecoder<'t> {
    tokenizer: &'t Tokenizer,
    render_special: bool,
    pending: Vec<u8>,
}

impl<'t> StreamingDecoder<'t> {
    /// A decoder for tokens of `tokenizer` (`render_special`: see [`DecodeOptions`]).
    pub fn new(tokenizer: &'t Tokenizer, render_special: bool) -> StreamingDecoder<'t> {
        StreamingDecoder {
            tokenizer,
            render_special,
            pending: Vec::new(),
        }
    }

    /// Adds a token and returns the text that is now complete (often empty).
    pub fn push(&mut self, id: TokenId) -> Result<String, TokenizerError> {
        self.tokenizer
            .append_piece(id, self.render_special, &mut self.pending)?;
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid])
                            .unwrap_or_default(),
                    );
                    start += valid;
                    match e.error_len() {
                        // Bytes no continuation can repair.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += n;
                        }
                        // An incomplete character at the end: wait for more.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Whether bytes of an incomplete character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: whatever incomplete bytes are left become U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
