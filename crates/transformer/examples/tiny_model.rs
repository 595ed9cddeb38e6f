//! Writes one of the tiny random-weight models of the family tests (see
//! `tests/common/tiny.rs`).
//!
//! ```text
//! tiny_model VARIANT OUT.gguf [--tokenizer MODEL.gguf] [--seed N] [--type F32|F16|Q8_0|Q4_K|...]
//!            [--width N] [--vocab N]
//! tiny_model --list
//! ```
//!
//! Without `--tokenizer` the file has `tokenizer.ggml.model = "no_vocab"` and `--vocab`
//! tokens (512 unless given). The seed defaults to the variant's fixture seed. Prints the
//! spec as one JSON object, the form the fixtures record it in.
#[path = "../tests/common/tiny.rs"]
mod tiny;

use ferrolm_gguf::{GgmlType, GgufFile};
use tiny::{TinySpec, Variant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for v in Variant::ALL {
            println!("{} seed {}", v.name(), v.seed());
        }
        return Ok(());
    }
    let usage = "usage: tiny_model VARIANT OUT.gguf [--tokenizer MODEL.gguf] [--seed N] \
                 [--type TYPE] [--width N] [--vocab N] | tiny_model --list";
    let [variant, out, options @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let variant =
        Variant::from_name(variant).ok_or_else(|| format!("unknown variant {variant}"))?;
    let mut spec = TinySpec::new(variant);
    let mut tokenizer = None;
    for pair in options.chunks(2) {
        let [flag, value] = pair else {
            return Err(usage.into());
        };
        match flag.as_str() {
            "--tokenizer" => tokenizer = Some(GgufFile::open(value)?),
            "--seed" => spec.seed = value.parse()?,
            "--type" => {
                spec.weight_type =
                    GgmlType::from_name(value).ok_or_else(|| format!("unknown type {value}"))?;
            }
            "--width" => spec.width = value.parse()?,
            "--vocab" => spec.vocab = value.parse()?,
            _ => return Err(usage.into()),
        }
    }
    let source = tokenizer.as_ref().map(GgufFile::gguf).transpose()?;
    tiny::write(&spec, source.as_ref(), out)?;
    println!(
        r#"{{"variant": "{}", "seed": {}, "weight_type": "{}", "width": {}, "vocab": {}}}"#,
        variant.name(),
        spec.seed,
        spec.weight_type.name(),
        spec.width,
        match &source {
            Some(gguf) => gguf.get_array(ferrolm_gguf::keys::tokenizer::TOKENS)?.len(),
            None => spec.vocab,
        }
    );
    Ok(())
}
