//! Chat templates: `tokenizer.chat_template` (Jinja) rendered with minijinja,
//! with the built-in template of the model's family when the file has none.

use std::fmt::Write as _;

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;

use crate::{Tokenizer, TokenizerError};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may know others).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// Gemma: no system role (a system message is put before the first user
/// message), `model` for the assistant, content trimmed.
const GEMMA: &str = "{%- set ns = namespace(system='') -%}\
{%- for message in messages -%}\
{%- if message['role'] == 'system' -%}\
{%- set ns.system = ns.system + (message['content'] | trim) -%}\
{%- else -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{- '<start_of_turn>' + role + '\n' -}}\
{%- if ns.system and role != 'model' -%}{{- ns.system + '\n\n' -}}{%- set ns.system = '' -%}{%- endif -%}\
{{- (message['content'] | trim) + '<end_of_turn>\n' -}}\
{%- endif -%}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}";

/// ChatML: `<|im_start|>role\ncontent<|im_end|>\n`.
const CHATML: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}";

/// Llama 3: header tokens around the role, `<|eot_id|>` after each message.
const LLAMA3: &str = "{%- for message in messages -%}\
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}";

/// The built-in templates, by family name.
const BUILTIN: &[(&str, &str)] = &[("gemma", GEMMA), ("chatml", CHATML), ("llama3", LLAMA3)];

/// A chat template ready to render.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    builtin: Option<&'static str>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template from Jinja source (as `tokenizer.chat_template` holds it).
    pub fn new(source: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            builtin: None,
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// A built-in template: `gemma`, `chatml` or `llama3`.
    pub fn builtin(family: &str) -> Option<ChatTemplate> {
        BUILTIN
            .iter()
            .find(|(name, _)| *name == family)
            .map(|&(name, src)| ChatTemplate {
                builtin: Some(name),
                ..ChatTemplate::new(src)
            })
    }

    /// Sets the `bos_token` and `eos_token` variables templates may use.
    #[must_use]
    pub fn with_tokens(
        mut self,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> ChatTemplate {
        self.bos_token = bos_token.into();
        self.eos_token = eos_token.into();
        self
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The family name when this is a built-in template.
    pub fn builtin_name(&self) -> Option<&'static str> {
        self.builtin
    }

    /// The `bos_token` variable.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Renders a conversation; `add_generation_prompt` appends the opening of
    /// the assistant's turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_with_tools(messages, None::<&()>, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with the `tools` variable set (OpenAI's list of function
    /// definitions), for templates that describe tools themselves; `None` leaves it unset.
    pub fn render_with_tools<T: Serialize>(
        &self,
        messages: &[ChatMessage],
        tools: Option<&T>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let mut env = Environment::new();
        // As Hugging Face renders chat templates.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime_now(&fmt)
        });
        let template = env.template_from_str(&self.source)?;
        let out = template.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            tools => tools,
        })?;
        Ok(out)
    }
}

impl Tokenizer {
    /// The model's chat template: `tokenizer.chat_template` when present,
    /// otherwise the built-in template of the family its architecture and
    /// special tokens reveal (Gemma, ChatML, Llama 3), otherwise an error.
    pub fn chat_template(&self) -> Result<ChatTemplate, TokenizerError> {
        let text = |id: Option<u32>| {
            id.and_then(|i| self.token_text(i).ok())
                .unwrap_or("")
                .to_owned()
        };
        let (bos, eos) = (text(self.bos()), text(self.eos()));
        if let Some(src) = self.chat_template_source() {
            return Ok(ChatTemplate::new(src).with_tokens(bos, eos));
        }
        let arch = self.architecture().unwrap_or("");
        let has = |t: &str| self.token_id(t).is_some();
        let family = if arch.starts_with("gemma")
            || (has("<start_of_turn>") && has("<end_of_turn>"))
        {
            "gemma"
        } else if has("<|im_start|>") && has("<|im_end|>") {
            "chatml"
        } else if has("<|start_header_id|>") && has("<|eot_id|>") {
            "llama3"
        } else {
            return Err(TokenizerError::NoChatTemplate {
                reason: format!(
                    "the model has no tokenizer.chat_template and its architecture ({}) and special tokens match no built-in template (gemma, chatml, llama3)",
                    if arch.is_empty() { "unknown" } else { arch }
                ),
            });
        };
        ChatTemplate::builtin(family)
            .map(|t| t.with_tokens(bos, eos))
            .ok_or_else(|| TokenizerError::NoChatTemplate {
                reason: format!("no built-in template named {family}"),
            })
    }

    /// Renders a conversation with [`Tokenizer::chat_template`], ready for
    /// [`Tokenizer::encode`] with `parse_special` on. A leading BOS text is
    /// removed when encoding adds BOS itself, so the prompt does not get two.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.apply_chat_template_with_tools(messages, None::<&()>, add_generation_prompt)
    }

    /// [`Tokenizer::apply_chat_template`] with the template's `tools` variable set.
    pub fn apply_chat_template_with_tools<T: Serialize>(
        &self,
        messages: &[ChatMessage],
        tools: Option<&T>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self.chat_template()?;
        let out = template.render_with_tools(messages, tools, add_generation_prompt)?;
        let bos = template.bos_token();
        if self.add_bos() && !bos.is_empty() && out.starts_with(bos) {
            return Ok(out[bos.len()..].to_owned());
        }
        Ok(out)
    }
}

/// Today's date and time (UTC) in a `strftime` format, for templates that
/// print the date (`%d %b %Y` and friends).
fn strftime_now(fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let next = chars.next();
        let _ = match next {
            Some('d') => write!(out, "{day:02}"),
            Some('m') => write!(out, "{month:02}"),
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year % 100),
            Some('b') => write!(out, "{}", &month_name[..3]),
            Some('B') => write!(out, "{month_name}"),
            Some('H') => write!(out, "{:02}", rem / 3600),
            Some('M') => write!(out, "{:02}", rem / 60 % 60),
            Some('S') => write!(out, "{:02}", rem % 60),
            Some('%') | None => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn templates_see_the_tools_only_when_given() {
        let t = ChatTemplate::new(
            "{% if tools %}[{% for t in tools %}{{ t.function.name }};{% endfor %}]{% endif %}\
             {% for m in messages %}{{ m.role }}={{ m.content }}|{% endfor %}",
        );
        let messages = [ChatMessage::user("hi")];
        let tools = serde_json::json!([
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "get_time"}}
        ]);
        assert_eq!(
            t.render_with_tools(&messages, Some(&tools), false)
                .expect("renders"),
            "[get_weather;get_time;]user=hi|"
        );
        assert_eq!(t.render(&messages, false).expect("renders"), "user=hi|");
    }
    use super::*;

    #[test]
    fn gemma_builtin_merges_system_into_first_user_turn() {
        let t = ChatTemplate::builtin("gemma").expect("built in");
        let out = t
            .render(
                &[
                    ChatMessage::system(" Be brief. "),
                    ChatMessage::user("Hi"),
                    ChatMessage::assistant("Hello!"),
                    ChatMessage::user("2+2?"),
                ],
                true,
            )
            .expect("renders");
        assert_eq!(
            out,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role not in ['user'] %}{{ raise_exception('bad role') }}{% endif %}{{ m.content.strip().upper() }}{% endfor %}",
        );
        assert_eq!(
            t.render(&[ChatMessage::user("  hi  ")], false)
                .expect("renders"),
            "HI"
        );
        let err = t
            .render(&[ChatMessage::system("x")], false)
            .expect_err("raises");
        assert!(err.to_string().contains("bad role"), "{err}");
    }

    #[test]
    fn strftime_formats_a_plausible_date() {
        let s = strftime_now("%Y-%m-%d %b");
        let year: i64 = s[..4].parse().expect("year");
        assert!(year >= 2024, "{s}");
        assert_eq!(s.len(), "2024-01-01 Jan".len());
    }
}
