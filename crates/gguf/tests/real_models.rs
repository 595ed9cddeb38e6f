//! Facts about the two real models, cross-checked with the Python `gguf` package.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrolm_gguf::{GgmlType, Gguf, GgufFile, GgufWriter, keys, keys::ArchKey};

fn model_path(file: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("no cache directory on this system; set FERROLM_HOME")
            .join("ferrolm")
            .join("models"),
    };
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models`",
        path.display()
    );
    path
}

#[test]
fn smollm2_header_metadata_and_tensors() {
    let file = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("open");
    let g = file.gguf().expect("parse");
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset(), 1_785_664);
    assert_eq!(g.metadata().len(), 33);
    assert_eq!(g.tensors().len(), 272);
    assert_eq!(g.architecture().expect("arch"), "llama");
    assert_eq!(g.metadata()[0].0, keys::general::ARCHITECTURE);
    assert_eq!(
        g.get_u32(&g.arch_key(ArchKey::BlockCount).unwrap())
            .unwrap(),
        30
    );
    assert_eq!(
        g.get_u32(&g.arch_key(ArchKey::HeadCountKv).unwrap())
            .unwrap(),
        3
    );
    assert_eq!(
        g.get_f32(&g.arch_key(ArchKey::RopeFreqBase).unwrap())
            .unwrap(),
        100000.0
    );
    assert_eq!(
        g.get_f32(&g.arch_key(ArchKey::RmsEps).unwrap()).unwrap(),
        1e-5
    );
    assert_eq!(g.get_str(keys::tokenizer::MODEL).unwrap(), "gpt2");
    assert_eq!(g.get_str(keys::tokenizer::PRE).unwrap(), "smollm");
    assert!(!g.get_bool(keys::tokenizer::ADD_BOS).unwrap());
    assert_eq!(g.get_u32(keys::tokenizer::EOS_ID).unwrap(), 2);
    let tokens = g
        .get_array(keys::tokenizer::TOKENS)
        .unwrap()
        .as_strings()
        .unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens[1], "<|im_start|>");
    let merges = g.get_array(keys::tokenizer::MERGES).unwrap();
    assert_eq!(merges.len(), 48900);
    assert_eq!(
        g.get_array(keys::tokenizer::TOKEN_TYPE)
            .unwrap()
            .as_i32s()
            .unwrap()
            .len(),
        49152
    );

    let emb = g.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(emb.ty, GgmlType::Q8_0);
    assert_eq!(emb.dims, [576, 49152]);
    assert_eq!(emb.data.len(), 30_081_024);
    assert_eq!(g.tensors()[0].offset, 0);
    let norm = g.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!(
        (norm.ty, norm.dims.as_slice()),
        (GgmlType::F32, &[576u64][..])
    );
    // Data borrowed from the mapping, at data_offset + offset.
    let start = norm.data.as_ptr() as usize - file.bytes().as_ptr() as usize;
    assert_eq!(start, 31_866_688);
    let counts = |ty| g.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        (
            counts(GgmlType::Q4_1),
            counts(GgmlType::F32),
            counts(GgmlType::Q8_0)
        ),
        (210, 61, 1)
    );
}

#[test]
fn gemma3_header_metadata_and_tensors() {
    let file = GgufFile::open(model_path("gemma-3-270m-q4_k_m.gguf")).expect("open");
    let g = file.gguf().expect("parse");
    assert_eq!(g.version(), 3);
    assert_eq!(g.data_offset(), 6_525_120);
    assert_eq!(g.metadata().len(), 33);
    assert_eq!(g.tensors().len(), 236);
    assert_eq!(g.architecture().unwrap(), "gemma3");
    assert_eq!(
        g.get_u32(&g.arch_key(ArchKey::SlidingWindow).unwrap())
            .unwrap(),
        512
    );
    assert_eq!(
        g.get_u32(&g.arch_key(ArchKey::KeyLength).unwrap()).unwrap(),
        256
    );
    assert_eq!(
        g.get_u32(&g.arch_key(ArchKey::ContextLength).unwrap())
            .unwrap(),
        32768
    );
    assert_eq!(g.get_str(keys::tokenizer::MODEL).unwrap(), "llama");
    let tokens = g
        .get_array(keys::tokenizer::TOKENS)
        .unwrap()
        .as_strings()
        .unwrap();
    assert_eq!(tokens.len(), 262_144);
    assert_eq!(tokens[2], "<bos>");
    let scores = g
        .get_array(keys::tokenizer::SCORES)
        .unwrap()
        .as_f32s()
        .unwrap();
    assert_eq!(scores.len(), 262_144);
    assert_eq!(g.get_u32(keys::general::FILE_TYPE).unwrap(), 15);

    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ty, emb.dims.as_slice()),
        (GgmlType::Q8_0, &[640u64, 262_144][..])
    );
    assert_eq!(emb.data.len(), 178_257_920);
    let k = g.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(
        (k.ty, k.dims.as_slice()),
        (GgmlType::Q5_0, &[640u64, 256][..])
    );
    assert_eq!(k.data.len(), 112_640);
    let counts = |ty| g.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        [
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q4K,
            GgmlType::Q8_0,
            GgmlType::Q6K
        ]
        .map(counts),
        [109, 81, 27, 10, 9]
    );
    let total: u64 = g.tensor_views().map(|t| t.data.len() as u64).sum();
    assert!(total < file.bytes().len() as u64);
}

#[test]
fn rewriting_smollm2_reproduces_the_file_byte_for_byte() {
    let file = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let g = file.gguf().unwrap();
    let mut out = Vec::with_capacity(file.bytes().len());
    GgufWriter::from_gguf(&g)
        .unwrap()
        .write_to(&mut out)
        .unwrap();
    assert_eq!(out.len(), file.bytes().len());
    assert!(out == file.bytes(), "rewritten file differs");
    let again = Gguf::parse(&out).unwrap();
    assert_eq!(again.metadata(), g.metadata());
}

#[test]
fn a_truncated_model_keeps_metadata_and_chosen_tensors() {
    let file = GgufFile::open(model_path("gemma-3-270m-q4_k_m.gguf")).unwrap();
    let g = file.gguf().unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        w.add_metadata(k, ferrolm_gguf::OwnedMetadataValue::from(v));
    }
    w.add_metadata(&g.arch_key(ArchKey::BlockCount).unwrap(), 1u32);
    for t in g
        .tensor_views()
        .filter(|t| !t.name.starts_with("blk.") || t.name.starts_with("blk.0."))
    {
        w.add_tensor(t.name, &t.dims, t.ty, t.data).unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    let small = Gguf::parse(&out).unwrap();
    assert_eq!(small.get_u32("gemma3.block_count").unwrap(), 1);
    assert_eq!(small.metadata().len(), 33);
    assert!(small.tensor("blk.1.attn_k.weight").is_none());
    let k = small.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(k.data, g.tensor("blk.0.attn_k.weight").unwrap().data);
    assert_eq!(
        small.get_array(keys::tokenizer::TOKENS).unwrap(),
        g.get_array(keys::tokenizer::TOKENS).unwrap()
    );
}
