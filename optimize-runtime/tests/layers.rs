//! The dependency direction of docs/architecture.md, checked on the source: a module names
//! only modules of its own layer or below (outside tests and comments), and nothing calls a
//! `global()`.

use std::path::{Path, PathBuf};

/// Layers from the bottom; a module may use its own layer and those before it.
const LAYERS: &[&[&str]] = &[
    &["meta", "time"],
    &[
        "key", "codec", "policy", "flight", "stats", "predict", "spans",
    ],
    &["cache", "pool"],
    &["site"],
    &["registry"],
    &["monitor"],
    &["config"],
    &["runtime"],
    &["call", "task", "warm"],
    &["lib", "fuzz"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` tail.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 30, "found the sources");
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let Some(own) = layer_of(&top) else {
            panic!(
                "{} is in no layer; add it to LAYERS and docs/architecture.md",
                rel.display()
            );
        };
        let code = code(&std::fs::read_to_string(file).unwrap());
        assert!(
            !code.contains("global()"),
            "{} calls a global(); take what it needs as a parameter",
            rel.display()
        );
        for used in code.split("crate::").skip(1) {
            let module: String = used
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if layer_of(&module).is_some_and(|l| l > own) {
                upward.push(format!("{} uses crate::{module}", rel.display()));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports: {upward:#?}");
}
