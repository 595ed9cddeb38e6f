//! Tool calling in the chat API (`tools`, `tool_choice`), built on the grammar constraint.
//!
//! A call is written in the model's own format where its chat template defines one
//! ([`CallFormat`]): the template gets the `tools` variable and describes them itself, and a
//! call is `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (Qwen 2/2.5/3,
//! Hermes) or `{"name": ..., "parameters": {...}}` (Llama 3.1+). Otherwise the tools are
//! described in the system message, with a call being only the JSON object
//! `{"name": TOOL, "arguments": {...}}`. The constraint holds the reply to the format: with
//! `tool_choice` `required` (or a named function) the reply must be a call (whose arguments
//! follow the tool's `parameters` schema); with `auto` it is either such a call or text that
//! does not start like one. A reply that is a call comes back as `tool_calls` with
//! `finish_reason` `tool_calls`; streamed, the reply is held back and sent at its end as one
//! `tool_calls` delta (or as its text). Earlier calls in `messages` are shown to the model in
//! its format, and tool results as `tool` messages where the template knows them.

use std::fmt::Write as _;

use ferrolm_grammar::Grammar;
use ferrolm_tokenizer::ChatMessage;
use serde_json::{Map, Value, json};

use super::error::ApiError;

/// How a model writes a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFormat {
    /// ferrolm's: the JSON object `{"name", "arguments"}` alone, tools described in the system
    /// message.
    Generic,
    /// `<tool_call>` tags around `{"name", "arguments"}`; the template lists the tools.
    Hermes,
    /// `{"name", "parameters"}`; the template lists the tools (Llama 3.1 and later).
    Llama,
}

impl CallFormat {
    /// The format a chat template defines, judged from its source.
    pub fn of_template(source: &str) -> CallFormat {
        if !source.contains("tools") {
            CallFormat::Generic
        } else if source.contains("<tool_call>") {
            CallFormat::Hermes
        } else if source.contains("ipython") && source.contains("parameters") {
            CallFormat::Llama
        } else {
            CallFormat::Generic
        }
    }

    /// Whether the template describes the tools (it gets the `tools` variable).
    pub fn in_template(self) -> bool {
        self != CallFormat::Generic
    }

    /// The key of a call's arguments.
    fn arguments_key(self) -> &'static str {
        match self {
            CallFormat::Llama => "parameters",
            _ => "arguments",
        }
    }

    /// Text around the JSON of a call.
    fn wrap(self) -> (&'static str, &'static str) {
        match self {
            CallFormat::Hermes => ("<tool_call>\n", "\n</tool_call>"),
            _ => ("", ""),
        }
    }
}

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON schema of its arguments.
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool.
    None,
    /// Call a tool or answer in text, as the model decides.
    Auto,
    /// Call one of the tools.
    Required,
    /// Call this tool.
    Named(String),
}

/// The tools of a request and how they may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    /// The functions.
    pub tools: Vec<Tool>,
    /// `tool_choice`.
    pub choice: ToolChoice,
}

/// `tools` and `tool_choice` of a request body; `None` without tools.
pub fn parse(body: &Map<String, Value>) -> Result<Option<Tools>, ApiError> {
    let get = |k: &str| body.get(k).filter(|v| !v.is_null());
    let list = match get("tools") {
        None => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(v) => return Err(ApiError::mistyped("tools", "an array", v)),
    };
    let mut tools = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = |f: &str| format!("tools[{i}].{f}");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::field(
                &at("type"),
                "only tools of type \"function\" are supported",
            ));
        }
        let Some(f) = t.get("function").and_then(Value::as_object) else {
            return Err(ApiError::missing(&at("function")));
        };
        let name = match f.get("name") {
            Some(Value::String(n))
                if !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                n.clone()
            }
            Some(v) => {
                return Err(ApiError::field(
                    &at("function.name"),
                    format!("a function name is letters, digits, '_' and '-', got {v}"),
                ));
            }
            None => return Err(ApiError::missing(&at("function.name"))),
        };
        if tools.iter().any(|t: &Tool| t.name == name) {
            return Err(ApiError::field(
                &at("function.name"),
                format!("two tools are called {name}"),
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(v) => {
                return Err(ApiError::mistyped(
                    &at("function.parameters"),
                    "a JSON schema object",
                    v,
                ));
            }
        };
        let description = f
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        tools.push(Tool {
            name,
            description,
            parameters,
        });
    }
    if tools.is_empty() {
        return Ok(None);
    }
    let choice = match get("tool_choice") {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::field(
                    "tool_choice",
                    format!(
                        "tool_choice must be none, auto, required or a function, got `{other}`"
                    ),
                ));
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::missing("tool_choice.function.name"))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::field(
                    "tool_choice",
                    format!("tool_choice names {name}, which is not among the tools"),
                ));
            }
            ToolChoice::Named(name.to_owned())
        }
        Some(v) => {
            return Err(ApiError::mistyped(
                "tool_choice",
                "a string or an object",
                v,
            ));
        }
    };
    Ok(Some(Tools { tools, choice }))
}

impl Tools {
    /// Whether the model may call a tool in this reply.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The tools a call may name.
    fn callable(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(move |t| match &self.choice {
            ToolChoice::Named(n) => &t.name == n,
            _ => true,
        })
    }

    /// The schema of a call of one of the callable tools.
    fn call_schema(&self, format: CallFormat) -> Value {
        let key = format.arguments_key();
        let calls: Vec<Value> = self
            .callable()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, key: t.parameters},
                    "required": ["name", key],
                    "additionalProperties": false
                })
            })
            .collect();
        match <[Value; 1]>::try_from(calls) {
            Ok([one]) => one,
            Err(calls) => json!({"anyOf": calls}),
        }
    }

    /// What the reply is held to, for a model that writes calls in `format`.
    pub fn grammar(&self, format: CallFormat) -> Grammar {
        let schema = self.call_schema(format);
        let (open, close) = format.wrap();
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let call = if open.is_empty() {
            format!("call: %json {schema}\n")
        } else {
            format!("call: {} %json {schema} {}\n", quote(open), quote(close))
        };
        // Text may not start the way a call does.
        let text = match format {
            CallFormat::Hermes => "TEXT: /[^<\\s][\\s\\S]*/\n",
            _ => "TEXT: /[^{\\s][\\s\\S]*/\n",
        };
        match (&self.choice, open.is_empty()) {
            (ToolChoice::Auto, _) => Grammar::Lark(format!("start: call | TEXT\n{call}{text}")),
            (_, true) => Grammar::JsonSchema(schema),
            (_, false) => Grammar::Lark(format!("start: call\n{call}")),
        }
    }

    /// The `tools` variable for a template that describes them: the request's list.
    pub fn for_template(&self) -> Value {
        Value::Array(
            self.tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters
                    }})
                })
                .collect(),
        )
    }

    /// The instructions that describe the tools, for the system message.
    pub fn instructions(&self) -> String {
        let mut text = String::from(
            "You can call functions. To call one, reply with only a JSON object \
             {\"name\": FUNCTION, \"arguments\": {ARGUMENTS}} and nothing else; \
             the result comes back in the next message.",
        );
        if self.choice == ToolChoice::Auto {
            text.push_str(" If no function helps, answer in plain text.");
        }
        text.push_str("\nFunctions:");
        for t in self.callable() {
            let _ = write!(
                text,
                "\n- {}: {} Arguments (JSON schema): {}",
                t.name, t.description, t.parameters
            );
        }
        text
    }

    /// Puts the instructions in the system message (adding one where there is none).
    pub fn instruct(&self, messages: &mut Vec<ChatMessage>) {
        match messages.first_mut() {
            Some(m) if m.role == "system" => {
                m.content = format!("{}\n\n{}", m.content, self.instructions());
            }
            _ => messages.insert(0, ChatMessage::system(self.instructions())),
        }
    }
}

/// The call a reply makes, if it is one of `names`' calls in `format`: the name and the
/// arguments as JSON text.
pub fn call_in(text: &str, names: &[String], format: CallFormat) -> Option<(String, String)> {
    let (open, close) = format.wrap();
    let body = text
        .trim()
        .strip_prefix(open.trim())?
        .strip_suffix(close.trim())?;
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    let name = value.get("name")?.as_str()?;
    let arguments = value.get(format.arguments_key())?;
    (names.iter().any(|n| n == name) && arguments.is_object())
        .then(|| (name.to_owned(), arguments.to_string()))
}

/// A past call, as the model would have written it in `format`.
pub fn call_text(name: &str, arguments: &str, format: CallFormat) -> String {
    let arguments: Value =
        serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.into()));
    let (open, close) = format.wrap();
    format!(
        "{open}{{\"name\": {}, \"{}\": {arguments}}}{close}",
        json!(name),
        format.arguments_key()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(v: &Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time"}}])
    }

    #[test]
    fn tools_and_choices_parse_and_bad_ones_name_their_field() {
        let t = parse(&body(&json!({"tools": weather()}))).unwrap().unwrap();
        assert_eq!(t.choice, ToolChoice::Auto);
        assert_eq!(
            t.tools[1].parameters,
            json!({"type": "object", "properties": {}})
        );
        let t = parse(&body(
            &json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(t.choice, ToolChoice::Named("get_time".into()));
        assert_eq!(
            t.grammar(CallFormat::Generic),
            Grammar::JsonSchema(json!({"type": "object",
                "properties": {"name": {"const": "get_time"}, "arguments": {"type": "object", "properties": {}}},
                "required": ["name", "arguments"], "additionalProperties": false}))
        );
        assert!(parse(&body(&json!({}))).unwrap().is_none());
        for (b, param) in [
            (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": weather(), "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"tools": weather(), "tool_choice": {"function": {"name": "nope"}}}),
                "tool_choice",
            ),
            (json!({"tools": 3}), "tools"),
        ] {
            let e = parse(&body(&b)).unwrap_err();
            assert_eq!(e.body()["error"]["param"], param, "{b}");
        }
    }

    #[test]
    fn calls_are_recognised_only_for_known_tools() {
        let names = vec!["get_weather".to_owned()];
        let g = CallFormat::Generic;
        assert_eq!(
            call_in(
                r#" {"name": "get_weather", "arguments": {"city": "Paris"}} "#,
                &names,
                g
            ),
            Some(("get_weather".into(), r#"{"city":"Paris"}"#.into()))
        );
        assert_eq!(
            call_in(r#"{"name": "other", "arguments": {}}"#, &names, g),
            None
        );
        assert_eq!(call_in("It is sunny.", &names, g), None);
        assert_eq!(
            call_text("get_weather", r#"{"city":"Paris"}"#, g),
            r#"{"name": "get_weather", "arguments": {"city":"Paris"}}"#
        );
        // Each format reads back what it writes, and only that.
        for f in [CallFormat::Generic, CallFormat::Hermes, CallFormat::Llama] {
            let text = call_text("get_weather", r#"{"city":"Paris"}"#, f);
            assert_eq!(
                call_in(&text, &names, f),
                Some(("get_weather".into(), r#"{"city":"Paris"}"#.into())),
                "{f:?}: {text}"
            );
        }
        let hermes = call_text("get_weather", "{}", CallFormat::Hermes);
        assert!(hermes.starts_with("<tool_call>\n{") && hermes.ends_with("}\n</tool_call>"));
        assert_eq!(call_in(&hermes, &names, CallFormat::Generic), None);
        assert_eq!(
            CallFormat::of_template("{% if tools %}<tool_call>{% endif %}"),
            CallFormat::Hermes
        );
        assert_eq!(
            CallFormat::of_template("{% if tools %}ipython \"parameters\"{% endif %}"),
            CallFormat::Llama
        );
        assert_eq!(
            CallFormat::of_template("{{ messages }}"),
            CallFormat::Generic
        );
    }
}
