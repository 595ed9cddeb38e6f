//! Files a family cannot run are refused at load with one error naming what is wrong: a missing
//! tensor, an unknown RoPE scaling, an unknown family, inconsistent expert counts.

mod common;

use common::tiny::{self, TinySpec, Variant};
use ferrolm_gguf::{GgufFile, GgufWriter, OwnedMetadataValue};
use ferrolm_transformer::{CpuBackend, CpuOptions, Model, Precision};

/// The tiny model of `variant` (no vocabulary), changed by `edit` and with the tensor `drop`
/// left out, loaded on the CPU: the error's text, or `None` when it loads.
fn load_error(
    variant: Variant,
    edit: impl FnOnce(&mut GgufWriter<'static>),
    drop: Option<&str>,
) -> Option<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("tiny.gguf");
    tiny::write(&TinySpec::new(variant), None, &first).expect("tiny model");
    let file = GgufFile::open(&first).expect("opens");
    let gguf = file.gguf().expect("parses");
    let mut w = GgufWriter::new();
    for (key, value) in gguf.metadata() {
        w.add_metadata(key, OwnedMetadataValue::from(value));
    }
    for t in gguf.tensors() {
        if Some(t.name) != drop {
            let view = gguf.tensor(t.name).expect("tensor");
            w.add_tensor(t.name, &t.dims, t.ty, view.data.to_vec())
                .expect("same tensor");
        }
    }
    edit(&mut w);
    let second = dir.path().join("edited.gguf");
    w.write_file(&second).expect("written");
    let file = GgufFile::open(&second).expect("opens");
    let gguf = file.gguf().expect("parses");
    let backend = CpuBackend::new(CpuOptions {
        threads: 1,
        precision: Precision::F32,
    })
    .expect("pool");
    Model::load(&gguf, backend).err().map(|e| e.to_string())
}

#[test]
fn every_tiny_family_loads_unchanged() {
    for v in Variant::ALL {
        assert_eq!(load_error(v, |_| {}, None), None, "{}", v.name());
    }
}

#[test]
fn a_missing_bias_is_named() {
    let e = load_error(Variant::Qwen2, |_| {}, Some("blk.1.attn_k.bias")).expect("refused");
    assert!(e.contains("blk.1.attn_k.bias"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_missing_expert_tensor_is_named() {
    let e =
        load_error(Variant::Mixtral, |_| {}, Some("blk.0.ffn_down_exps.weight")).expect("refused");
    assert!(e.contains("blk.0.ffn_down_exps.weight"), "{e}");
}

#[test]
fn half_a_pair_of_long_rope_factors_is_refused() {
    let e = load_error(Variant::Phi3, |_| {}, Some("rope_factors_short.weight")).expect("refused");
    assert!(e.contains("rope_factors_short.weight"), "{e}");
}

#[test]
fn an_unknown_rope_scaling_is_refused_with_the_known_ones() {
    let e = load_error(
        Variant::Llama3,
        |w| w.add_metadata("llama.rope.scaling.type", "dynamic"),
        None,
    )
    .expect("refused");
    assert!(
        e.contains("llama.rope.scaling.type") && e.contains("dynamic") && e.contains("yarn"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn an_unknown_family_lists_the_supported_ones() {
    let e = load_error(
        Variant::Mistral,
        |w| w.add_metadata("general.architecture", "mamba"),
        None,
    )
    .expect("refused");
    for name in [
        "mamba", "llama", "qwen2", "qwen3moe", "phi3", "gemma2", "gemma3",
    ] {
        assert!(e.contains(name), "{name} in {e}");
    }
}

#[test]
fn more_experts_used_than_exist_is_refused() {
    let e = load_error(
        Variant::Qwen3Moe,
        |w| w.add_metadata("qwen3moe.expert_used_count", 9u32),
        None,
    )
    .expect("refused");
    assert!(e.contains("qwen3moe.expert_used_count"), "{e}");
}

#[test]
fn a_block_count_beyond_the_tensors_is_refused_before_allocating() {
    let e = load_error(
        Variant::Qwen3,
        |w| w.add_metadata("qwen3.block_count", u32::MAX),
        None,
    )
    .expect("refused");
    assert!(e.contains("qwen3.block_count"), "{e}");
}
