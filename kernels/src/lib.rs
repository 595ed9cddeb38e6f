//! The CUDA C sources of ferrolm's GPU kernels.
//!
//! Each [`KernelModule`] is one `.cu` file of the crate's `cuda/` folder (one family of
//! operations) together with the names of the `extern "C"` kernels it defines. The sources
//! include the shared header [`COMMON`]; [`KernelModule::full_source`] splices it in, which
//! gives the text to hand to NVRTC. [`KernelModule::hash`] identifies a module's text
//! (header included) so compiled code can be cached on disk and found again.
//!
//! ```
//! let q4_0 = ferrolm_kernels::module("q4_0").expect("q4_0 is a module");
//! assert!(q4_0.kernels.contains(&"matvec_q4_0"));
//! let source = q4_0.full_source();
//! assert!(source.contains("QUANT_KERNELS(q4_0, BlockQ4_0)"));
//! assert!(!source.contains("#include"));
//! assert_ne!(q4_0.hash(), ferrolm_kernels::module("q8_0").unwrap().hash());
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// The header every module includes: type aliases, half-precision conversions, warp
/// reductions, and the generic quantized matvec and dequantization templates.
pub const COMMON: &str = include_str!("../cuda/common.cuh");

/// The line by which a module includes [`COMMON`].
pub const INCLUDE_COMMON: &str = "#include \"common.cuh\"";

/// One `.cu` file: a family of kernels compiled together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelModule {
    /// Short name, also the file stem (`q4_k` for `cuda/q4_k.cu`).
    pub name: &'static str,
    /// The file's text, still including [`COMMON`] by [`INCLUDE_COMMON`].
    pub source: &'static str,
    /// Names of the `extern "C"` kernels it defines.
    pub kernels: &'static [&'static str],
}

impl KernelModule {
    /// The self-contained text for NVRTC: the module with the shared header in place of its
    /// include line.
    pub fn full_source(&self) -> String {
        self.source.replacen(INCLUDE_COMMON, COMMON, 1)
    }

    /// 64-bit FNV-1a hash of the shared header and the module's text, stable across builds
    /// and platforms.
    pub const fn hash(&self) -> u64 {
        fnv1a(self.source.as_bytes(), fnv1a(COMMON.as_bytes(), FNV_OFFSET))
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

macro_rules! quant_module {
    ($name:literal) => {
        KernelModule {
            name: $name,
            source: include_str!(concat!("../cuda/", $name, ".cu")),
            kernels: &[
                concat!("matvec_", $name),
                concat!("matvec3_", $name),
                concat!("matvec_experts_", $name),
                concat!("get_rows_", $name, "_f32"),
                concat!("get_rows_", $name, "_f16"),
            ],
        }
    };
}

/// Every module, weight types first.
pub const MODULES: &[KernelModule] = &[
    quant_module!("f32"),
    quant_module!("f16"),
    quant_module!("q4_0"),
    quant_module!("q4_1"),
    quant_module!("q5_0"),
    quant_module!("q8_0"),
    quant_module!("q4_k"),
    quant_module!("q6_k"),
    quant_module!("bf16"),
    quant_module!("q5_1"),
    quant_module!("q2_k"),
    quant_module!("q3_k"),
    quant_module!("q5_k"),
    quant_module!("iq4_nl"),
    quant_module!("iq4_xs"),
    KernelModule {
        name: "quantize",
        source: include_str!("../cuda/quantize.cu"),
        kernels: &["quantize_q8"],
    },
    KernelModule {
        name: "rmsnorm",
        source: include_str!("../cuda/rmsnorm.cu"),
        kernels: &["rmsnorm_f32"],
    },
    KernelModule {
        name: "rope",
        source: include_str!("../cuda/rope.cu"),
        kernels: &["rope_f32", "rope_qk_f32", "qk_norm_rope_f32"],
    },
    KernelModule {
        name: "elementwise",
        source: include_str!("../cuda/elementwise.cu"),
        kernels: &[
            "add_f32",
            "mul_f32",
            "scale_f32",
            "swiglu_f32",
            "geglu_f32",
            "convert_f32_f16",
            "copy_rows_f32",
            "softcap_f32",
            "add_bias_f32",
            "copy_rows_f16",
            "scatter_rows_f32",
        ],
    },
    KernelModule {
        name: "attention",
        source: include_str!("../cuda/attention.cu"),
        kernels: &[
            "kv_append",
            "attn_split_d64_g4",
            "attn_split_d64_g8",
            "attn_split_d128_g4",
            "attn_split_d128_g8",
            "attn_split_d256_g4",
            "attn_split_d256_g8",
            "attn_combine",
        ],
    },
    KernelModule {
        name: "fused",
        source: include_str!("../cuda/fused.cu"),
        kernels: &["rmsnorm_q8", "glu_q8"],
    },
    KernelModule {
        name: "moe",
        source: include_str!("../cuda/moe.cu"),
        kernels: &["moe_route", "moe_combine"],
    },
    KernelModule {
        name: "argmax",
        source: include_str!("../cuda/argmax.cu"),
        kernels: &["argmax_f32"],
    },
];

/// Hash of all sources together; changes whenever any kernel text changes.
pub const SOURCE_HASH: u64 = {
    let mut h = fnv1a(COMMON.as_bytes(), FNV_OFFSET);
    let mut i = 0;
    while i < MODULES.len() {
        h = fnv1a(MODULES[i].source.as_bytes(), h);
        i += 1;
    }
    h
};

/// The module called `name`, if there is one.
pub fn module(name: &str) -> Option<&'static KernelModule> {
    MODULES.iter().find(|m| m.name == name)
}

/// The module that defines kernel `kernel`, if any.
pub fn module_of(kernel: &str) -> Option<&'static KernelModule> {
    MODULES.iter().find(|m| m.kernels.contains(&kernel))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kernel_is_defined_in_its_module() {
        for m in MODULES {
            let src = m.full_source();
            for k in m.kernels {
                let defined = src.contains(&format!("void {k}("))
                    || src.contains("void __launch_bounds__(MV_THREADS)")
                        && src.contains(&format!("QUANT_KERNELS({}, ", m.name))
                    || k.starts_with("attn_split_d") && {
                        // attn_split_d128_g4 comes from ATTN_SPLIT_KERNEL(128, 4, 4)
                        let rest = &k["attn_split_d".len()..];
                        let (d, g) = rest.split_once("_g").unwrap();
                        let dpl = d.parse::<u32>().unwrap() / 32;
                        src.contains(&format!("ATTN_SPLIT_KERNEL({d}, {dpl}, {g})"))
                    };
                assert!(defined, "{k} not defined in {}", m.name);
            }
        }
    }

    #[test]
    fn every_defined_kernel_is_listed() {
        for m in MODULES {
            for piece in m.source.split("extern \"C\" __global__ void ").skip(1) {
                let name = piece.split('(').next().unwrap().trim();
                if name == "__launch_bounds__" {
                    continue; // macro-generated names, checked against the list above
                }
                assert!(
                    m.kernels.contains(&name),
                    "{name} of {} is not listed",
                    m.name
                );
            }
        }
    }

    #[test]
    fn every_cu_file_is_a_module() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/cuda");
        let mut stems: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "cu")
                    .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        stems.sort();
        let mut names: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
        names.sort_unstable();
        assert_eq!(stems, names);
    }

    #[test]
    fn full_source_splices_the_header_once() {
        for m in MODULES {
            assert!(
                m.source.contains(INCLUDE_COMMON),
                "{} lacks the include",
                m.name
            );
            let src = m.full_source();
            assert!(!src.contains(INCLUDE_COMMON));
            assert_eq!(
                src.matches("__device__ __forceinline__ float h2f").count(),
                1
            );
        }
    }

    #[test]
    fn hashes_are_distinct_and_follow_the_text() {
        let mut hashes: Vec<u64> = MODULES.iter().map(KernelModule::hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), MODULES.len());
        let q4 = module("q4_0").unwrap();
        let mut changed = *q4;
        let edited = format!("{} ", q4.source);
        changed.source = Box::leak(edited.into_boxed_str());
        assert_ne!(changed.hash(), q4.hash());
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn kernel_names_are_unique_and_found() {
        let mut all: Vec<&str> = MODULES
            .iter()
            .flat_map(|m| m.kernels.iter().copied())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(module_of("attn_combine").unwrap().name, "attention");
        assert!(module_of("nope").is_none());
        assert_ne!(SOURCE_HASH, 0);
    }
}
