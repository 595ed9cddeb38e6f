//! `ferrolm serve` on the real SmolLM2 model, over HTTP on a loopback port: every endpoint,
//! streaming, stop sequences, concurrent clients, bad input, disconnects, overload and
//! graceful shutdown.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::future::join_all;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_ID: &str = "SmolLM2-135M-Instruct.Q4_1";
const QUESTION: &str = "What is the largest planet in the solar system?";
/// SmolLM2's chat template with its default system message, as `ferrolm chat` sends it.
const TEMPLATED: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the largest planet in the solar system?<|im_end|>\n<|im_start|>assistant\n";

fn model_path() -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir().unwrap().join("ferrolm").join("models"),
    };
    let path = dir.join(MODEL_FILE);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

/// A `ferrolm serve` process on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    base: String,
    client: Client,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Self::start_model(&model_path(), extra)
    }

    fn start_model(model: &std::path::Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
            .args([
                "serve",
                "-m",
                model.to_str().unwrap(),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args(["--threads", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
            .to_owned();
        Server {
            child,
            base,
            client: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_ok(&self, path: &str, body: &Value) -> Value {
        let response = self.post(path, body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path} {body}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn health(&self) -> Value {
        self.client
            .get(self.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads server-sent events from a streamed response.
struct Events {
    response: Response,
    buffer: String,
}

impl Events {
    fn new(response: Response) -> Events {
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The data of the next event, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(data.join("\n"));
            }
            let chunk = self.response.chunk().await.unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Every remaining chunk, parsed; the stream must end with `[DONE]`.
    async fn rest(&mut self) -> Vec<Value> {
        let mut chunks = Vec::new();
        while let Some(data) = self.next().await {
            if data == "[DONE]" {
                assert_eq!(self.next().await, None, "nothing may follow [DONE]");
                return chunks;
            }
            chunks.push(serde_json::from_str(&data).unwrap());
        }
        panic!("the stream ended without [DONE] after {chunks:?}");
    }
}

fn chat_body(max_tokens: u32) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

fn completion_body(prompt: &str, max_tokens: u32) -> Value {
    json!({"model": MODEL_ID, "prompt": prompt, "temperature": 0, "max_tokens": max_tokens})
}

fn text_of(completion: &Value) -> String {
    completion["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn chat_at_temperature_zero_equals_ferrolm_run_on_the_templated_prompt() {
    let server = Server::start(&[]);
    let reply = server.post_ok("/v1/chat/completions", &chat_body(12)).await;

    let out = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
        .args([
            "run",
            "-m",
            model_path().to_str().unwrap(),
            "-p",
            TEMPLATED,
            "--parse-special",
        ])
        .args(["--temp", "0", "-n", "12", "--json", "--threads", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();

    let choice = &reply["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], run["text"]);
    assert!(run["text"].as_str().unwrap().len() > 10);
    assert_eq!(choice["finish_reason"], "length");
    let usage = &reply["usage"];
    assert_eq!(
        usage["prompt_tokens"],
        run["prompt_ids"].as_array().unwrap().len()
    );
    assert_eq!(usage["completion_tokens"], 12);
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + 12
    );
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], MODEL_ID);
    assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-"));

    let models: Value = server
        .client
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL_ID);
    assert_eq!(models["data"][0]["object"], "model");
    let health = server.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["active"], 0);
}

#[tokio::test]
async fn completions_of_text_and_of_its_token_ids_agree_and_report_logprobs() {
    let server = Server::start(&[]);
    let text = server
        .post_ok(
            "/v1/completions",
            &completion_body("The capital of France is", 4),
        )
        .await;
    // The same prompt as token ids (llama.cpp's tokenization of it).
    let mut ids = completion_body("", 4);
    ids["prompt"] = json!([504, 3575, 282, 4649, 314]);
    ids["logprobs"] = json!(2);
    let ids = server.post_ok("/v1/completions", &ids).await;

    assert_eq!(text["object"], "text_completion");
    assert!(text_of(&text).starts_with(" Paris"), "{}", text_of(&text));
    assert_eq!(text_of(&ids), text_of(&text));
    assert_eq!(text["usage"]["prompt_tokens"], 5);
    assert_eq!(text["choices"][0]["logprobs"], Value::Null);

    let lp = &ids["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 4);
    assert_eq!(tokens[0], " Paris");
    assert_eq!(tokens.concat(), text_of(&ids));
    for (i, token) in tokens.iter().enumerate() {
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert_eq!(top.len(), 2);
        // Greedy picks the most likely token, so it is the best alternative.
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            chosen <= 0.0 && (chosen - best).abs() < 1e-5,
            "{token}: {chosen} vs {best}"
        );
        assert!((top[*token].as_f64().unwrap() - chosen).abs() < 1e-5);
    }
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert_eq!(offsets[1], tokens[0].chars().count() as u64);
}

#[tokio::test]
async fn streamed_chat_chunks_add_up_to_the_whole_reply_with_metrics() {
    let server = Server::start(&[]);
    let whole = server.post_ok("/v1/chat/completions", &chat_body(10)).await;
    let mut body = chat_body(10);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["x_metrics"] = json!(true);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let chunks = Events::new(server.post("/v1/chat/completions", &body).await)
        .rest()
        .await;

    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut content = String::new();
    let mut metrics = Vec::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(m) = choice.get("x_metrics") {
            metrics.extend(m.as_array().unwrap().iter().cloned());
            let lp = &choice["logprobs"]["content"][0];
            assert_eq!(lp["top_logprobs"].as_array().unwrap().len(), 3);
            assert_eq!(lp["top_logprobs"][0]["token"], lp["token"]);
            // Two computations of one number: the analysis crate's surprisal and -logprob.
            let surprisal = m[0]["surprisal"].as_f64().unwrap();
            assert!(
                (surprisal + lp["logprob"].as_f64().unwrap()).abs() < 1e-3,
                "{m} {lp}"
            );
        }
    }
    assert_eq!(
        content,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(metrics.len(), 10);
    for m in &metrics {
        let (h, s) = (
            m["entropy"].as_f64().unwrap(),
            m["surprisal"].as_f64().unwrap(),
        );
        // A greedy token's surprisal is the min-entropy, which never exceeds the entropy.
        assert!(h.is_finite() && s >= 0.0 && s <= h + 1e-4, "{m}");
        assert_eq!(m["rank"], 0, "greedy picks the most likely token: {m}");
        assert!(m["varentropy"].as_f64().unwrap() >= 0.0, "{m}");
    }
    assert!(
        metrics
            .iter()
            .any(|m| m["entropy"].as_f64().unwrap() > 0.01)
    );
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 10);
    assert_eq!(chunks[n - 1]["usage"], whole["usage"]);
}

#[tokio::test]
async fn stop_sequences_end_the_reply_before_them_streamed_or_not() {
    let server = Server::start(&[]);
    let prompt = "Once upon a time";
    let full = text_of(
        &server
            .post_ok("/v1/completions", &completion_body(prompt, 12))
            .await,
    );
    let words: Vec<&str> = full.split(' ').filter(|w| w.len() >= 3).collect();
    let stop = words[2].to_owned();
    let expected = &full[..full.find(&stop).unwrap()];

    let mut body = completion_body(prompt, 12);
    body["stop"] = json!(["\u{1F600}never", stop]);
    let stopped = server.post_ok("/v1/completions", &body).await;
    assert_eq!(text_of(&stopped), expected);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    body["stream"] = json!(true);
    let chunks = Events::new(server.post("/v1/completions", &body).await)
        .rest()
        .await;
    let streamed: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, expected);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
}

#[tokio::test]
async fn concurrent_clients_get_the_replies_they_get_alone() {
    // Three slots for five clients: two wait in the queue and join between steps, and
    // prompts are prefilled in chunks beside the other sequences' decode tokens. A batch's
    // row count picks the CPU kernels (8-bit activations differ from one kernel to another
    // by rounding), so the server runs at --precision q16, within about 1e-4 of exact, where
    // no near tie of these prompts flips with what shares the batch.
    let server = Server::start(&["--parallel", "3", "--batch-size", "3", "--precision", "q16"]);
    let prompts = [
        "The capital of France is",
        "Once upon a time",
        "def fibonacci(n):",
        "The three primary colours are red,",
        "In 1969, the first person to walk on the Moon was",
    ];
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(text_of(
            &server
                .post_ok("/v1/completions", &completion_body(p, 8))
                .await,
        ));
    }
    let together = join_all(prompts.iter().map(|p| {
        let body = completion_body(p, 8);
        let server = &server;
        async move { text_of(&server.post_ok("/v1/completions", &body).await) }
    }))
    .await;
    assert_eq!(together, alone);
    assert!(alone.iter().all(|t| !t.is_empty()));
    let health = server.health().await;
    assert_eq!(health["finished"], 10);
    assert_eq!(health["active"], 0);
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_the_server_stays_healthy() {
    let server = Server::start(&["-c", "64"]);
    let chat = "/v1/chat/completions";
    let user = json!([{"role": "user", "content": "hi"}]);
    let long_prompt = "word ".repeat(100);
    let cases: Vec<(&str, &str, String, u16, Option<&str>)> = vec![
        ("POST", chat, "{\"model\":".into(), 400, None),
        ("POST", chat, String::new(), 400, None),
        ("POST", chat, "[1,2,3]".into(), 400, None),
        (
            "POST",
            chat,
            json!({"messages": user}).to_string(),
            400,
            Some("model"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": "hi"}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "temperature": "hot"}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "max_tokens": -3}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "max_tokens": 1_000_000_000_000_u64})
                .to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "max_completion_tokens": 2.5}).to_string(),
            400,
            Some("max_completion_tokens"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": [{"role": "wizard", "content": "hi"}]})
                .to_string(),
            400,
            Some("messages[0].role"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": [{"role": "user", "content": long_prompt}]})
                .to_string(),
            400,
            Some("messages"),
        ),
        (
            "POST",
            chat,
            json!({"model": "gpt-4o", "messages": user}).to_string(),
            404,
            Some("model"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "n": 3}).to_string(),
            400,
            Some("n"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "top_logprobs": 2}).to_string(),
            400,
            Some("top_logprobs"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "stream": "yes"}).to_string(),
            400,
            Some("stream"),
        ),
        (
            "POST",
            chat,
            json!({"model": MODEL_ID, "messages": user, "logit_bias": {"99999999": 5}}).to_string(),
            400,
            Some("logit_bias"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": MODEL_ID, "prompt": long_prompt}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": MODEL_ID, "prompt": [4, 49_999_999]}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": MODEL_ID, "prompt": ""}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": MODEL_ID, "prompt": 12}).to_string(),
            400,
            Some("prompt"),
        ),
        ("GET", chat, String::new(), 405, None),
        ("POST", "/v1/embeddings", "{}".into(), 400, Some("model")),
        (
            "GET",
            "/v1/models/gpt-4o",
            String::new(),
            404,
            Some("model"),
        ),
    ];
    for (method, path, body, status, param) in cases {
        let request = match method {
            "GET" => server.client.get(server.url(path)),
            _ => server
                .client
                .post(server.url(path))
                .header("content-type", "application/json")
                .body(body.clone()),
        };
        let response = request.send().await.unwrap();
        let shown = &body[..body.len().min(120)];
        assert_eq!(
            response.status().as_u16(),
            status,
            "{method} {path} {shown}"
        );
        let error: Value = response.json().await.unwrap();
        let e = &error["error"];
        assert!(!e["message"].as_str().unwrap().is_empty(), "{error}");
        assert!(
            e["type"].is_string() && e.get("code").is_some() && e.get("param").is_some(),
            "{error}"
        );
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{method} {path} {shown}: {error}");
        }
    }
    let long = server
        .post(
            "/v1/completions",
            &json!({"model": MODEL_ID, "prompt": long_prompt}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(long["error"]["code"], "context_length_exceeded");
    assert!(
        long["error"]["message"].as_str().unwrap().contains("64"),
        "{long}"
    );

    assert_eq!(server.health().await["status"], "ok");
    let reply = server.post_ok(chat, &chat_body(2)).await;
    assert_eq!(reply["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn typical_p_and_entropy_guidance_reach_the_sampler_and_bad_values_get_400() {
    let server = Server::start(&[]);
    let sampled = |extra: Value| {
        let mut body = completion_body("Once upon a time", 12);
        body["temperature"] = json!(1.0);
        body["seed"] = json!(42);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let completions = "/v1/completions";
    let plain = text_of(&server.post_ok(completions, &sampled(json!({}))).await);
    assert_eq!(
        text_of(&server.post_ok(completions, &sampled(json!({}))).await),
        plain,
        "a seed replays"
    );
    let typical_one = sampled(json!({"typical_p": 1.0}));
    assert_eq!(
        text_of(&server.post_ok(completions, &typical_one).await),
        plain
    );
    let typical = sampled(json!({"typical_p": 0.2}));
    assert_ne!(text_of(&server.post_ok(completions, &typical).await), plain);
    let guided = sampled(json!({"x_entropy_guided": {"weight": 0.4, "order": 2, "window": 64}}));
    let guided_text = text_of(&server.post_ok(completions, &guided).await);
    assert_ne!(guided_text, plain);
    assert_eq!(
        text_of(&server.post_ok(completions, &guided).await),
        guided_text
    );
    let off = sampled(json!({"x_entropy_guided": {"weight": 0}}));
    assert_eq!(text_of(&server.post_ok(completions, &off).await), plain);

    let bad = [
        (json!({"typical_p": 1.5}), "typical_p"),
        (json!({"x_entropy_guided": true}), "x_entropy_guided"),
        (
            json!({"x_entropy_guided": {"weight": 2}}),
            "x_entropy_guided.weight",
        ),
        (
            json!({"x_entropy_guided": {"order": 3, "window": 2}}),
            "x_entropy_guided.window",
        ),
        (
            json!({"x_entropy_guided": {"temperature": 1}}),
            "x_entropy_guided.temperature",
        ),
        (
            json!({"x_entropy_guided": {}, "temperature": 0}),
            "x_entropy_guided",
        ),
    ];
    for (extra, param) in bad {
        let body = sampled(extra);
        let response = server.post(completions, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(param),
            "{error}"
        );
    }
    // Chat takes the same fields.
    let mut chat = chat_body(4);
    chat["temperature"] = json!(0.8);
    chat["typical_p"] = json!(0.9);
    chat["x_entropy_guided"] = json!({"weight": 0.1});
    let reply = server.post_ok("/v1/chat/completions", &chat).await;
    assert_eq!(reply["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_its_sequence() {
    let server = Server::start(&["--parallel", "1"]);
    let mut body = completion_body("Once upon a time", 400);
    body["stream"] = json!(true);
    let mut events = Events::new(server.post("/v1/completions", &body).await);
    for _ in 0..2 {
        events.next().await.unwrap();
    }
    drop(events);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = server.health().await;
        if h["active"] == 0 && h["finished"] == 1 {
            // Cancelled long before its 400 tokens.
            assert!(h["generated_tokens"].as_u64().unwrap() < 100, "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "the sequence was not freed: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The only slot is free again.
    let reply = server
        .post_ok(
            "/v1/completions",
            &completion_body("The capital of France is", 2),
        )
        .await;
    assert_eq!(reply["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn requests_beyond_the_slots_and_the_queue_get_a_503() {
    let server = Server::start(&["--parallel", "1", "--queue", "1"]);
    let mut body = completion_body("Once upon a time", 300);
    body["stream"] = json!(true);
    let mut running = Events::new(server.post("/v1/completions", &body).await);
    running.next().await.unwrap();
    let mut queued = Events::new(server.post("/v1/completions", &body).await);
    assert_eq!(server.health().await["queued"], 1);

    let refused = server.post("/v1/completions", &body).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "server_overloaded");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("capacity")
    );

    // When the running client leaves, the queued one gets its slot.
    drop(running);
    let first: Value = serde_json::from_str(&queued.next().await.unwrap()).unwrap();
    assert_eq!(first["object"], "text_completion");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_lets_the_streams_in_progress_finish() {
    let mut server = Server::start(&[]);
    let mut body = chat_body(12);
    body["stream"] = json!(true);
    let mut events = Events::new(server.post("/v1/chat/completions", &body).await);
    events.next().await.unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let chunks = events.rest().await;
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        server
            .client
            .get(server.url("/health"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn response_format_and_grammar_hold_replies_to_json_and_grammars() {
    let server = Server::start(&[]);
    let schema = json!({
        "type": "object",
        "properties": {
            "planet": {"enum": ["Jupiter", "Saturn", "Earth"]},
            "moons": {"type": "integer", "minimum": 0, "maximum": 200},
            "rings": {"type": "boolean"}
        },
        "required": ["planet", "moons", "rings"],
        "additionalProperties": false
    });
    for temperature in [0.0, 0.8] {
        let body = json!({
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": temperature,
            "seed": 4,
            "max_tokens": 200,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "planet", "strict": true, "schema": schema}
            }
        });
        let reply = server.post_ok("/v1/chat/completions", &body).await;
        let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
        let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(
            ["Jupiter", "Saturn", "Earth"].contains(&v["planet"].as_str().unwrap()),
            "{v}"
        );
        assert!(
            v["moons"].as_i64().is_some_and(|m| (0..=200).contains(&m)),
            "{v}"
        );
        assert!(v["rings"].is_boolean(), "{v}");
        assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
    }
    let body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": 300,
        "response_format": {"type": "json_object"}
    });
    let reply = server.post_ok("/v1/chat/completions", &body).await;
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(v.is_object(), "{v}");
    let body = json!({
        "model": MODEL_ID,
        "prompt": "The largest planet is",
        "temperature": 0,
        "max_tokens": 20,
        "grammar": "start: \" \" (\"Jupiter\" | \"Saturn\") \".\""
    });
    let reply = server.post_ok("/v1/completions", &body).await;
    let text = reply["choices"][0]["text"].as_str().unwrap();
    assert!(text == " Jupiter." || text == " Saturn.", "{text:?}");

    // Bad constraints are 400s that name the field and the problem.
    for (format, param, needle) in [
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "strnig"}}}}),
            "response_format",
            "strnig",
        ),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format.type",
            "yaml",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "response_format.json_schema.schema",
            "required",
        ),
        (json!({"grammar": "start: nowhere"}), "grammar", "nowhere"),
        (
            json!({"grammar": "start: \"a\"", "response_format": {"type": "json_object"}}),
            "grammar",
            "not both",
        ),
    ] {
        let mut body = json!({"model": MODEL_ID, "prompt": "x", "max_tokens": 3});
        for (k, v) in format.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = server.post("/v1/completions", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = response.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
}

#[tokio::test]
async fn embeddings_are_unit_vectors_equal_to_ferrolm_embed_in_both_encodings() {
    let server = Server::start(&[]);
    let texts = ["The cat sat on the mat.", "Jupiter is a gas giant."];
    let body = json!({"model": MODEL_ID, "input": texts});
    let reply = server.post_ok("/v1/embeddings", &body).await;
    assert_eq!(reply["object"], "list");
    let data = reply["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    for (i, (v, text)) in vectors.iter().zip(texts).enumerate() {
        assert_eq!(data[i]["index"], i);
        assert_eq!(v.len(), 576);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        // The same vector as the command line computes.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrolm"))
            .args([
                "embed",
                "-m",
                model_path().to_str().unwrap(),
                "--json",
                text,
            ])
            .output()
            .unwrap();
        let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
        let cli: Vec<f32> = cli["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let diff = v
            .iter()
            .zip(&cli)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "server and ferrolm embed differ by {diff}");
    }
    let cos: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
    assert!(cos < 0.999, "different texts give different vectors: {cos}");
    let usage = &reply["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 6, "{usage}");

    // base64, as OpenAI's clients ask for: the same floats, little-endian.
    let body = json!({"model": MODEL_ID, "input": texts[0], "encoding_format": "base64"});
    let reply = server.post_ok("/v1/embeddings", &body).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(reply["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, vectors[0]);

    for (body, param) in [
        (json!({"model": MODEL_ID, "input": []}), "input"),
        (json!({"model": MODEL_ID, "input": ""}), "input"),
        (json!({"model": MODEL_ID, "input": [1, 99999999]}), "input"),
        (
            json!({"model": MODEL_ID, "input": "x", "dimensions": 12}),
            "dimensions",
        ),
        (
            json!({"model": MODEL_ID, "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (json!({"model": MODEL_ID}), "input"),
    ] {
        let response = server.post("/v1/embeddings", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = response.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
    }
}

/// A chat template that lists the tools itself and asks for calls in `<tool_call>` tags (the
/// Hermes / Qwen convention).
const TOOL_TEMPLATE: &str = "{%- if tools %}<|im_start|>system\nYou may call these functions:\n\
{% for t in tools %}{{ t.function.name }}: {{ t.function.description }}\n{% endfor %}\
Call one as <tool_call>\n{\"name\": NAME, \"arguments\": ARGUMENTS}\n</tool_call><|im_end|>\n{% endif %}\
{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[tokio::test]
async fn a_template_with_its_own_tool_format_gets_calls_in_that_format() {
    // SmolLM2 with the template above in place of its own.
    let file = ferrolm_gguf::GgufFile::open(model_path()).unwrap();
    let gguf = file.gguf().unwrap();
    let mut w = ferrolm_gguf::GgufWriter::from_gguf(&gguf).unwrap();
    w.add_metadata("tokenizer.chat_template", TOOL_TEMPLATE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smollm2-tools.gguf");
    w.write_file(&path).unwrap();
    let server = Server::start_model(&path, &[]);
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"], "additionalProperties": false}}}]);
    let question = json!({"role": "user", "content": "What is the weather in Paris?"});
    let body = json!({
        "model": "smollm2-tools", "messages": [question], "tools": tools,
        "tool_choice": "required", "temperature": 0, "max_tokens": 60, "logprobs": true
    });
    let reply = server.post_ok("/v1/chat/completions", &body).await;
    let choice = &reply["choices"][0];
    // The model wrote the call in the template's format.
    let written: String = choice["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert!(
        written.starts_with("<tool_call>\n{\"name\"") && written.ends_with("}\n</tool_call>"),
        "{written:?}"
    );
    assert_eq!(choice["finish_reason"], "tool_calls", "{reply}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    // The call and its result go back as the template expects them; then an answer in text.
    let body = json!({
        "model": "smollm2-tools", "tools": tools, "tool_choice": "none",
        "messages": [question, choice["message"],
                     {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 degrees"}],
        "temperature": 0, "max_tokens": 30
    });
    let reply = server.post_ok("/v1/chat/completions", &body).await;
    assert!(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{reply}"
    );
    // Streamed, the call comes as one tool_calls delta at the end, the same call.
    let mut body = json!({
        "model": "smollm2-tools", "messages": [question], "tools": tools,
        "tool_choice": "required", "temperature": 0, "max_tokens": 60, "stream": true
    });
    let chunks = Events::new(server.post("/v1/chat/completions", &body).await)
        .rest()
        .await;
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 1, "{chunks:?}");
    assert_eq!(calls[0][0]["function"], call["function"], "{chunks:?}");
    assert!(chunks.iter().all(|c| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    }));
    let last = chunks
        .iter()
        .rev()
        .find(|c| !c["choices"][0]["finish_reason"].is_null());
    assert_eq!(last.unwrap()["choices"][0]["finish_reason"], "tool_calls");
    body["stream"] = json!(false);
    body["response_format"] = json!({"type": "json_object"});
    let response = server.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_shared_prompt_prefix_is_reused_from_the_cache_with_identical_output() {
    let system = (0..40)
        .map(|i| format!("Rule {i}: answer briefly and politely."))
        .collect::<Vec<_>>()
        .join(" ");
    let ask = |question: &str| {
        json!({
            "model": MODEL_ID,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 12
        })
    };
    let cached = Server::start(&["--parallel", "1"]);
    cached
        .post_ok(
            "/v1/chat/completions",
            &ask("What is the capital of France?"),
        )
        .await;
    let first = cached.health().await["prefix_cache"].clone();
    assert_eq!(first["hits"], 0, "{first}");
    let second = cached
        .post_ok("/v1/chat/completions", &ask("Name a large planet."))
        .await;
    let after = cached.health().await["prefix_cache"].clone();
    assert_eq!(after["hits"], 1, "{after}");
    let reused = after["reused_tokens"].as_u64().unwrap();
    let prompt_tokens = second["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        reused > 350 && reused < prompt_tokens,
        "reused {reused} of {prompt_tokens} prompt tokens"
    );
    // The same request on a server that computes the whole prompt gives the same reply.
    let fresh = Server::start(&["--parallel", "1"]);
    let uncached = fresh
        .post_ok("/v1/chat/completions", &ask("Name a large planet."))
        .await;
    assert_eq!(
        second["choices"][0]["message"]["content"],
        uncached["choices"][0]["message"]["content"]
    );
    assert_eq!(fresh.health().await["prefix_cache"]["hits"], 0);
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_latencies_in_prometheus_format() {
    let server = Server::start(&[]);
    let mut prompt_tokens = 0;
    let mut completion_tokens = 0;
    for question in ["Hi!", "What is two plus two?"] {
        let body = json!({
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 6
        });
        let reply = server.post_ok("/v1/chat/completions", &body).await;
        prompt_tokens += reply["usage"]["prompt_tokens"].as_u64().unwrap();
        completion_tokens += reply["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("ferrolm_requests_total"), 2.0);
    assert_eq!(value("ferrolm_prompt_tokens_total"), prompt_tokens as f64);
    assert_eq!(
        value("ferrolm_generation_tokens_total"),
        completion_tokens as f64
    );
    assert_eq!(value("ferrolm_queue_length"), 0.0);
    // The finished requests' caches are kept: their blocks are in use, none shared.
    assert!(value("ferrolm_kv_blocks_used") >= 1.0);
    assert!(value("ferrolm_kv_blocks_free") >= 1.0);
    assert_eq!(value("ferrolm_kv_blocks_shared"), 0.0);
    assert_eq!(value("ferrolm_time_to_first_token_seconds_count"), 2.0);
    assert_eq!(
        value("ferrolm_time_to_first_token_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    let ttft_sum = value("ferrolm_time_to_first_token_seconds_sum");
    assert!(ttft_sum > 0.0 && ttft_sum < 60.0, "{ttft_sum}");
    // Buckets never decrease.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("ferrolm_time_to_first_token_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 15);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert!(text.contains("# TYPE ferrolm_time_per_output_token_seconds histogram"));
}
