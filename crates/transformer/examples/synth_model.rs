//! Writes models with a real model's shapes, types and hyperparameters and random weights,
//! for measuring speed where the real file cannot go.
//!
//! `synth_model spec REAL.gguf SPEC.gguf` keeps only the architecture metadata and the list
//! of tensors (a few KiB); `synth_model spec-vocab REAL.gguf SPEC.gguf` keeps the tokenizer
//! too (about 2 MiB for a 50k vocabulary), for runs that need text in and out, such as a
//! server under load. `synth_model write SPEC.gguf OUT.gguf` writes the full-size model, with
//! the spec's tokenizer or, without one, `tokenizer.ggml.model = "no_vocab"`.
use ferrolm_gguf::keys::general;
use ferrolm_gguf::{GgmlType, GgufFile, GgufWriter, OwnedMetadataValue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, input, output] = args.as_slice() else {
        return Err("usage: synth_model spec|spec-vocab|write IN.gguf OUT.gguf".into());
    };
    let keep_vocab = mode == "spec-vocab" || mode == "write";
    let file = GgufFile::open(input)?;
    let gguf = file.gguf()?;
    let arch = gguf.architecture()?;
    let mut w = GgufWriter::new();
    for (key, value) in gguf.metadata() {
        if key.starts_with(&format!("{arch}."))
            || *key == general::ARCHITECTURE
            || key.starts_with("synth.")
            || (keep_vocab && key.starts_with("tokenizer."))
        {
            w.add_metadata(key, OwnedMetadataValue::from(value));
        }
    }
    if mode.starts_with("spec") {
        for (i, t) in gguf.tensors().iter().enumerate() {
            let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
            w.add_metadata(&format!("synth.{i}.name"), t.name);
            w.add_metadata(&format!("synth.{i}.dims"), dims.join(",").as_str());
            w.add_metadata(&format!("synth.{i}.type"), t.ty.id());
        }
        w.add_metadata("synth.count", gguf.tensors().len() as u32);
    } else {
        if gguf.get_str("tokenizer.ggml.model").is_err() {
            w.add_metadata("tokenizer.ggml.model", "no_vocab");
        }
        let n = gguf.get_u32("synth.count")? as usize;
        for i in 0..n {
            let name = gguf.get_str(&format!("synth.{i}.name"))?;
            let dims: Vec<u64> = gguf
                .get_str(&format!("synth.{i}.dims"))?
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            let ty = GgmlType::from_id(gguf.get_u32(&format!("synth.{i}.type"))?).ok_or("type")?;
            let cols = dims[0] as usize;
            let rows: usize = dims[1..].iter().product::<u64>() as usize;
            // Norm weights near 1, matrices small and varied; one quantized row repeated.
            let row: Vec<f32> = (0..cols)
                .map(|j| {
                    if rows == 1 {
                        1.0
                    } else {
                        ((j * 7919 + i * 104_729) % 1000) as f32 / 1000.0 - 0.5
                    }
                })
                .map(|x| x * 0.1)
                .collect();
            let mut bytes = vec![0u8; ferrolm_quant::row_size(ty, cols)?];
            ferrolm_quant::quantize_row(ty, &row, &mut bytes)?;
            let data: Vec<u8> = bytes
                .iter()
                .copied()
                .cycle()
                .take(bytes.len() * rows)
                .collect();
            w.add_tensor(name, &dims, ty, data)?;
        }
    }
    w.write_file(output)?;
    Ok(())
}
