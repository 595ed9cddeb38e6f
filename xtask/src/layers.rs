//! The layer rule (the diagram in README.md): each ferrolm crate may depend only on the crates
//! below it in the diagram, checked over `cargo metadata`.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The binary crate at the top: it may depend on every library crate.
const TOP: &str = "ferrolm";

/// Each library crate with the ferrolm crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("ferrolm-gguf", &[]),
    ("ferrolm-quant", &["ferrolm-gguf"]),
    ("ferrolm-tokenizer", &["ferrolm-gguf"]),
    ("ferrolm-sampling", &[]),
    ("ferrolm-kvcache", &[]),
    ("ferrolm-kernels", &[]),
    (
        "ferrolm-grammar",
        &["ferrolm-gguf", "ferrolm-tokenizer", "ferrolm-sampling"],
    ),
    (
        "ferrolm-transformer",
        &[
            "ferrolm-gguf",
            "ferrolm-quant",
            "ferrolm-tokenizer",
            "ferrolm-sampling",
            "ferrolm-kvcache",
            "ferrolm-kernels",
        ],
    ),
    (
        "ferrolm-analysis",
        &[
            "ferrolm-gguf",
            "ferrolm-quant",
            "ferrolm-tokenizer",
            "ferrolm-sampling",
            "ferrolm-kvcache",
            "ferrolm-kernels",
            "ferrolm-transformer",
        ],
    ),
    (
        "ferrolm-engine",
        &[
            "ferrolm-gguf",
            "ferrolm-quant",
            "ferrolm-tokenizer",
            "ferrolm-sampling",
            "ferrolm-kvcache",
            "ferrolm-kernels",
            "ferrolm-transformer",
            "ferrolm-analysis",
        ],
    ),
];

fn is_project_crate(name: &str) -> bool {
    name == TOP || name == "xtask" || name.starts_with("ferrolm-")
}

fn allowed_for(name: &str) -> Option<&'static [&'static str]> {
    ALLOWED
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, deps)| *deps)
}

/// Reads `cargo metadata` of the workspace at `root`.
pub fn workspace_metadata(cargo: &str, root: &Path) -> Result<Value> {
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .with_context(|| format!("cannot run `{cargo} metadata`"))?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("`cargo metadata` printed invalid JSON")
}

/// Every dependency edge that breaks the layer rule, as a sentence each.
pub fn violations(metadata: &Value) -> Result<Vec<String>> {
    let packages = metadata["packages"]
        .as_array()
        .context("`cargo metadata` output has no `packages` array")?;
    let mut found = Vec::new();
    for package in packages {
        let name = package["name"]
            .as_str()
            .context("a package in `cargo metadata` has no name")?;
        if !is_project_crate(name) {
            continue;
        }
        let allowed = allowed_for(name);
        if name != TOP && name != "xtask" && allowed.is_none() {
            found.push(format!(
                "{name} is not in the layer table of xtask (add it where the layer diagram of README.md puts it)"
            ));
            continue;
        }
        let deps = package["dependencies"]
            .as_array()
            .with_context(|| format!("package {name} has no `dependencies` array"))?;
        for dep in deps {
            let dep_name = dep["name"]
                .as_str()
                .with_context(|| format!("a dependency of {name} has no name"))?;
            if !is_project_crate(dep_name) {
                continue;
            }
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let ok = match name {
                TOP => dep_name != TOP && dep_name != "xtask",
                "xtask" => false,
                _ => allowed.is_some_and(|deps| deps.contains(&dep_name)),
            };
            if !ok {
                found.push(format!(
                    "{name} has a {kind} dependency on {dep_name}, which is not below it in the layer diagram of README.md"
                ));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, deps: &[(&str, Option<&str>)]) -> Value {
        let deps: Vec<Value> = deps
            .iter()
            .map(|(dep, kind)| json!({ "name": dep, "kind": kind }))
            .collect();
        json!({ "name": name, "dependencies": deps })
    }

    fn metadata(packages: &[Value]) -> Value {
        json!({ "packages": packages })
    }

    #[test]
    fn the_designed_graph_has_no_violations() {
        let meta = metadata(&[
            package("ferrolm-gguf", &[("memmap2", None), ("thiserror", None)]),
            package("ferrolm-quant", &[("ferrolm-gguf", None)]),
            package("ferrolm-tokenizer", &[("ferrolm-gguf", None)]),
            package(
                "ferrolm-transformer",
                &[
                    ("ferrolm-quant", None),
                    ("ferrolm-kernels", None),
                    ("ferrolm-sampling", Some("dev")),
                ],
            ),
            package("ferrolm-analysis", &[("ferrolm-transformer", None)]),
            package(
                "ferrolm-engine",
                &[("ferrolm-analysis", None), ("ferrolm-transformer", None)],
            ),
            package(
                "ferrolm",
                &[
                    ("ferrolm-engine", None),
                    ("ferrolm-analysis", None),
                    ("ferrolm-gguf", Some("dev")),
                ],
            ),
            package("xtask", &[("anyhow", None)]),
        ]);
        assert_eq!(violations(&meta).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn an_upward_dependency_is_reported() {
        let meta = metadata(&[package("ferrolm-gguf", &[("ferrolm-quant", None)])]);
        let found = violations(&meta).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("ferrolm-gguf has a normal dependency on ferrolm-quant"));
    }

    #[test]
    fn a_sibling_dependency_is_reported_even_for_dev_dependencies() {
        let meta = metadata(&[package(
            "ferrolm-sampling",
            &[("ferrolm-tokenizer", Some("dev"))],
        )]);
        let found = violations(&meta).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("dev dependency on ferrolm-tokenizer"));
    }

    #[test]
    fn nothing_may_depend_on_the_binary_or_xtask() {
        let meta = metadata(&[
            package("ferrolm-analysis", &[("ferrolm", None)]),
            package("ferrolm", &[("xtask", None)]),
            package("xtask", &[("ferrolm-gguf", None)]),
        ]);
        assert_eq!(violations(&meta).unwrap().len(), 3);
    }

    #[test]
    fn a_crate_missing_from_the_table_is_reported() {
        let meta = metadata(&[package("ferrolm-server", &[])]);
        let found = violations(&meta).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("ferrolm-server is not in the layer table"));
    }

    #[test]
    fn the_workspace_follows_the_layer_rule() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let meta = workspace_metadata(&cargo, &crate::workspace_root()).unwrap();
        let names: Vec<&str> = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"xtask"), "cargo metadata lists {names:?}");
        let found = violations(&meta).unwrap();
        assert!(found.is_empty(), "layer violations:\n{}", found.join("\n"));
    }
}
