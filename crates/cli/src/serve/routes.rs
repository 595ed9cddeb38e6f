//! The HTTP endpoints: `/health`, `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferrolm_engine::{EngineError, EngineHandle, Event, Events, Failure, GenerateJob};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};

use super::error::ApiError;
use super::model::ServedModel;
use super::prompt::prompt_ids;
use super::request::{self, Endpoint};
use super::response::{Meta, Reply};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 4 << 20;

/// State shared by the handlers.
#[derive(Debug, Clone)]
pub struct App {
    pub(super) engine: EngineHandle,
    pub(super) model: Arc<ServedModel>,
    next_id: Arc<AtomicU64>,
}

impl App {
    /// Handlers over `engine`, which runs `model`.
    pub fn new(engine: EngineHandle, model: ServedModel) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            engine,
            model: Arc::new(model),
            next_id: Arc::new(AtomicU64::new(seed & 0xffff_ffff_ffff)),
        }
    }

    /// Whether `name` names the served model: its id, or its file's name with or without
    /// `.gguf`.
    pub(super) fn serves(&self, name: &str) -> bool {
        self.model.is_named(&self.engine.info().path, name)
    }
}

/// The answer to a job the engine refused: a 503 when its queue is full or it is stopping,
/// else a 400 saying why.
fn refused(e: EngineError, engine: &EngineHandle) -> ApiError {
    match e {
        EngineError::QueueFull { queued } => ApiError::unavailable(
            "server_overloaded",
            format!(
                "the server is at capacity ({} sequences running, {queued} requests waiting); retry later",
                engine.slots(),
            ),
        ),
        EngineError::Stopped => {
            ApiError::unavailable("shutting_down", "the server is shutting down")
        }
        e => ApiError::invalid(e.to_string()),
    }
}

/// The server's routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(super::embeddings::embeddings))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn health(State(app): State<App>) -> Response {
    let st = app.engine.stats();
    axum::Json(json!({
        "status": "ok",
        "model": app.model.id,
        "slots": st.slots,
        "active": st.active,
        "queued": st.queued,
        "finished": st.finished,
        "generated_tokens": st.generated_tokens,
        "prefix_cache": {
            "hits": st.prefix_hits,
            "misses": st.prefix_misses,
            "reused_tokens": st.prefix_reused_tokens,
            "shared": st.prefix_shared,
        },
        "kv_blocks": {
            "total": st.kv_blocks_total,
            "used": st.kv_blocks_used,
            "free": st.kv_blocks_total - st.kv_blocks_used,
            "shared": st.kv_blocks_shared,
            "block_tokens": st.kv_block_tokens,
        },
    }))
    .into_response()
}

/// Prometheus' text format: requests, tokens, queue and slots, prefix-cache use, and the
/// latency histograms.
async fn metrics(State(app): State<App>) -> Response {
    use super::metrics::{histogram, scalar};
    let st = app.engine.stats();
    let mut out = String::new();
    scalar(
        &mut out,
        "ferrolm_requests_total",
        "counter",
        "Requests ended (any reason).",
        st.finished,
    );
    scalar(
        &mut out,
        "ferrolm_requests_failed_total",
        "counter",
        "Requests that ended in an error.",
        st.failed,
    );
    scalar(
        &mut out,
        "ferrolm_prompt_tokens_total",
        "counter",
        "Prompt tokens of the requests ended.",
        st.prompt_tokens,
    );
    scalar(
        &mut out,
        "ferrolm_generation_tokens_total",
        "counter",
        "Tokens generated.",
        st.generated_tokens,
    );
    scalar(
        &mut out,
        "ferrolm_queue_length",
        "gauge",
        "Requests waiting for a slot.",
        st.queued as u64,
    );
    scalar(
        &mut out,
        "ferrolm_active_slots",
        "gauge",
        "Slots generating now.",
        st.active as u64,
    );
    scalar(
        &mut out,
        "ferrolm_slots",
        "gauge",
        "Slots (sequences generated at once).",
        st.slots as u64,
    );
    for (name, help, value) in [
        (
            "ferrolm_kv_blocks_used",
            "KV cache blocks holding positions (running requests and kept prefixes).",
            st.kv_blocks_used,
        ),
        (
            "ferrolm_kv_blocks_free",
            "KV cache blocks free for new positions.",
            st.kv_blocks_total - st.kv_blocks_used,
        ),
        (
            "ferrolm_kv_blocks_shared",
            "KV cache blocks that several sequences share.",
            st.kv_blocks_shared,
        ),
    ] {
        scalar(&mut out, name, "gauge", help, value as u64);
    }
    scalar(
        &mut out,
        "ferrolm_prefix_cache_hits_total",
        "counter",
        "Requests that reused a cached prompt prefix.",
        st.prefix_hits,
    );
    scalar(
        &mut out,
        "ferrolm_prefix_cache_misses_total",
        "counter",
        "Requests that found no cached prefix.",
        st.prefix_misses,
    );
    scalar(
        &mut out,
        "ferrolm_prefix_cache_reused_tokens_total",
        "counter",
        "Prompt tokens taken from the cache.",
        st.prefix_reused_tokens,
    );
    scalar(
        &mut out,
        "ferrolm_prefix_cache_shared_total",
        "counter",
        "Hits whose prefix another slot held, shared block by block.",
        st.prefix_shared,
    );
    histogram(
        &mut out,
        "ferrolm_time_to_first_token_seconds",
        "From a request's arrival to its first token.",
        app.engine.time_to_first_token(),
    );
    histogram(
        &mut out,
        "ferrolm_time_per_output_token_seconds",
        "Per token after the first.",
        app.engine.time_per_output_token(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

fn model_object(app: &App) -> Value {
    json!({
        "id": app.model.id,
        "object": "model",
        "created": app.model.created,
        "owned_by": "ferrolm",
        "context_length": app.engine.info().n_ctx,
    })
}

async fn list_models(State(app): State<App>) -> Response {
    axum::Json(json!({"object": "list", "data": [model_object(&app)]})).into_response()
}

async fn get_model(State(app): State<App>, Path(id): Path<String>) -> Response {
    if app.serves(&id) {
        axum::Json(model_object(&app)).into_response()
    } else {
        ApiError::unknown_model(&id, &app.model.id).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::http(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; this server has GET /health, GET /v1/models, POST /v1/chat/completions and POST /v1/completions",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::http(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method: completions are POST, /health and /v1/models are GET",
    )
}

async fn chat(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(&app, body, Endpoint::Chat)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(&app, body, Endpoint::Completion)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn complete(
    app: &App,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let body = body.map_err(|r| ApiError::http(r.status(), "invalid_body", r.body_text()))?;
    let info = app.engine.info();
    let req = request::parse_with(&body, endpoint, info.n_ctx, app.model.tool_format)?;
    if !app.serves(&req.model) {
        return Err(ApiError::unknown_model(&req.model, &app.model.id));
    }
    let prompt = prompt_ids(
        &info.tokenizer,
        &req.prompt,
        req.template_tools.as_ref(),
        info.n_vocab,
        info.n_ctx,
    )?;
    if let Some(&(id, _)) = req
        .sampling
        .logit_bias
        .iter()
        .find(|(id, _)| *id as usize >= info.n_vocab)
    {
        return Err(ApiError::field(
            "logit_bias",
            format!(
                "token id {id} is outside the vocabulary of {} tokens",
                info.n_vocab
            ),
        ));
    }
    let mut sampler = req
        .sampling
        .build()
        .map_err(|e| ApiError::invalid(format!("invalid sampling settings: {e}")))?;
    if let Some((grammar, param)) = &req.grammar {
        let compiler = app
            .model
            .grammar
            .get_or_init(|| {
                ferrolm_grammar::GrammarCompiler::new(Arc::clone(&info.tokenizer))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| ApiError::invalid(e.clone()))?;
        let constraint = compiler
            .compile(grammar)
            .map_err(|e| ApiError::field(param, format!("cannot use this {param}: {e}")))?;
        sampler = sampler.with_head(constraint);
    }
    let room = info.n_ctx - prompt.len();
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let id = match endpoint {
        Endpoint::Chat => format!("chatcmpl-{n:x}"),
        Endpoint::Completion => format!("cmpl-{n:x}"),
    };
    let job = GenerateJob {
        name: id.clone(),
        submitted: arrived,
        max_tokens: req.max_tokens.map_or(room, |n| n.min(room)),
        prompt,
        sampler,
        stop: req.stop,
        logprobs: req.logprobs,
        metrics: req.metrics,
    };
    let rx = app
        .engine
        .try_generate(job)
        .map_err(|e| refused(e, &app.engine))?;
    let meta = Meta {
        id,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: app.model.id.clone(),
        endpoint,
        logprobs: req.logprobs.is_some(),
        metrics: req.metrics,
        include_usage: req.include_usage,
        tool_names: req.tool_names.clone(),
    };
    let reply = Reply::new(meta);
    if req.stream {
        Ok(Sse::new(sse_stream(reply, rx))
            .keep_alive(KeepAlive::default())
            .into_response())
    } else {
        collect(reply, rx).await
    }
}

/// Waits for the whole reply.
async fn collect(mut reply: Reply, mut rx: Events) -> Result<Response, ApiError> {
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token { text, token } => reply.push(&text, token),
            Event::Done(done) => return Ok(axum::Json(reply.full(done)).into_response()),
            Event::Failed(failure) => return Err(failed(&failure)),
        }
    }
    Err(ApiError::internal(
        "the engine stopped before the reply was complete",
    ))
}

/// The 500 for a job that failed.
fn failed(failure: &Failure) -> ApiError {
    match failure {
        Failure::Stopped => ApiError::internal("the engine stopped before the reply was complete"),
        f => ApiError::internal(f.to_string()),
    }
}

/// The reply as server-sent events: one `data:` line per chunk, then `data: [DONE]`. Dropping
/// the stream (the client went away) drops the receiver, which cancels the sequence.
fn sse_stream(reply: Reply, rx: Events) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let mut pending = VecDeque::new();
    pending.extend(reply.opening_chunk().map(|c| c.to_string()));
    stream::unfold(
        (reply, rx, pending, false),
        |(mut reply, mut rx, mut pending, mut ended)| async move {
            loop {
                if let Some(data) = pending.pop_front() {
                    return Some((
                        Ok(SseEvent::default().data(data)),
                        (reply, rx, pending, ended),
                    ));
                }
                if ended {
                    return None;
                }
                match rx.recv().await {
                    Some(Event::Token { text, token }) if reply.holds_back() => {
                        reply.push(&text, token);
                    }
                    Some(Event::Token { text, token }) => {
                        pending.extend(
                            reply
                                .token_chunk(&text, token.as_ref())
                                .map(|c| c.to_string()),
                        );
                    }
                    Some(Event::Done(done)) if reply.holds_back() => {
                        pending.extend(reply.held_back_chunks(done).iter().map(Value::to_string));
                        pending.push_back("[DONE]".into());
                        ended = true;
                    }
                    Some(Event::Done(done)) => {
                        pending.extend(reply.closing_chunks(done).iter().map(Value::to_string));
                        pending.push_back("[DONE]".into());
                        ended = true;
                    }
                    Some(Event::Failed(failure)) => {
                        pending.push_back(failed(&failure).body().to_string());
                        ended = true;
                    }
                    None => {
                        let e =
                            ApiError::internal("the engine stopped before the reply was complete");
                        pending.push_back(e.body().to_string());
                        ended = true;
                    }
                }
            }
        },
    )
}
