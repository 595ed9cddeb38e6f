//! Reading OpenAI request bodies field by field, so that every mistake is answered with the
//! field's name and what was wrong with it.

use ferrolm_grammar::Grammar;

use super::tools::CallFormat;
use ferrolm_sampling::SamplingConfig;
use ferrolm_tokenizer::ChatMessage;
use serde_json::{Map, Value};

use super::error::{ApiError, json_kind};

/// Which endpoint a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// What to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Text, tokenized as `ferrolm run -p` tokenizes it.
    Text(String),
    /// Token ids as given.
    Tokens(Vec<u32>),
}

/// A parsed request, checked for everything that does not need the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The `model` field.
    pub model: String,
    /// What to continue.
    pub prompt: Prompt,
    /// `max_completion_tokens` or `max_tokens`, if given.
    pub max_tokens: Option<usize>,
    /// Sampling settings (the seed is random unless `seed` was given).
    pub sampling: SamplingConfig,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Alternatives per token when log-probabilities are wanted.
    pub logprobs: Option<usize>,
    /// `x_metrics`: entropy and surprisal per token.
    pub metrics: bool,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The grammar the output must follow (`response_format` or `grammar`), with the field
    /// that asked for it.
    pub grammar: Option<(Grammar, &'static str)>,
    /// The tools the reply may call (`tools` with a `tool_choice` other than `none`), and the
    /// format the model writes calls in.
    pub tool_names: Option<(Vec<String>, CallFormat)>,
    /// The `tools` variable of a chat template that describes the tools itself.
    pub template_tools: Option<Value>,
}

/// Most stop sequences (as OpenAI allows).
const MAX_STOPS: usize = 4;
/// Most alternatives per token: 20 for chat, 5 for completions (as OpenAI allows).
const MAX_TOP_LOGPROBS_CHAT: i64 = 20;
const MAX_TOP_LOGPROBS_COMPLETION: i64 = 5;

/// Parses a body sent to `endpoint`; `n_ctx` bounds `max_tokens`. Tool calls are written in
/// ferrolm's generic format.
#[cfg(test)]
pub fn parse(body: &[u8], endpoint: Endpoint, n_ctx: usize) -> Result<Request, ApiError> {
    parse_with(body, endpoint, n_ctx, CallFormat::Generic)
}

/// [`parse`] for a model that writes tool calls in `format`.
pub fn parse_with(
    body: &[u8],
    endpoint: Endpoint,
    n_ctx: usize,
    format: CallFormat,
) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError {
        code: Some("invalid_json"),
        ..ApiError::invalid(format!("the body is not valid JSON: {e}"))
    })?;
    let Value::Object(map) = &value else {
        return Err(ApiError::invalid(format!(
            "the body must be a JSON object, got {}",
            json_kind(&value)
        )));
    };
    let f = Fields::body(map);
    let model = f
        .string("model")?
        .ok_or_else(|| ApiError::missing("model"))?
        .to_owned();
    let prompt = match endpoint {
        Endpoint::Chat => Prompt::Chat(messages(&f, format)?),
        Endpoint::Completion => prompt(&f)?,
    };
    let max_tokens = max_tokens(&f, n_ctx)?;
    if let Some(n) = f.integer("n")?
        && n != 1
    {
        return Err(ApiError::field(
            "n",
            format!("only n = 1 is supported, got {n}"),
        ));
    }
    if endpoint == Endpoint::Completion {
        if let Some(b) = f.integer("best_of")?
            && b != 1
        {
            return Err(ApiError::field(
                "best_of",
                format!("only best_of = 1 is supported, got {b}"),
            ));
        }
        if f.boolean("echo")? == Some(true) {
            return Err(ApiError::field("echo", "echo is not supported"));
        }
        if f.string("suffix")?.is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::field("suffix", "suffix is not supported"));
        }
    }
    let tools = super::tools::parse(map)?.filter(super::tools::Tools::active);
    let stream = f.boolean("stream")?.unwrap_or(false);
    let mut grammar = grammar(&f)?;
    let mut prompt = prompt;
    if let Some(tools) = &tools {
        if endpoint != Endpoint::Chat {
            return Err(ApiError::field(
                "tools",
                "tools are for /v1/chat/completions",
            ));
        }
        if let Some((_, param)) = grammar {
            return Err(ApiError::field(
                param,
                format!("{param} cannot be combined with tools"),
            ));
        }
        if !format.in_template()
            && let Prompt::Chat(messages) = &mut prompt
        {
            tools.instruct(messages);
        }
        grammar = Some((tools.grammar(format), "tools"));
    }
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields::nested(o, "stream_options")
            .boolean("include_usage")?
            .unwrap_or(false),
        Some(v) => return Err(ApiError::mistyped("stream_options", "an object", v)),
    };
    Ok(Request {
        model,
        prompt,
        max_tokens,
        sampling: sampling(&f)?,
        stop: stop(&f)?,
        logprobs: logprobs(&f, endpoint)?,
        metrics: f.boolean("x_metrics")?.unwrap_or(false),
        stream,
        include_usage,
        grammar,
        template_tools: tools
            .as_ref()
            .filter(|_| format.in_template())
            .map(super::tools::Tools::for_template),
        tool_names: tools.map(|t| (t.tools.into_iter().map(|t| t.name).collect(), format)),
    })
}

/// `response_format` (`text`, `json_object`, or `json_schema` with its `schema`) and
/// llama.cpp's `grammar` (here in llguidance's Lark syntax).
fn grammar(f: &Fields<'_>) -> Result<Option<(Grammar, &'static str)>, ApiError> {
    let format = match f.get("response_format") {
        None => None,
        Some(Value::Object(o)) => {
            let o = Fields::nested(o, "response_format");
            match o.string("type")? {
                None => return Err(ApiError::missing("response_format.type")),
                Some("text") => None,
                Some("json_object") => Some(Grammar::JsonObject),
                Some("json_schema") => {
                    let spec = match o.get("json_schema") {
                        Some(Value::Object(spec)) => spec,
                        Some(v) => {
                            return Err(ApiError::mistyped(
                                "response_format.json_schema",
                                "an object",
                                v,
                            ));
                        }
                        None => return Err(ApiError::missing("response_format.json_schema")),
                    };
                    match spec.get("schema") {
                        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
                            Some(Grammar::JsonSchema(schema.clone()))
                        }
                        Some(v) => {
                            return Err(ApiError::mistyped(
                                "response_format.json_schema.schema",
                                "an object",
                                v,
                            ));
                        }
                        None => {
                            return Err(ApiError::missing("response_format.json_schema.schema"));
                        }
                    }
                }
                Some(other) => {
                    return Err(ApiError::field(
                        "response_format.type",
                        format!(
                            "unknown response format `{other}` (text, json_object and json_schema are supported)"
                        ),
                    ));
                }
            }
        }
        Some(v) => return Err(ApiError::mistyped("response_format", "an object", v)),
    };
    let lark = f.string("grammar")?.map(|g| Grammar::Lark(g.to_owned()));
    match (format, lark) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "grammar",
            "give either response_format or grammar, not both",
        )),
        (Some(g), None) => Ok(Some((g, "response_format"))),
        (None, Some(g)) => Ok(Some((g, "grammar"))),
        (None, None) => Ok(None),
    }
}

/// Typed access to the fields of a JSON object; `null` counts as absent. Errors name a
/// field by its path from the body (`stream_options.include_usage`).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// The path of this object in the body, empty for the body itself.
    at: String,
}

impl<'a> Fields<'a> {
    /// The body's own fields.
    fn body(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            at: String::new(),
        }
    }

    /// The fields of the object at `at` in the body.
    fn nested(map: &'a Map<String, Value>, at: impl Into<String>) -> Self {
        Self { map, at: at.into() }
    }

    /// A field's name as errors give it.
    fn param(&self, name: &str) -> String {
        if self.at.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.at)
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ApiError::mistyped(&self.param(name), "a string", v)),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::mistyped(&self.param(name), "a boolean", v)),
        }
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(_)) => Ok(Some(i64::MAX)),
                _ => Err(ApiError::mistyped(
                    &self.param(name),
                    "an integer",
                    &Value::Number(n.clone()),
                )),
            },
            Some(v) => Err(ApiError::mistyped(&self.param(name), "an integer", v)),
        }
    }

    /// A number in `lo..=hi`.
    fn number(&self, name: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if (lo..=hi).contains(&x) {
                    Ok(Some(x as f32))
                } else {
                    let param = self.param(name);
                    Err(ApiError::field(
                        &param,
                        format!("`{param}` must be between {lo} and {hi}, got {n}"),
                    ))
                }
            }
            Some(v) => Err(ApiError::mistyped(&self.param(name), "a number", v)),
        }
    }

    /// An integer in `lo..=hi`.
    fn integer_in(&self, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        match self.integer(name)? {
            Some(n) if !(lo..=hi).contains(&n) => {
                let param = self.param(name);
                Err(ApiError::field(
                    &param,
                    format!("`{param}` must be between {lo} and {hi}, got {n}"),
                ))
            }
            n => Ok(n),
        }
    }
}

fn messages(f: &Fields<'_>, format: CallFormat) -> Result<Vec<ChatMessage>, ApiError> {
    let list = match f.get("messages") {
        None => return Err(ApiError::missing("messages")),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(ApiError::mistyped("messages", "an array", v)),
    };
    if list.is_empty() {
        return Err(ApiError::field(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| message(i, m, format))
        .collect()
}

fn message(i: usize, value: &Value, format: CallFormat) -> Result<ChatMessage, ApiError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(map) = value else {
        return Err(ApiError::mistyped(
            &format!("messages[{i}]"),
            "an object",
            value,
        ));
    };
    let role = match map.get("role") {
        None | Some(Value::Null) => return Err(ApiError::missing(&at("role"))),
        Some(Value::String(r)) => r.as_str(),
        Some(v) => return Err(ApiError::mistyped(&at("role"), "a string", v)),
    };
    let role = match role {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" => "tool",
        "function" => {
            return Err(ApiError::field(
                &at("role"),
                "the role `function` is OpenAI's deprecated form; send tool results as `tool`",
            ));
        }
        other => {
            return Err(ApiError::field(
                &at("role"),
                format!("unknown role `{other}`: expected system, developer, user or assistant"),
            ));
        }
    };
    let content = match map.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) if role == "assistant" => String::new(),
        None | Some(Value::Null) => return Err(ApiError::missing(&at("content"))),
        Some(Value::Array(parts)) => content_parts(&at("content"), parts)?,
        Some(v) => {
            return Err(ApiError::mistyped(
                &at("content"),
                "a string or an array of text parts",
                v,
            ));
        }
    };
    // A past tool call is shown as the call the model wrote; a tool result as a user message,
    // which every chat template renders.
    if role == "assistant"
        && let Some(calls) = map.get("tool_calls").and_then(Value::as_array)
    {
        let mut text = content;
        for (j, call) in calls.iter().enumerate() {
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let arguments = function
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str);
            let (Some(name), Some(arguments)) = (name, arguments) else {
                return Err(ApiError::field(
                    &at(&format!("tool_calls[{j}]")),
                    "a tool call needs function.name and function.arguments (a string)",
                ));
            };
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&super::tools::call_text(name, arguments, format));
        }
        return Ok(ChatMessage::new("assistant", text));
    }
    if role == "tool" {
        return Ok(ChatMessage::new(
            "user",
            format!("Function result: {content}"),
        ));
    }
    Ok(ChatMessage::new(role, content))
}

/// Joins `[{"type": "text", "text": ...}, ...]`; other part types are refused.
fn content_parts(param: &str, parts: &[Value]) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let part_param = format!("{param}[{j}]");
        let Value::Object(p) = part else {
            return Err(ApiError::mistyped(&part_param, "an object", part));
        };
        let fields = Fields::nested(p, part_param.clone());
        match fields.string("type")? {
            Some("text") => {}
            Some(other) => {
                return Err(ApiError::field(
                    &part_param,
                    format!("content parts of type `{other}` are not supported; only `text`"),
                ));
            }
            None => return Err(ApiError::missing(&fields.param("type"))),
        }
        let t = fields
            .string("text")?
            .ok_or_else(|| ApiError::missing(&fields.param("text")))?;
        text.push_str(t);
    }
    Ok(text)
}

fn prompt(f: &Fields<'_>) -> Result<Prompt, ApiError> {
    let one = "`prompt` must be a string, an array of one string, or an array of token ids";
    match f.get("prompt") {
        None => Err(ApiError::missing("prompt")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => Ok(Prompt::Text(s.clone())),
            [Value::Array(ids)] => token_ids(ids).map(Prompt::Tokens),
            [] => Err(ApiError::field("prompt", "`prompt` is empty")),
            ids if ids.iter().all(Value::is_number) => token_ids(ids).map(Prompt::Tokens),
            _ if items.len() > 1 && items.iter().all(|v| v.is_string() || v.is_array()) => Err(
                ApiError::field("prompt", "only one prompt per request is supported"),
            ),
            _ => Err(ApiError::field("prompt", one)),
        },
        Some(v) => Err(ApiError::mistyped("prompt", "a string or an array", v)),
    }
}

fn token_ids(ids: &[Value]) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::field(
                        "prompt",
                        format!("token ids must be non-negative integers, got {v}"),
                    )
                })
        })
        .collect()
}

fn max_tokens(f: &Fields<'_>, n_ctx: usize) -> Result<Option<usize>, ApiError> {
    let name = if f.get("max_completion_tokens").is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let Some(n) = f.integer(name)? else {
        return Ok(None);
    };
    if n < 1 {
        return Err(ApiError::field(
            name,
            format!("`{name}` must be at least 1, got {n}"),
        ));
    }
    if n as u64 > n_ctx as u64 {
        return Err(ApiError::field(
            name,
            format!("`{name}` is {n}, more than the context size of {n_ctx} tokens"),
        ));
    }
    Ok(Some(n as usize))
}

fn sampling(f: &Fields<'_>) -> Result<SamplingConfig, ApiError> {
    let top_k = match f.integer("top_k")? {
        None => 0,
        Some(k) if k >= 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(k) => {
            return Err(ApiError::field(
                "top_k",
                format!("`top_k` must be 0 or more, got {k}"),
            ));
        }
    };
    let seed = match f.integer("seed")? {
        Some(s) => s as u64,
        None => random_seed(),
    };
    let entropy = entropy_guided(f)?;
    let config = SamplingConfig {
        // OpenAI's defaults: full temperature, no truncation.
        temperature: f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0),
        top_k,
        top_p: match f.number("top_p", 0.0, 1.0)? {
            Some(p) if p <= 0.0 => {
                return Err(ApiError::field("top_p", "`top_p` must be above 0"));
            }
            p => p.unwrap_or(1.0),
        },
        min_p: f.number("min_p", 0.0, 1.0)?.unwrap_or(0.0),
        typical_p: f.number("typical_p", 0.0, 1.0)?.unwrap_or(1.0),
        repeat_penalty: 1.0,
        // The penalties look at every generated token.
        repeat_last_n: usize::MAX,
        frequency_penalty: f.number("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        presence_penalty: f.number("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        entropy_weight: entropy.weight,
        entropy_order: entropy.order,
        entropy_window: entropy.window,
        logit_bias: logit_bias(f)?,
        seed,
    };
    if config.entropy_weight > 0.0 && config.is_greedy() {
        return Err(ApiError::field(
            "x_entropy_guided",
            "`x_entropy_guided` needs a random draw, but the request is greedy \
             (temperature 0, top_k 1 or min_p 1)",
        ));
    }
    Ok(config)
}

/// `x_entropy_guided` when a field is absent: `ferrolm run --sampler entropy`'s values.
const DEFAULT_ENTROPY_WEIGHT: f32 = 0.2;
const DEFAULT_ENTROPY_ORDER: i64 = 3;
const DEFAULT_ENTROPY_WINDOW: i64 = 256;
/// Most tokens of history the entropy-guided stage may count (it scans them for every token).
const MAX_ENTROPY_WINDOW: i64 = 65_536;

/// The entropy-guided stage's `(weight, order, window)`; weight 0 (off) without the field.
#[derive(Debug, Clone, Copy, PartialEq)]
struct EntropyGuided {
    weight: f32,
    order: usize,
    window: usize,
}

/// `x_entropy_guided: {"weight", "order", "window"}`, each optional.
fn entropy_guided(f: &Fields<'_>) -> Result<EntropyGuided, ApiError> {
    const NAME: &str = "x_entropy_guided";
    let map = match f.get(NAME) {
        None => {
            return Ok(EntropyGuided {
                weight: 0.0,
                order: DEFAULT_ENTROPY_ORDER as usize,
                window: DEFAULT_ENTROPY_WINDOW as usize,
            });
        }
        Some(Value::Object(m)) => m,
        Some(v) => return Err(ApiError::mistyped(NAME, "an object", v)),
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "weight" | "order" | "window"))
    {
        let param = format!("{NAME}.{key}");
        return Err(ApiError::field(
            &param,
            format!("unknown field `{param}`: `{NAME}` takes weight, order and window"),
        ));
    }
    let inner = Fields::nested(map, NAME);
    let weight = inner
        .number("weight", 0.0, 1.0)?
        .unwrap_or(DEFAULT_ENTROPY_WEIGHT);
    let order = inner
        .integer_in("order", 1, MAX_ENTROPY_WINDOW)?
        .unwrap_or(DEFAULT_ENTROPY_ORDER);
    let window = inner
        .integer_in("window", order, MAX_ENTROPY_WINDOW)?
        .unwrap_or(DEFAULT_ENTROPY_WINDOW.max(order));
    Ok(EntropyGuided {
        weight,
        order: order as usize,
        window: window as usize,
    })
}

fn logit_bias(f: &Fields<'_>) -> Result<Vec<(u32, f32)>, ApiError> {
    let map = match f.get("logit_bias") {
        None => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(v) => return Err(ApiError::mistyped("logit_bias", "an object", v)),
    };
    map.iter()
        .map(|(key, bias)| {
            let id = key.parse::<u32>().map_err(|_| {
                ApiError::field("logit_bias", format!("`logit_bias` keys must be token ids, got `{key}`"))
            })?;
            let b = bias
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    ApiError::field(
                        "logit_bias",
                        format!("the bias of token {id} must be a number between -100 and 100, got {bias}"),
                    )
                })?;
            Ok((id, b as f32))
        })
        .collect()
}

fn stop(f: &Fields<'_>) -> Result<Vec<String>, ApiError> {
    let stops = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::mistyped(
                    "stop",
                    "a string or an array of strings",
                    other,
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::mistyped(
                "stop",
                "a string or an array of strings",
                v,
            ));
        }
    };
    if stops.len() > MAX_STOPS {
        return Err(ApiError::field(
            "stop",
            format!("at most {MAX_STOPS} stop sequences, got {}", stops.len()),
        ));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Chat: `logprobs: bool` and `top_logprobs: 0..=20`; completions: `logprobs: 0..=5`.
fn logprobs(f: &Fields<'_>, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    match endpoint {
        Endpoint::Chat => {
            let on = f.boolean("logprobs")?.unwrap_or(false);
            let top = f.integer("top_logprobs")?;
            match top {
                Some(n) if !(0..=MAX_TOP_LOGPROBS_CHAT).contains(&n) => Err(ApiError::field(
                    "top_logprobs",
                    format!(
                        "`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS_CHAT}, got {n}"
                    ),
                )),
                Some(_) if !on => Err(ApiError::field(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs` set to true",
                )),
                _ => Ok(on.then(|| top.unwrap_or(0) as usize)),
            }
        }
        Endpoint::Completion => match f.integer("logprobs")? {
            None => Ok(None),
            Some(n) if (0..=MAX_TOP_LOGPROBS_COMPLETION).contains(&n) => Ok(Some(n as usize)),
            Some(n) => Err(ApiError::field(
                "logprobs",
                format!("`logprobs` must be between 0 and {MAX_TOP_LOGPROBS_COMPLETION}, got {n}"),
            )),
        },
    }
}

/// A seed for requests that give none: different for every request.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Request, ApiError> {
        parse(body.as_bytes(), Endpoint::Chat, 2048)
    }

    fn completion(body: &str) -> Result<Request, ApiError> {
        parse(body.as_bytes(), Endpoint::Completion, 2048)
    }

    fn param(r: Result<Request, ApiError>) -> Option<String> {
        r.expect_err("the request must be refused").param
    }

    #[test]
    fn a_full_chat_request_is_read() {
        let r = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
               {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
               "max_completion_tokens":7,"max_tokens":99,"temperature":0.5,"top_p":0.5,"top_k":3,"min_p":0.1,
               "seed":-1,"stop":["a","b"],"presence_penalty":1.5,"frequency_penalty":-0.5,
               "logprobs":true,"top_logprobs":2,"n":1,"stream":true,"stream_options":{"include_usage":true},
               "x_metrics":true,"logit_bias":{"42":-100},"user":"ignored","typical_p":0.7,
               "x_entropy_guided":{"weight":0.25,"order":2,"window":16}}"#,
        )
        .expect("valid");
        assert_eq!(r.model, "m");
        assert_eq!(
            r.prompt,
            Prompt::Chat(vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("hi there")
            ])
        );
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.sampling.temperature, 0.5);
        assert_eq!(
            (r.sampling.top_p, r.sampling.top_k, r.sampling.min_p),
            (0.5, 3, 0.1)
        );
        assert_eq!(r.sampling.seed, u64::MAX);
        assert_eq!(
            (r.sampling.presence_penalty, r.sampling.frequency_penalty),
            (1.5, -0.5)
        );
        assert_eq!(r.sampling.logit_bias, [(42, -100.0)]);
        assert_eq!(r.sampling.typical_p, 0.7);
        assert_eq!(
            (
                r.sampling.entropy_weight,
                r.sampling.entropy_order,
                r.sampling.entropy_window
            ),
            (0.25, 2, 16)
        );
        assert_eq!(r.stop, ["a", "b"]);
        assert_eq!(r.logprobs, Some(2));
        assert!(r.metrics && r.stream && r.include_usage);
    }

    #[test]
    fn defaults_are_openai_s() {
        let r = completion(r#"{"model":"m","prompt":"x"}"#).expect("valid");
        assert_eq!(r.prompt, Prompt::Text("x".into()));
        assert_eq!(r.max_tokens, None);
        assert_eq!(
            (r.sampling.temperature, r.sampling.top_p, r.sampling.top_k),
            (1.0, 1.0, 0)
        );
        assert!(r.stop.is_empty() && r.logprobs.is_none() && !r.stream && !r.metrics);
        assert_eq!(
            (r.sampling.typical_p, r.sampling.entropy_weight),
            (1.0, 0.0)
        );
        assert_eq!(r.sampling.build().expect("valid").to_string(), "dist");
    }

    #[test]
    fn extensions_reach_the_chain_with_their_defaults() {
        let r = completion(r#"{"model":"m","prompt":"x","typical_p":0.5,"x_entropy_guided":{}}"#)
            .expect("valid");
        assert_eq!(
            (
                r.sampling.entropy_weight,
                r.sampling.entropy_order,
                r.sampling.entropy_window
            ),
            (0.2, 3, 256)
        );
        assert_eq!(
            r.sampling.build().expect("valid").to_string(),
            "typical-p -> entropy-guided -> dist"
        );
        // A window defaults to at least the order.
        let r = completion(r#"{"model":"m","prompt":"x","x_entropy_guided":{"order":300}}"#)
            .expect("valid");
        assert_eq!(
            (r.sampling.entropy_order, r.sampling.entropy_window),
            (300, 300)
        );
        let r = completion(r#"{"model":"m","prompt":"x","x_entropy_guided":null}"#).expect("valid");
        assert_eq!(r.sampling.entropy_weight, 0.0);
    }

    #[test]
    fn prompts_may_be_token_ids_or_one_string() {
        let ids = completion(r#"{"model":"m","prompt":[1,2,3]}"#).expect("valid");
        assert_eq!(ids.prompt, Prompt::Tokens(vec![1, 2, 3]));
        let nested = completion(r#"{"model":"m","prompt":[[4,5]]}"#).expect("valid");
        assert_eq!(nested.prompt, Prompt::Tokens(vec![4, 5]));
        let one = completion(r#"{"model":"m","prompt":["a"],"logprobs":3}"#).expect("valid");
        assert_eq!(
            (one.prompt, one.logprobs),
            (Prompt::Text("a".into()), Some(3))
        );
        assert_eq!(
            param(completion(r#"{"model":"m","prompt":["a","b"]}"#)).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(completion(r#"{"model":"m","prompt":[-1]}"#)).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(completion(r#"{"model":"m","prompt":[]}"#)).as_deref(),
            Some("prompt")
        );
    }

    #[test]
    fn malformed_and_non_object_bodies_are_refused() {
        let e = chat("{\"model\":").expect_err("malformed");
        assert_eq!(e.code, Some("invalid_json"));
        assert!(
            chat("[1,2]")
                .expect_err("array")
                .message
                .contains("JSON object")
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (
                r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":"hi"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"function","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f"}}]}]}"#,
                "messages[0].tool_calls[0]",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "messages[0].content[0]",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(param(chat(body)).as_deref(), Some(expected), "{body}");
        }
        let msg = r#""messages":[{"role":"user","content":"x"}]"#;
        let fields = [
            (r#""max_tokens":-5"#, "max_tokens"),
            (r#""max_tokens":0"#, "max_tokens"),
            (r#""max_tokens":1e9"#, "max_tokens"),
            (r#""max_tokens":99999999999999999999"#, "max_tokens"),
            (r#""max_tokens":2049"#, "max_tokens"),
            (r#""max_tokens":"10""#, "max_tokens"),
            (r#""max_completion_tokens":-1"#, "max_completion_tokens"),
            (r#""temperature":-0.1"#, "temperature"),
            (r#""temperature":"hot""#, "temperature"),
            (r#""top_p":0"#, "top_p"),
            (r#""top_p":1.5"#, "top_p"),
            (r#""top_k":-1"#, "top_k"),
            (r#""min_p":2"#, "min_p"),
            (r#""presence_penalty":3"#, "presence_penalty"),
            (r#""frequency_penalty":true"#, "frequency_penalty"),
            (r#""seed":1.5"#, "seed"),
            (r#""stop":["a","b","c","d","e"]"#, "stop"),
            (r#""stop":[1]"#, "stop"),
            (r#""n":2"#, "n"),
            (r#""stream":"yes""#, "stream"),
            (r#""stream_options":true"#, "stream_options"),
            (r#""logprobs":1"#, "logprobs"),
            (r#""top_logprobs":3"#, "top_logprobs"),
            (r#""logprobs":true,"top_logprobs":21"#, "top_logprobs"),
            (r#""logit_bias":{"x":1}"#, "logit_bias"),
            (r#""logit_bias":{"5":101}"#, "logit_bias"),
            (r#""x_metrics":1"#, "x_metrics"),
            (r#""typical_p":1.5"#, "typical_p"),
            (r#""typical_p":"x""#, "typical_p"),
            (r#""x_entropy_guided":0.3"#, "x_entropy_guided"),
            (
                r#""x_entropy_guided":{"weight":2}"#,
                "x_entropy_guided.weight",
            ),
            (
                r#""x_entropy_guided":{"weight":"big"}"#,
                "x_entropy_guided.weight",
            ),
            (
                r#""x_entropy_guided":{"order":0}"#,
                "x_entropy_guided.order",
            ),
            (
                r#""x_entropy_guided":{"order":2.5}"#,
                "x_entropy_guided.order",
            ),
            (
                r#""x_entropy_guided":{"order":4,"window":3}"#,
                "x_entropy_guided.window",
            ),
            (
                r#""x_entropy_guided":{"wieght":0.1}"#,
                "x_entropy_guided.wieght",
            ),
            (
                r#""x_entropy_guided":{},"temperature":0"#,
                "x_entropy_guided",
            ),
            (
                r#""stream_options":{"include_usage":1}"#,
                "stream_options.include_usage",
            ),
            (r#""tools":[{"type":"function"}]"#, "tools[0].function"),
        ];
        for (field, expected) in fields {
            let body = format!(r#"{{"model":"m",{msg},{field}}}"#);
            assert_eq!(param(chat(&body)).as_deref(), Some(expected), "{body}");
        }
        assert_eq!(
            param(completion(r#"{"model":"m","prompt":"x","logprobs":6}"#)).as_deref(),
            Some("logprobs")
        );
        assert_eq!(
            param(completion(r#"{"model":"m","prompt":"x","echo":true}"#)).as_deref(),
            Some("echo")
        );
        assert_eq!(
            param(completion(r#"{"model":"m"}"#)).as_deref(),
            Some("prompt")
        );
    }

    #[test]
    fn null_fields_count_as_absent() {
        let r = chat(r#"{"model":"m","messages":[{"role":"assistant","content":null},{"role":"user","content":"q"}],
                        "max_tokens":null,"temperature":null,"stop":null}"#)
            .expect("valid");
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.sampling.temperature, 1.0);
    }
}
