//! `ferrolm inspect MODEL [--json]`: what a GGUF file holds — architecture,
//! hyperparameters, tokenizer, quantization mix, every metadata key and every
//! tensor. The text view summarizes long arrays; `--json` prints the same
//! report as one JSON object on one line.

use anyhow::Result;
use ferrolm_gguf::keys::{general, tokenizer};
use ferrolm_gguf::{Gguf, GgufFile, MetadataArray, MetadataValue};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use ferrolm_transformer::{ModelConfig, TensorName};

use crate::file_type;
use crate::models;
use crate::output::print_stdout;

/// Arrays up to this length are given in full in `--json`; longer ones by length only.
const JSON_ARRAY_LIMIT: usize = 64;
/// Elements of an array shown in the text view.
const TEXT_ARRAY_PREVIEW: usize = 4;
/// Characters of a string shown in the text view.
const TEXT_STRING_LIMIT: usize = 60;

/// Arguments of `ferrolm inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Path to a .gguf file, or a known model name (smollm2-135m, gemma3-270m).
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// Print the report as one JSON object on one line.
    #[arg(long)]
    pub json: bool,
}

/// Opens the model and prints its report.
pub fn run(args: &InspectArgs) -> Result<()> {
    let path = models::resolve(&args.model)?;
    let file = GgufFile::open(&path)?;
    let gguf = file.gguf()?;
    let report = Report::new(&file, &gguf);
    if args.json {
        let mut line = serde_json::to_string(&report)?;
        line.push('\n');
        print_stdout(&line)
    } else {
        print_stdout(&render_text(&report, &gguf)?)
    }
}

/// Everything `inspect` says about a file; serialized as the `--json` output.
#[derive(Debug, Serialize)]
struct Report<'a> {
    path: String,
    file_size: u64,
    gguf_version: u32,
    alignment: u64,
    data_offset: u64,
    architecture: Option<&'a str>,
    name: Option<&'a str>,
    file_type: Option<FileType>,
    context_length: Option<u64>,
    parameter_count: u64,
    tensor_count: usize,
    tensor_bytes: u64,
    bits_per_weight: f64,
    quantization: Vec<TypeUsage>,
    hyperparameters: BTreeMap<&'a str, Value>,
    /// The model as ferrolm reads it: its family and the settings the forward pass uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<BTreeMap<&'static str, String>>,
    /// Why ferrolm cannot run the file, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_error: Option<String>,
    /// `model` in reading order, for the text view.
    #[serde(skip)]
    model_lines: Option<Vec<(&'static str, String)>>,
    tokenizer: Option<TokenizerSummary<'a>>,
    metadata: Vec<MetadataEntry<'a>>,
    tensors: Vec<TensorEntry<'a>>,
}

#[derive(Debug, Serialize)]
struct FileType {
    id: u32,
    name: Option<&'static str>,
}

/// How many tensors, elements and bytes one ggml type accounts for.
#[derive(Debug, Serialize)]
struct TypeUsage {
    #[serde(rename = "type")]
    ty: &'static str,
    tensors: usize,
    elements: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct TokenizerSummary<'a> {
    model: &'a str,
    kind: &'static str,
    pre: Option<&'a str>,
    vocab_size: Option<usize>,
    merges: Option<usize>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    special_tokens: Vec<SpecialToken<'a>>,
    chat_template_chars: Option<usize>,
}

#[derive(Debug, Serialize)]
struct SpecialToken<'a> {
    role: &'static str,
    id: u64,
    text: Option<&'a str>,
}

/// One metadata key: scalar values in full, arrays by element type and length
/// (and in full when short).
#[derive(Debug, Serialize)]
struct MetadataEntry<'a> {
    key: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    element_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
}

#[derive(Debug, Serialize)]
struct TensorEntry<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
    /// ggml order: `shape[0]` is the row length.
    shape: Vec<u64>,
    elements: u64,
    bytes: u64,
    /// Relative to the start of the data section.
    offset: u64,
}

impl<'a> Report<'a> {
    fn new(file: &GgufFile, gguf: &Gguf<'a>) -> Report<'a> {
        let architecture = gguf
            .get(general::ARCHITECTURE)
            .and_then(MetadataValue::as_str);
        let tensors: Vec<TensorEntry<'a>> = gguf
            .tensors()
            .iter()
            .map(|info| TensorEntry {
                name: info.name,
                ty: info.ty.name(),
                shape: info.dims.clone(),
                elements: info.n_elements(),
                bytes: info.n_bytes(),
                offset: info.offset,
            })
            .collect();
        let parameter_count: u64 = tensors.iter().map(|t| t.elements).sum();
        let tensor_bytes: u64 = tensors.iter().map(|t| t.bytes).sum();
        let bits_per_weight = if parameter_count == 0 {
            0.0
        } else {
            tensor_bytes as f64 * 8.0 / parameter_count as f64
        };
        let hyperparameters: BTreeMap<&'a str, Value> = architecture
            .map(|arch| {
                gguf.metadata()
                    .iter()
                    .filter_map(|(key, value)| {
                        let suffix = key.strip_prefix(arch)?.strip_prefix('.')?;
                        Some((suffix, value_json(value)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (model_lines, model_error) = match model_summary(gguf) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        Report {
            model: model_lines.as_ref().map(|m| m.iter().cloned().collect()),
            model_lines,
            model_error,
            path: file.path().display().to_string(),
            file_size: file.bytes().len() as u64,
            gguf_version: gguf.version(),
            alignment: gguf.alignment(),
            data_offset: gguf.data_offset(),
            architecture,
            name: gguf.get(general::NAME).and_then(MetadataValue::as_str),
            file_type: gguf
                .get(general::FILE_TYPE)
                .and_then(MetadataValue::as_u32)
                .map(|id| FileType {
                    id,
                    name: file_type::name(id),
                }),
            context_length: hyperparameters
                .get("context_length")
                .and_then(Value::as_u64),
            parameter_count,
            tensor_count: tensors.len(),
            tensor_bytes,
            bits_per_weight,
            quantization: type_usage(&tensors),
            hyperparameters,
            tokenizer: tokenizer_summary(gguf),
            metadata: gguf
                .metadata()
                .iter()
                .map(|(key, value)| metadata_entry(key, value))
                .collect(),
            tensors,
        }
    }
}

/// The settings ferrolm's forward pass takes from the file, in reading order, or why it cannot
/// run it.
fn model_summary(gguf: &Gguf<'_>) -> Result<Vec<(&'static str, String)>, String> {
    let c = ModelConfig::from_gguf(gguf).map_err(|e| e.to_string())?;
    let mut out = vec![
        ("family", format!("{} ({})", c.arch.name(), c.arch.summary)),
        ("layers", c.n_layer.to_string()),
        ("embedding width", c.d_model.to_string()),
        (
            "attention heads",
            format!(
                "{} query, {} key/value, {} wide",
                c.n_head, c.n_head_kv, c.head_dim
            ),
        ),
        ("attention scale", format!("{}", c.attn_scale)),
    ];
    match &c.moe {
        None => out.push(("feed-forward width", c.ffn_dim.to_string())),
        Some(m) => out.push((
            "experts",
            format!(
                "{} of {} per token, {} wide{}",
                m.n_used,
                m.n_expert,
                m.ffn_dim,
                if m.weights_scale == 1.0 {
                    String::new()
                } else {
                    format!(", weights times {}", m.weights_scale)
                }
            ),
        )),
    }
    let spec = c.arch;
    out.push(("feed-forward activation", format!("{:?}", spec.glu)));
    let rope = |r: &ferrolm_transformer::Rope| {
        let mut s = format!(
            "{:?} pairs, {} of {} dimensions, base {}",
            r.style, r.n_rot, c.head_dim, r.base
        );
        if r.freq_scale != 1.0 {
            let _ = write!(s, ", positions times {}", r.freq_scale);
        }
        if r.ext_factor != 0.0 {
            let _ = write!(
                s,
                ", YaRN ramp over pairs {}..{} of an original {} positions",
                r.corr_dims[0], r.corr_dims[1], c.n_ctx_orig
            );
        }
        if r.mscale != 1.0 {
            let _ = write!(s, ", magnitude {}", r.mscale);
        }
        s
    };
    if let Some(global) = c
        .layers
        .iter()
        .find(|l| l.window.is_none())
        .or(c.layers.first())
    {
        out.push(("rope", rope(&global.rope)));
    }
    let factors: Vec<&str> = [
        TensorName::RopeFreqs,
        TensorName::RopeFactorsLong,
        TensorName::RopeFactorsShort,
    ]
    .iter()
    .map(|t| t.as_str())
    .filter(|n| gguf.tensor(n).is_some())
    .collect();
    if !factors.is_empty() {
        out.push(("rope frequency factors", factors.join(", ")));
    }
    let sliding: Vec<String> = c
        .layers
        .iter()
        .enumerate()
        .filter_map(|(il, l)| l.window.map(|w| format!("{il}:{w}")))
        .collect();
    if !sliding.is_empty() {
        out.push((
            "sliding window",
            format!(
                "{} of {} layers (layer:window {}), their rope: {}",
                sliding.len(),
                c.n_layer,
                sliding.join(" "),
                c.layers
                    .iter()
                    .find(|l| l.window.is_some())
                    .map(|l| rope(&l.rope))
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(cap) = c.attn_softcap {
        out.push(("attention soft cap", cap.to_string()));
    }
    if let Some(cap) = c.final_softcap {
        out.push(("final logit soft cap", cap.to_string()));
    }
    if let Some(s) = c.embed_scale {
        out.push(("embedding scale", s.to_string()));
    }
    let mut norms = vec!["pre"];
    if spec.qk_norm {
        norms.push("per-head q/k");
    }
    if spec.norms == ferrolm_transformer::models::spec::NormPlacement::PreAndPost {
        norms.push("post-attention, post-feed-forward");
    }
    out.push(("norms", format!("{}, eps {}", norms.join(", "), c.rms_eps)));
    if spec.qkv_bias {
        out.push(("biases", "query, key, value".into()));
    }
    let tied = spec.always_tied || gguf.tensor(TensorName::Output.as_str()).is_none();
    out.push((
        "output head",
        if tied {
            "tied to the embeddings"
        } else {
            "separate"
        }
        .into(),
    ));
    out.push(("vocabulary", c.vocab.to_string()));
    out.push(("trained context", c.n_ctx_train.to_string()));
    Ok(out)
}

/// Per-type totals, largest share of bytes first.
fn type_usage(tensors: &[TensorEntry<'_>]) -> Vec<TypeUsage> {
    let mut usage: Vec<TypeUsage> = Vec::new();
    for tensor in tensors {
        if let Some(entry) = usage.iter_mut().find(|u| u.ty == tensor.ty) {
            entry.tensors += 1;
            entry.elements += tensor.elements;
            entry.bytes += tensor.bytes;
        } else {
            usage.push(TypeUsage {
                ty: tensor.ty,
                tensors: 1,
                elements: tensor.elements,
                bytes: tensor.bytes,
            });
        }
    }
    usage.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ty.cmp(b.ty)));
    usage
}

fn tokenizer_kind(model: &str) -> &'static str {
    match model {
        "gpt2" => "byte-level BPE",
        "llama" => "SentencePiece BPE with byte fallback",
        "bert" => "WordPiece",
        "t5" => "SentencePiece unigram",
        "rwkv" => "RWKV trie",
        "no_vocab" => "no vocabulary",
        _ => "unknown",
    }
}

fn tokenizer_summary<'a>(gguf: &Gguf<'a>) -> Option<TokenizerSummary<'a>> {
    let model = gguf.get(tokenizer::MODEL)?.as_str()?;
    let tokens = gguf
        .get(tokenizer::TOKENS)
        .and_then(MetadataValue::as_array)
        .and_then(MetadataArray::as_strings);
    let roles = [
        ("bos", tokenizer::BOS_ID),
        ("eos", tokenizer::EOS_ID),
        ("eot", tokenizer::EOT_ID),
        ("eom", tokenizer::EOM_ID),
        ("unknown", tokenizer::UNK_ID),
        ("separator", tokenizer::SEP_ID),
        ("padding", tokenizer::PAD_ID),
        ("mask", tokenizer::MASK_ID),
    ];
    let special_tokens = roles
        .iter()
        .filter_map(|&(role, key)| {
            let id = gguf.get(key)?.as_u64()?;
            let text = tokens
                .zip(usize::try_from(id).ok())
                .and_then(|(tokens, i)| tokens.get(i).copied());
            Some(SpecialToken { role, id, text })
        })
        .collect();
    Some(TokenizerSummary {
        model,
        kind: tokenizer_kind(model),
        pre: gguf.get(tokenizer::PRE).and_then(MetadataValue::as_str),
        vocab_size: tokens.map(<[&str]>::len),
        merges: gguf
            .get(tokenizer::MERGES)
            .and_then(MetadataValue::as_array)
            .map(MetadataArray::len),
        add_bos: gguf
            .get(tokenizer::ADD_BOS)
            .and_then(MetadataValue::as_bool),
        add_eos: gguf
            .get(tokenizer::ADD_EOS)
            .and_then(MetadataValue::as_bool),
        special_tokens,
        chat_template_chars: gguf
            .get(tokenizer::CHAT_TEMPLATE)
            .and_then(MetadataValue::as_str)
            .map(|t| t.chars().count()),
    })
}

fn metadata_entry<'a>(key: &'a str, value: &MetadataValue<'a>) -> MetadataEntry<'a> {
    let ty = value.value_type().name();
    match value {
        MetadataValue::Array(array) => MetadataEntry {
            key,
            ty,
            element_type: Some(array.element_type().name()),
            len: Some(array.len()),
            value: (array.len() <= JSON_ARRAY_LIMIT).then(|| array_json(array)),
        },
        scalar => MetadataEntry {
            key,
            ty,
            element_type: None,
            len: None,
            value: Some(value_json(scalar)),
        },
    }
}

/// A metadata value as JSON; arrays longer than [`JSON_ARRAY_LIMIT`] become
/// `{"element_type": .., "len": ..}`.
fn value_json(value: &MetadataValue<'_>) -> Value {
    match value {
        MetadataValue::U8(v) => json!(v),
        MetadataValue::I8(v) => json!(v),
        MetadataValue::U16(v) => json!(v),
        MetadataValue::I16(v) => json!(v),
        MetadataValue::U32(v) => json!(v),
        MetadataValue::I32(v) => json!(v),
        MetadataValue::U64(v) => json!(v),
        MetadataValue::I64(v) => json!(v),
        MetadataValue::F32(v) => f32_json(*v),
        MetadataValue::F64(v) => json!(v),
        MetadataValue::Bool(v) => json!(v),
        MetadataValue::String(v) => json!(v),
        MetadataValue::Array(array) if array.len() <= JSON_ARRAY_LIMIT => array_json(array),
        MetadataValue::Array(array) => {
            json!({ "element_type": array.element_type().name(), "len": array.len() })
        }
    }
}

/// An f32 as the shortest decimal that reads back as the same f32 (`0.00001`, not
/// the f64 widening `9.999999747378752e-6`); non-finite values become null.
fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn array_json(array: &MetadataArray<'_>) -> Value {
    match array {
        MetadataArray::U8(v) => json!(v),
        MetadataArray::I8(v) => json!(v),
        MetadataArray::U16(v) => json!(v),
        MetadataArray::I16(v) => json!(v),
        MetadataArray::U32(v) => json!(v),
        MetadataArray::I32(v) => json!(v),
        MetadataArray::U64(v) => json!(v),
        MetadataArray::I64(v) => json!(v),
        MetadataArray::F32(v) => v.iter().map(|&x| f32_json(x)).collect(),
        MetadataArray::F64(v) => json!(v),
        MetadataArray::Bool(v) => json!(v),
        MetadataArray::String(v) => json!(v),
        MetadataArray::Array(v) => Value::Array(
            v.iter()
                .map(|inner| {
                    if inner.len() <= JSON_ARRAY_LIMIT {
                        array_json(inner)
                    } else {
                        json!({ "element_type": inner.element_type().name(), "len": inner.len() })
                    }
                })
                .collect(),
        ),
    }
}

fn render_text(report: &Report<'_>, gguf: &Gguf<'_>) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "file            {}", report.path)?;
    writeln!(
        w,
        "size            {} ({} bytes)",
        human_bytes(report.file_size),
        report.file_size
    )?;
    writeln!(
        w,
        "gguf            version {}, alignment {}, tensor data at byte {}",
        report.gguf_version, report.alignment, report.data_offset
    )?;
    writeln!(
        w,
        "architecture    {}",
        report.architecture.unwrap_or("(none)")
    )?;
    writeln!(w, "name            {}", report.name.unwrap_or("(none)"))?;
    if let Some(ft) = &report.file_type {
        writeln!(
            w,
            "file type       {} ({})",
            ft.name.unwrap_or("unknown"),
            ft.id
        )?;
    }
    if let Some(ctx) = report.context_length {
        writeln!(w, "context length  {ctx}")?;
    }
    writeln!(
        w,
        "parameters      {} ({})",
        human_count(report.parameter_count),
        report.parameter_count
    )?;
    writeln!(
        w,
        "tensors         {}, {}, {:.2} bits per weight",
        report.tensor_count,
        human_bytes(report.tensor_bytes),
        report.bits_per_weight
    )?;

    writeln!(w, "\nquantization")?;
    writeln!(
        w,
        "  {:<8} {:>8} {:>14} {:>12}",
        "type", "tensors", "elements", "size"
    )?;
    for usage in &report.quantization {
        writeln!(
            w,
            "  {:<8} {:>8} {:>14} {:>12}",
            usage.ty,
            usage.tensors,
            usage.elements,
            human_bytes(usage.bytes)
        )?;
    }

    if let Some(m) = &report.model_lines {
        writeln!(w, "\nmodel (as ferrolm runs it)")?;
        for (k, v) in m {
            writeln!(w, "  {k:<24}{v}")?;
        }
    } else if let Some(e) = &report.model_error {
        writeln!(w, "\nmodel           ferrolm cannot run this file: {e}")?;
    }

    let arch_prefix = report.architecture.map(|arch| format!("{arch}."));
    let is_hyper = |key: &str| arch_prefix.as_deref().is_some_and(|p| key.starts_with(p));
    if let Some(prefix) = &arch_prefix {
        writeln!(w, "\nhyperparameters ({prefix}*)")?;
        write_entries(w, gguf, |key| is_hyper(key))?;
    }

    if let Some(tok) = &report.tokenizer {
        writeln!(w, "\ntokenizer")?;
        writeln!(w, "  model         {} ({})", tok.model, tok.kind)?;
        if let Some(pre) = tok.pre {
            writeln!(w, "  pre-tokenizer {pre}")?;
        }
        if let Some(n) = tok.vocab_size {
            writeln!(w, "  vocabulary    {n} tokens")?;
        }
        if let Some(n) = tok.merges {
            writeln!(w, "  merges        {n}")?;
        }
        let flag = |f: Option<bool>| f.map_or("unset", |b| if b { "yes" } else { "no" });
        writeln!(
            w,
            "  add bos/eos   {} / {}",
            flag(tok.add_bos),
            flag(tok.add_eos)
        )?;
        for special in &tok.special_tokens {
            let text = special
                .text
                .map_or_else(|| "(no such token)".to_owned(), |t| format!("{t:?}"));
            writeln!(w, "  {:<13} {} {text}", special.role, special.id)?;
        }
        if let Some(n) = tok.chat_template_chars {
            writeln!(w, "  chat template {n} characters")?;
        }
    }

    writeln!(w, "\nmetadata")?;
    write_entries(w, gguf, |key| !is_hyper(key))?;

    writeln!(w, "\ntensors (shape in ggml order: row length first)")?;
    let name_width = report
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        w,
        "  {:<name_width$} {:<8} {:<24} {:>12} {:>12}",
        "name", "type", "shape", "bytes", "offset"
    )?;
    for t in &report.tensors {
        let shape = format!("{:?}", t.shape);
        writeln!(
            w,
            "  {:<name_width$} {:<8} {:<24} {:>12} {:>12}",
            t.name, t.ty, shape, t.bytes, t.offset
        )?;
    }
    Ok(out)
}

/// Writes the metadata keys that `keep` selects, one per line, in file order.
fn write_entries(
    w: &mut String,
    gguf: &Gguf<'_>,
    keep: impl Fn(&str) -> bool,
) -> Result<(), std::fmt::Error> {
    let entries: Vec<_> = gguf
        .metadata()
        .iter()
        .filter(|(key, _)| keep(key))
        .collect();
    let width = entries.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in entries {
        writeln!(w, "  {key:<width$}  {}", value_text(value))?;
    }
    Ok(())
}

/// A value for the text view: long strings cut, arrays as type, length and first elements.
fn value_text(value: &MetadataValue<'_>) -> String {
    match value {
        MetadataValue::String(s) => short_string(s),
        MetadataValue::Array(array) => array_text(array),
        scalar => value_json(scalar).to_string(),
    }
}

fn array_text(array: &MetadataArray<'_>) -> String {
    let n = array.len();
    let preview: Vec<String> = match array {
        MetadataArray::String(v) => v
            .iter()
            .take(TEXT_ARRAY_PREVIEW)
            .map(|s| short_string(s))
            .collect(),
        MetadataArray::Array(v) => v.iter().take(TEXT_ARRAY_PREVIEW).map(array_text).collect(),
        other => match array_json(other) {
            Value::Array(items) => items
                .iter()
                .take(TEXT_ARRAY_PREVIEW)
                .map(Value::to_string)
                .collect(),
            _ => Vec::new(),
        },
    };
    let more = if n > TEXT_ARRAY_PREVIEW { ", …" } else { "" };
    format!(
        "[{} × {n}] [{}{more}]",
        array.element_type().name(),
        preview.join(", ")
    )
}

fn short_string(s: &str) -> String {
    let count = s.chars().count();
    if count <= TEXT_STRING_LIMIT {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(TEXT_STRING_LIMIT).collect();
        format!("{head:?}… ({count} characters)")
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn human_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(human_count(2_000_000_000), "2.00B");
    }

    #[test]
    fn long_strings_and_arrays_are_summarized_in_text() {
        let long = "x".repeat(100);
        assert_eq!(
            short_string(&long),
            format!("{:?}… (100 characters)", "x".repeat(60))
        );
        assert_eq!(short_string("a\"b"), "\"a\\\"b\"");
        let tokens = MetadataArray::String(vec!["a", "b", "c", "d", "e", "f"]);
        assert_eq!(
            array_text(&tokens),
            "[string × 6] [\"a\", \"b\", \"c\", \"d\", …]"
        );
        let small = MetadataArray::I32(vec![1, -2]);
        assert_eq!(array_text(&small), "[i32 × 2] [1, -2]");
    }

    #[test]
    fn f32_values_keep_their_shortest_decimal_form() {
        assert_eq!(f32_json(1e-5).to_string(), "0.00001");
        assert_eq!(f32_json(10000.0).to_string(), "10000.0");
        assert_eq!(f32_json(f32::NAN), Value::Null);
        let array = MetadataArray::F32(vec![0.1, f32::INFINITY]);
        assert_eq!(array_json(&array).to_string(), "[0.1,null]");
    }

    #[test]
    fn long_arrays_are_given_by_length_in_json() {
        let long = MetadataValue::Array(MetadataArray::F32(vec![0.5; 100]));
        assert_eq!(
            value_json(&long),
            json!({"element_type": "f32", "len": 100})
        );
        let entry = metadata_entry("k", &long);
        assert_eq!(entry.len, Some(100));
        assert!(entry.value.is_none());
        let short = MetadataValue::Array(MetadataArray::U32(vec![3, 4]));
        assert_eq!(metadata_entry("k", &short).value, Some(json!([3, 4])));
    }

    #[test]
    fn quantization_mix_totals_per_type_largest_first() {
        let tensor = |ty, elements, bytes| TensorEntry {
            name: "t",
            ty,
            shape: vec![elements],
            elements,
            bytes,
            offset: 0,
        };
        let usage = type_usage(&[
            tensor("f32", 10, 40),
            tensor("q4_1", 64, 40),
            tensor("q4_1", 64, 40),
        ]);
        assert_eq!(usage.len(), 2);
        assert_eq!(
            (
                usage[0].ty,
                usage[0].tensors,
                usage[0].elements,
                usage[0].bytes
            ),
            ("q4_1", 2, 128, 80)
        );
        assert_eq!(
            (usage[1].ty, usage[1].tensors, usage[1].bytes),
            ("f32", 1, 40)
        );
    }
}
