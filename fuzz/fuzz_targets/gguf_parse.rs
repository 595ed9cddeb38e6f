//! The GGUF reader on arbitrary bytes: `Gguf::parse` returns an error or a file whose every
//! accessor works, and a file it accepts survives a round trip through `GgufWriter`.
#![no_main]

use ferrolm_gguf::keys::ArchKey;
use ferrolm_gguf::{Gguf, GgufWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(data) else {
        return;
    };
    for (key, value) in gguf.metadata() {
        let _ = value.to_string();
        let found = gguf.get(key).is_some_and(|v| std::ptr::eq(v, value));
        assert!(found, "the index finds every key");
        let _ = (gguf.get_u32(key), gguf.get_u64(key), gguf.get_i64(key));
        let _ = (gguf.get_f32(key), gguf.get_f64(key));
        let _ = (gguf.get_bool(key), gguf.get_str(key), gguf.get_array(key));
        if let Some(array) = value.as_array() {
            let _ = (array.len(), array.element_type(), array.get_i64(0));
        }
    }
    if let Ok(key) = gguf.arch_key(ArchKey::ContextLength) {
        let _ = gguf.get_u32(&key);
    }
    for view in gguf.tensor_views() {
        assert_eq!(gguf.tensor(view.name).as_ref(), Some(&view));
        let _ = (view.n_elements(), view.n_rows(), view.row_bytes());
        let _ = (view.row(0), view.row(usize::MAX));
    }

    let writer = GgufWriter::from_gguf(&gguf).expect("a parsed file's tensors are valid");
    let mut bytes = Vec::new();
    writer
        .write_to(&mut bytes)
        .expect("a parsed file can be written");
    let again = Gguf::parse(&bytes).expect("a written file parses");
    // Debug strings compare NaN metadata values too.
    assert_eq!(
        format!("{:?}", gguf.metadata()),
        format!("{:?}", again.metadata()),
        "metadata survives the round trip"
    );
    assert_eq!(gguf.alignment(), again.alignment());
    let views: Vec<_> = gguf.tensor_views().collect();
    let views_again: Vec<_> = again.tensor_views().collect();
    assert_eq!(views, views_again, "tensors survive the round trip");
});
