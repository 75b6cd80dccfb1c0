//! Policy: only `src/cli`, `src/system` and `src/vmm` may spawn
//! processes, and nothing in `src/` runs a shell with `-c`. Every host side
//! effect then has one home (see DESIGN.md, "Code layout").

use std::path::{Path, PathBuf};

/// Modules allowed to spawn processes, relative to `src/`.
const MAY_SPAWN: &[&str] = &["cli", "system", "vmm"];

/// What spawning looks like in source.
const SPAWN_PATTERNS: &[&str] = &["process::Command", "Command::new", "std::process::{"];

/// What running a shell command string looks like.
const SHELL_PATTERNS: &[&str] = &[
    "\"sh\", \"-c\"",
    "\"bash\", \"-c\"",
    "\"/bin/sh\", \"-c\"",
    "sh -c",
    "bash -c",
];

/// Every violation under `src`, as `path:line: text`.
fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let may_spawn = rel
            .components()
            .next()
            .is_some_and(|c| MAY_SPAWN.iter().any(|m| c.as_os_str() == *m));
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let spawns = SPAWN_PATTERNS.iter().any(|p| code.contains(p))
                // `std::process::{...}` only matters when it brings in Command.
                && (!code.contains("std::process::{") || code.contains("Command"));
            if spawns && !may_spawn {
                found.push(format!(
                    "src/{}:{}: spawns a process: {code}",
                    rel.display(),
                    i + 1
                ));
            }
            if SHELL_PATTERNS.iter().any(|p| code.contains(p)) {
                found.push(format!(
                    "src/{}:{}: runs a shell: {code}",
                    rel.display(),
                    i + 1
                ));
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn only_cli_firecracker_and_system_spawn_processes() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "spawn boundary broken (move the call into src/system as a typed function):\n{}",
        found.join("\n")
    );
}

/// A source tree holding `files`: (path in the tree, contents).
fn source_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = tree.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    tree
}

/// Asserts the check finds in `tree` exactly the violations starting with
/// `expected`, in order.
fn assert_violations(tree: &Path, expected: &[&str]) {
    let found = violations(tree);
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (found_one, start) in found.iter().zip(expected) {
        assert!(found_one.starts_with(start), "{found:#?}");
    }
}

#[test]
fn the_check_catches_a_command_in_the_store() {
    let tree = source_tree(&[
        (
            "store/mod.rs",
            "use std::process::Command;\nfn f() { let _ = tokio::process::Command::new(\"ip\"); }\n",
        ),
        (
            "system/exec.rs",
            "fn f() { std::process::Command::new(\"ip\"); }\n",
        ),
        (
            "lib.rs",
            "// a comment about Command::new is fine\nuse std::process::{ExitCode};\n",
        ),
    ]);

    assert_violations(
        tree.path(),
        &[
            "src/store/mod.rs:1: spawns a process",
            "src/store/mod.rs:2: spawns a process",
        ],
    );
}

#[test]
fn the_check_catches_a_shell_anywhere() {
    let tree = source_tree(&[(
        "system/exec.rs",
        "fn f() { run(&[\"sh\", \"-c\", \"ip link\"]); }\n",
    )]);
    assert_violations(tree.path(), &["src/system/exec.rs:1: runs a shell"]);
}
