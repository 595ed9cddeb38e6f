//! `ferrolm serve` through OpenAI's official Python client, as a user would call it: chat,
//! structured output with a JSON schema, JSON mode, tool calls, and embeddings (which the client asks
//! for in base64). `cargo xtask test` installs the client into `target/openai-client`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where `cargo xtask test` put the client.
fn client_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/openai-client");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or(dir, |t| PathBuf::from(t).join("openai-client"));
    assert!(
        dir.join("openai").is_dir(),
        "OpenAI's Python client is not in {}: run `cargo xtask test`, which installs it",
        dir.display()
    );
    dir
}

const SCRIPT: &str = r#"
import json, math, os, sys
from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE"] + "/v1", api_key="unused")
model = client.models.list().data[0].id

reply = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    temperature=0, max_tokens=16)
assert reply.choices[0].message.content, reply

schema = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "population_millions": {"type": "number", "minimum": 0, "maximum": 50},
        "landmarks": {"type": "array", "items": {"enum": ["Eiffel Tower", "Louvre", "Notre-Dame"]}, "maxItems": 3},
    },
    "required": ["city", "population_millions", "landmarks"],
    "additionalProperties": False,
}
for temperature in (0, 0.8):
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        temperature=temperature, seed=3, max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": schema}})
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"city", "population_millions", "landmarks"}, data
    assert isinstance(data["city"], str) and len(data["city"]) <= 30, data
    assert 0 <= data["population_millions"] <= 50, data
    assert all(l in ("Eiffel Tower", "Louvre", "Notre-Dame") for l in data["landmarks"]), data
    assert reply.choices[0].finish_reason == "stop", reply

reply = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Describe a cat as a JSON object with a name and an age."}],
    temperature=0, max_tokens=400, response_format={"type": "json_object"})
assert reply.choices[0].finish_reason == "stop", reply
assert isinstance(json.loads(reply.choices[0].message.content), dict), reply

try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}], max_tokens=4,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strnig"}}})
    sys.exit("a bad schema was accepted")
except Exception as e:
    assert getattr(e, "status_code", None) == 400 and "strnig" in str(e), e

tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                   "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"],
                   "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now.",
     "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}]
question = [{"role": "user", "content": "What is the weather in Paris?"}]
for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
    reply = client.chat.completions.create(model=model, messages=question, tools=tools,
                                           tool_choice=choice, temperature=0, max_tokens=100)
    assert reply.choices[0].finish_reason == "tool_calls", reply
    call = reply.choices[0].message.tool_calls[0]
    assert call.type == "function" and call.function.name in ("get_weather", "get_time"), call
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit"), args
    else:
        assert args == {}, args
assert call.function.name == "get_weather", call
# Streamed: the deltas add up to the same call.
stream = client.chat.completions.create(model=model, messages=question, tools=tools,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                        temperature=0, max_tokens=100, stream=True)
name, arguments, finish = "", "", None
for chunk in stream:
    choice = chunk.choices[0]
    for d in choice.delta.tool_calls or []:
        name += d.function.name or ""
        arguments += d.function.arguments or ""
    finish = choice.finish_reason or finish
assert name == call.function.name and json.loads(arguments) == args, (name, arguments)
assert finish == "tool_calls", finish
# The result goes back; with tool_choice none the answer is text.
history = question + [reply.choices[0].message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees"}]
reply = client.chat.completions.create(model=model, messages=history, tools=tools,
                                       tool_choice="none", temperature=0, max_tokens=40)
assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls, reply
# auto: either a valid call or text.
reply = client.chat.completions.create(model=model, messages=question, tools=tools,
                                       tool_choice="auto", temperature=0.8, seed=2, max_tokens=60)
message = reply.choices[0].message
if message.tool_calls:
    assert reply.choices[0].finish_reason == "tool_calls", reply
    json.loads(message.tool_calls[0].function.arguments)
else:
    assert message.content and not message.content.lstrip().startswith("{"), reply

emb = client.embeddings.create(model=model, input=["The cat sat.", "A dog ran."])
assert len(emb.data) == 2, emb
for d in emb.data:
    assert len(d.embedding) == 576, len(d.embedding)
    norm = math.sqrt(sum(x * x for x in d.embedding))
    assert abs(norm - 1) < 1e-4, norm
assert emb.usage.prompt_tokens > 4, emb.usage
print("ok")
"#;

#[test]
fn the_openai_python_client_gets_chat_structured_output_tool_calls_and_embeddings() {
    let client = client_dir();
    let mut server = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args([
            "serve",
            "-m",
            &common::smollm2(),
            "--port",
            "0",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .env("PYTHONPATH", &client)
        .env("BASE", &base)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
