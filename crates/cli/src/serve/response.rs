//! Response bodies in OpenAI's shapes: whole responses and streamed chunks, for chat and
//! text completions, with log-probabilities and the `x_metrics` extension.

use ferrolm_engine::{Done, Finish, TokenOut};
use serde_json::{Map, Value, json};

use super::request::Endpoint;

/// What every body of one response repeats, and what it includes.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Unix time of the request.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// Chat or text completion.
    pub endpoint: Endpoint,
    /// Log-probabilities were asked for.
    pub logprobs: bool,
    /// `x_metrics` was asked for.
    pub metrics: bool,
    /// A last streamed chunk carries the usage.
    pub include_usage: bool,
    /// The tools a reply may call and the format of a call: a reply that is a call becomes
    /// `tool_calls`.
    pub tool_names: Option<(Vec<String>, super::tools::CallFormat)>,
}

/// Builds the bodies of one response as its events arrive.
#[derive(Debug)]
pub struct Reply {
    meta: Meta,
    text: String,
    tokens: Vec<TokenOut>,
    /// Characters of generated token text so far (completion `text_offset`).
    offset: usize,
}

impl Reply {
    /// A reply with nothing generated yet.
    pub fn new(meta: Meta) -> Self {
        Self {
            meta,
            text: String::new(),
            tokens: Vec::new(),
            offset: 0,
        }
    }

    /// The opening chunk of a streamed chat reply (the assistant's role).
    pub fn opening_chunk(&self) -> Option<Value> {
        (self.meta.endpoint == Endpoint::Chat).then(|| {
            self.chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                None,
                None,
            )
        })
    }

    /// The chunk for released `text` and the token behind it, or `None` when there is
    /// nothing to send.
    pub fn token_chunk(&mut self, text: &str, token: Option<&TokenOut>) -> Option<Value> {
        let tokens: Vec<TokenOut> = token.into_iter().cloned().collect();
        let informative = !tokens.is_empty() && (self.meta.logprobs || self.meta.metrics);
        if text.is_empty() && !informative {
            return None;
        }
        let logprobs = self.logprobs(&tokens);
        let metrics = self.metrics(&tokens);
        let delta = match self.meta.endpoint {
            Endpoint::Chat => json!({ "content": text }),
            Endpoint::Completion => Value::String(text.to_owned()),
        };
        Some(self.chunk(delta, logprobs, None, metrics))
    }

    /// The closing chunks: the finish reason, then the usage when asked for.
    pub fn closing_chunks(&self, done: Done) -> Vec<Value> {
        let delta = match self.meta.endpoint {
            Endpoint::Chat => json!({}),
            Endpoint::Completion => Value::String(String::new()),
        };
        let mut out = vec![self.chunk(delta, Value::Null, Some(finish_reason(done.finish)), None)];
        if self.meta.include_usage {
            let mut last = self.envelope(true);
            last.insert("choices".into(), json!([]));
            last.insert("usage".into(), usage(done));
            out.push(Value::Object(last));
        }
        out
    }

    /// Whether the reply may be a tool call: then a stream holds its text back to the end.
    pub fn holds_back(&self) -> bool {
        self.meta.tool_names.is_some()
    }

    /// The end of a streamed reply that held its text back: one chunk with the tool call
    /// (or with the text, when it is not a call), then the closing chunks.
    pub fn held_back_chunks(&mut self, done: Done) -> Vec<Value> {
        let mut out = Vec::new();
        let tokens = std::mem::take(&mut self.tokens);
        let logprobs = self.logprobs(&tokens);
        let metrics = self.metrics(&tokens);
        let call = self
            .meta
            .tool_names
            .as_ref()
            .and_then(|(names, format)| super::tools::call_in(&self.text, names, *format));
        if let Some((name, arguments)) = &call {
            let delta = json!({"tool_calls": [{
                "index": 0,
                "id": format!("call_{}", self.meta.id.trim_start_matches("chatcmpl-")),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }]});
            out.push(self.chunk(delta, logprobs, None, metrics));
        } else if !self.text.is_empty() {
            let delta = json!({ "content": self.text });
            out.push(self.chunk(delta, logprobs, None, metrics));
        }
        let mut closing = self.closing_chunks(done);
        if call.is_some()
            && let Some(Value::Object(first)) = closing.first_mut()
            && let Some(Value::Array(choices)) = first.get_mut("choices")
            && let Some(Value::Object(choice)) = choices.first_mut()
        {
            choice.insert("finish_reason".into(), json!("tool_calls"));
        }
        out.extend(closing);
        out
    }

    /// Records released text and its token for the whole response.
    pub fn push(&mut self, text: &str, token: Option<TokenOut>) {
        self.text.push_str(text);
        self.tokens.extend(token);
    }

    /// The whole (non-streamed) response.
    pub fn full(&mut self, done: Done) -> Value {
        let tokens = std::mem::take(&mut self.tokens);
        let logprobs = self.logprobs(&tokens);
        let mut choice = Map::new();
        choice.insert("index".into(), json!(0));
        match self.meta.endpoint {
            Endpoint::Chat => {
                let call =
                    self.meta.tool_names.as_ref().and_then(|(names, format)| {
                        super::tools::call_in(&self.text, names, *format)
                    });
                if let Some((name, arguments)) = call {
                    choice.insert(
                        "message".into(),
                        json!({"role": "assistant", "content": null, "tool_calls": [{
                            "id": format!("call_{}", self.meta.id.trim_start_matches("chatcmpl-")),
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }]}),
                    );
                    choice.insert("finish_reason".into(), json!("tool_calls"));
                } else {
                    choice.insert(
                        "message".into(),
                        json!({"role": "assistant", "content": self.text}),
                    );
                }
            }
            Endpoint::Completion => {
                choice.insert("text".into(), json!(self.text));
            }
        }
        choice.insert("logprobs".into(), logprobs);
        choice
            .entry("finish_reason")
            .or_insert_with(|| json!(finish_reason(done.finish)));
        if let Some(m) = self.metrics(&tokens) {
            choice.insert("x_metrics".into(), m);
        }
        let mut body = self.envelope(false);
        body.insert("choices".into(), json!([Value::Object(choice)]));
        body.insert("usage".into(), usage(done));
        Value::Object(body)
    }

    fn envelope(&self, chunk: bool) -> Map<String, Value> {
        let object = match (self.meta.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        };
        let mut m = Map::new();
        m.insert("id".into(), json!(self.meta.id));
        m.insert("object".into(), json!(object));
        m.insert("created".into(), json!(self.meta.created));
        m.insert("model".into(), json!(self.meta.model));
        m.insert("system_fingerprint".into(), Value::Null);
        m
    }

    fn chunk(
        &self,
        delta: Value,
        logprobs: Value,
        finish: Option<&str>,
        metrics: Option<Value>,
    ) -> Value {
        let mut choice = Map::new();
        choice.insert("index".into(), json!(0));
        match self.meta.endpoint {
            Endpoint::Chat => choice.insert("delta".into(), delta),
            Endpoint::Completion => choice.insert("text".into(), delta),
        };
        choice.insert("logprobs".into(), logprobs);
        choice.insert("finish_reason".into(), json!(finish));
        if let Some(m) = metrics {
            choice.insert("x_metrics".into(), m);
        }
        let mut body = self.envelope(true);
        body.insert("choices".into(), json!([Value::Object(choice)]));
        Value::Object(body)
    }

    fn logprobs(&mut self, tokens: &[TokenOut]) -> Value {
        if !self.meta.logprobs || tokens.is_empty() {
            return Value::Null;
        }
        match self.meta.endpoint {
            Endpoint::Chat => {
                let content: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let mut entry = alternative(&t.piece, t.logprob.unwrap_or(f32::NAN));
                        let top: Vec<Value> =
                            t.top.iter().map(|(_, p, lp)| alternative(p, *lp)).collect();
                        entry["top_logprobs"] = json!(top);
                        entry
                    })
                    .collect();
                json!({ "content": content })
            }
            Endpoint::Completion => {
                let mut offsets = Vec::with_capacity(tokens.len());
                for t in tokens {
                    offsets.push(self.offset);
                    self.offset += String::from_utf8_lossy(&t.piece).chars().count();
                }
                let top: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let map: Map<String, Value> = t
                            .top
                            .iter()
                            .map(|(_, p, lp)| (String::from_utf8_lossy(p).into_owned(), json!(lp)))
                            .collect();
                        Value::Object(map)
                    })
                    .collect();
                json!({
                    "tokens": tokens.iter().map(|t| String::from_utf8_lossy(&t.piece)).collect::<Vec<_>>(),
                    "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }

    fn metrics(&self, tokens: &[TokenOut]) -> Option<Value> {
        self.meta.metrics.then(|| {
            let list: Vec<Value> = tokens
                .iter()
                .filter_map(|t| {
                    t.metrics.map(|m| {
                        json!({
                            "token": t.id,
                            "entropy": m.entropy,
                            "surprisal": m.surprisal,
                            "varentropy": m.varentropy,
                            "rank": m.rank,
                        })
                    })
                })
                .collect();
            json!(list)
        })
    }
}

fn alternative(piece: &[u8], logprob: f32) -> Value {
    json!({
        "token": String::from_utf8_lossy(piece),
        "logprob": logprob,
        "bytes": piece,
    })
}

/// OpenAI's `finish_reason` for how generation ended.
fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn usage(done: Done) -> Value {
    json!({
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    })
}
