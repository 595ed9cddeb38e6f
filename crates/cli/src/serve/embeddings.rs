//! `POST /v1/embeddings`: OpenAI's embeddings API. `input` is a string, an array of strings,
//! an array of token ids or an array of such arrays; each becomes the model's final hidden
//! states pooled into one unit-length vector (`serve --pooling`). `encoding_format` is
//! `float` (the default) or `base64` (little-endian f32, as OpenAI's clients ask for).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrolm_engine::{EngineError, Failure, ModelInfo};
use ferrolm_tokenizer::EncodeOptions;
use serde_json::{Value, json};

use super::error::{ApiError, json_kind};
use super::routes::App;

/// Most inputs per request (OpenAI allows 2048).
const MAX_INPUTS: usize = 2048;

/// How the vectors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

/// A parsed request: the model named, each input's tokens, and the encoding.
struct EmbedRequest {
    model: String,
    inputs: Vec<Vec<u32>>,
    encoding: Encoding,
}

fn parse(body: &[u8], info: &ModelInfo) -> Result<EmbedRequest, ApiError> {
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
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    let model = match get("model") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(ApiError::mistyped("model", "a string", v)),
        None => return Err(ApiError::missing("model")),
    };
    let encoding = match get("encoding_format") {
        None => Encoding::Float,
        Some(Value::String(s)) if s == "float" => Encoding::Float,
        Some(Value::String(s)) if s == "base64" => Encoding::Base64,
        Some(v) => {
            return Err(ApiError::field(
                "encoding_format",
                format!("encoding_format must be \"float\" or \"base64\", got {v}"),
            ));
        }
    };
    if let Some(d) = get("dimensions")
        && d.as_u64() != Some(info.d_model as u64)
    {
        return Err(ApiError::field(
            "dimensions",
            format!(
                "this model's embeddings have {} dimensions; other sizes are not supported",
                info.d_model
            ),
        ));
    }
    let input = get("input").ok_or_else(|| ApiError::missing("input"))?;
    let texts_or_ids: Vec<&Value> = match input {
        Value::String(_) => vec![input],
        Value::Array(items) if items.first().is_some_and(Value::is_number) => vec![input],
        Value::Array(items) => items.iter().collect(),
        v => {
            return Err(ApiError::mistyped(
                "input",
                "a string, an array of strings or an array of token ids",
                v,
            ));
        }
    };
    if texts_or_ids.is_empty() {
        return Err(ApiError::field("input", "input has no items"));
    }
    if texts_or_ids.len() > MAX_INPUTS {
        return Err(ApiError::field(
            "input",
            format!(
                "at most {MAX_INPUTS} inputs per request, got {}",
                texts_or_ids.len()
            ),
        ));
    }
    let limit = info.n_vocab.min(info.tokenizer.n_vocab());
    let mut inputs = Vec::with_capacity(texts_or_ids.len());
    for item in texts_or_ids {
        let ids = match item {
            Value::String(text) => info.tokenizer.encode(text, EncodeOptions::default()),
            Value::Array(ids) => ids
                .iter()
                .map(|v| {
                    v.as_u64()
                        .filter(|&id| (id as usize) < limit)
                        .map(|id| id as u32)
                        .ok_or_else(|| {
                            ApiError::field(
                                "input",
                                format!("{v} is not a token id of this vocabulary of {limit}"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            v => {
                return Err(ApiError::mistyped(
                    "input",
                    "strings or arrays of token ids",
                    v,
                ));
            }
        };
        if ids.is_empty() {
            return Err(ApiError::field("input", "an input has no tokens"));
        }
        if ids.len() > info.n_ctx {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::field(
                    "input",
                    format!(
                        "an input is {} tokens; this server's context is {} tokens",
                        ids.len(),
                        info.n_ctx
                    ),
                )
            });
        }
        inputs.push(ids);
    }
    Ok(EmbedRequest {
        model,
        inputs,
        encoding,
    })
}

/// The handler.
pub async fn embeddings(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(&app, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(app: &App, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::http(r.status(), "invalid_body", r.body_text()))?;
    let req = parse(&body, app.engine.info())?;
    if !app.serves(&req.model) {
        return Err(ApiError::unknown_model(&req.model, &app.model.id));
    }
    let n_tokens: usize = req.inputs.iter().map(Vec::len).sum();
    let shutting_down = || ApiError::unavailable("shutting_down", "the server is shutting down");
    let reply = app.engine.try_embed(req.inputs).map_err(|e| match e {
        EngineError::QueueFull { .. } => ApiError::unavailable(
            "server_overloaded",
            "the server is at capacity; retry later",
        ),
        EngineError::Stopped => shutting_down(),
        e => ApiError::invalid(e.to_string()),
    })?;
    let vectors = reply.wait().await.map_err(|f| match f {
        Failure::Stopped => shutting_down(),
        f => ApiError::internal(f.to_string()),
    })?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match req.encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": app.model.id,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }))
    .into_response())
}
