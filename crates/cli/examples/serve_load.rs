//! Load on a running `ferrolm serve`: aggregate generated tokens per second with 1, 8, 32
//! (or any) concurrent streaming clients, counting every failed or incomplete request.
//!
//! ```text
//! ferrolm serve -m smollm2-135m --parallel 32 -c 512 &
//! cargo run --release -p ferrolm --example serve_load -- --url http://127.0.0.1:8080 --streams 1,8,32
//! ```
//!
//! Each client sends streamed completions one after another until the level's time is up;
//! requests in flight then finish. Only loopback addresses are accepted.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use futures_util::future::join_all;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// The server (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients at each level.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    streams: Vec<usize>,
    /// Tokens per request.
    #[arg(long, default_value_t = 32)]
    tokens: u32,
    /// Seconds per level.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: usize,
    failed: usize,
    tokens: u64,
    first_token: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let host = args
        .url
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap_or("");
    ensure!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "{} is not a loopback address",
        args.url
    );
    let client = reqwest::Client::new();
    let models: Value = client
        .get(format!("{}/v1/models", args.url))
        .send()
        .await?
        .json()
        .await?;
    let model = models["data"][0]["id"]
        .as_str()
        .context("no model served")?
        .to_owned();
    println!(
        "| streams | requests ok | failed | tokens | seconds | tokens/s | mean first token (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.streams {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(args.seconds);
        let clients = (0..n).map(|c| client_loop(&client, &args, &model, c, deadline));
        let tallies = join_all(clients).await;
        let elapsed = start.elapsed().as_secs_f64();
        let total = tallies.iter().fold(Tally::default(), |a, t| Tally {
            ok: a.ok + t.ok,
            failed: a.failed + t.failed,
            tokens: a.tokens + t.tokens,
            first_token: a.first_token + t.first_token,
        });
        println!(
            "| {n} | {} | {} | {} | {elapsed:.1} | {:.1} | {:.0} |",
            total.ok,
            total.failed,
            total.tokens,
            total.tokens as f64 / elapsed,
            total.first_token.as_secs_f64() * 1e3 / total.ok.max(1) as f64
        );
    }
    Ok(())
}

async fn client_loop(
    client: &reqwest::Client,
    args: &Args,
    model: &str,
    c: usize,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut i = 0;
    while Instant::now() < deadline {
        let body = json!({
            "model": model,
            "prompt": format!("Story {c}.{i}: Once upon a time"),
            "max_tokens": args.tokens,
            "temperature": 0.8,
            "seed": (c * 1000 + i) as u64,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        match one_request(client, &args.url, &body).await {
            Ok((tokens, first)) => {
                tally.ok += 1;
                tally.tokens += tokens;
                tally.first_token += first;
            }
            Err(e) => {
                eprintln!("client {c} request {i}: {e:#}");
                tally.failed += 1;
            }
        }
        i += 1;
    }
    tally
}

/// Streams one completion; returns its generated tokens and the time to its first text.
async fn one_request(client: &reqwest::Client, url: &str, body: &Value) -> Result<(u64, Duration)> {
    let sent = Instant::now();
    let mut response = client
        .post(format!("{url}/v1/completions"))
        .json(body)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "status {}: {}",
        response.status(),
        response.text().await?
    );
    let mut buffer = String::new();
    let mut first = None;
    let mut usage = None;
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                let tokens = usage.context("no usage before [DONE]")?;
                return Ok((tokens, first.unwrap_or_default()));
            }
            let v: Value = serde_json::from_str(data)?;
            if v.get("error").is_some() {
                bail!("error event: {v}");
            }
            if first.is_none()
                && v["choices"][0]["text"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            {
                first = Some(sent.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                usage = Some(n);
            }
        }
    }
    bail!("the stream ended without [DONE]")
}
