//! The skip rule lives in one place: no other source file reads
//! `PHASE_REQUIRE_TOOLS` or prints its own "SKIPPED" (a second rule is how
//! tests came to skip silently where the suite promises to run them).
//! `cargo xtask`, which sets the variable, is the one other reader.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git" | "corpus" | "testkit") {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_other_file_has_a_skip_rule_of_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let setter = root.join("qemu/src/main.rs");
    let var = ["PHASE_REQUIRE", "_TOOLS"].concat();
    let skipped = ["SKIP", "PED"].concat();
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let reads_var = code.contains(&format!("\"{var}\"")) && *file != setter;
            let prints_skip = code.contains(&format!("\"{skipped}")) || code.contains("\"skipped:");
            if reads_var || prints_skip {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "skip rules outside phase-testkit:\n{}",
        offenders.join("\n")
    );
}
