//! The `ferry` binary's contract at its edges: exit codes and one-line
//! errors that say what to do. (Also makes Cargo build the binary for the
//! end-to-end tests in the `tests` crate.)

use std::process::Command;

fn ferry(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry")).arg("--home").arg(home).args(args).output().expect("run ferry")
}

#[test]
fn commands_on_an_uninitialised_home_fail_with_one_line_saying_what_to_do() {
    let dir = tempfile::tempdir().expect("dir");
    let out = ferry(&dir.path().join("nothing"), &["list"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("run `ferry init`"), "{stderr}");
}

#[test]
fn a_node_without_a_certificate_is_told_how_to_get_one() {
    let dir = tempfile::tempdir().expect("dir");
    assert!(ferry(dir.path(), &["init"]).status.success());
    let out = ferry(dir.path(), &["put", "result", "r1", "--partition", "results", "--set", "a=1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ferry enroll") && stderr.contains("ferry cert import"), "{stderr}");
    let out = ferry(dir.path(), &["init"]);
    assert!(!out.status.success(), "init twice must fail");
}

/// An absurd validity is capped by the issuer's own validity, never a
/// panic: `--days u64::MAX` once overflowed the seconds it turns into.
#[test]
fn an_absurd_certificate_lifetime_is_capped_not_a_crash() {
    let dir = tempfile::tempdir().expect("dir");
    let (central, device) = (dir.path().join("central"), dir.path().join("device"));
    for home in [&central, &device] {
        assert!(ferry(home, &["init"]).status.success());
    }
    assert!(ferry(&central, &["org", "create", "District"]).status.success());
    let id = ferry(&device, &["--json", "id"]);
    let id: serde_json::Value = serde_json::from_slice(&id.stdout).expect("id json");
    let subject = id["peer_id"].as_str().expect("peer id");
    let max = u64::MAX.to_string();
    let pem = dir.path().join("device.pem");
    let pem = pem.to_str().expect("utf-8 path");
    let out =
        ferry(&central, &["cert", "issue", "--subject", subject, "--read", "results", "--days", &max, "--out", pem]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The ```toml blocks of docs/guide.md, in order.
fn guide_toml_blocks() -> Vec<String> {
    let guide = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guide.md");
    let text = std::fs::read_to_string(&guide).expect("read docs/guide.md");
    text.split("```toml\n").skip(1).map(|rest| rest.split("```").next().expect("a closed block").to_owned()).collect()
}

/// `ferry init` once wrote `peers = []`, so appending the guide's
/// `[[peers]]` block gave "duplicate key". Every ferry.toml snippet of the
/// guide must work on a fresh home as the guide uses it: a `[[peers]]` block
/// appended to what init wrote, a whole file otherwise.
#[test]
fn the_guides_config_snippets_work_on_a_fresh_home() {
    let blocks = guide_toml_blocks();
    assert!(blocks.iter().any(|b| b.starts_with("[[peers]]")), "the guide shows a [[peers]] block to append");
    for block in blocks {
        let dir = tempfile::tempdir().expect("dir");
        assert!(ferry(dir.path(), &["init"]).status.success());
        let config = dir.path().join("ferry.toml");
        if block.starts_with("[[peers]]") {
            let mut file = std::fs::OpenOptions::new().append(true).open(&config).expect("open ferry.toml");
            std::io::Write::write_all(&mut file, block.as_bytes()).expect("append");
        } else {
            std::fs::write(&config, &block).expect("write ferry.toml");
        }
        let out = ferry(dir.path(), &["id"]);
        assert!(out.status.success(), "{block}\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A ferry.toml error is one line saying where and what, followed by the
/// offending line with a caret under the spot (not toml's multi-line text
/// squashed onto one line, which lost the caret).
#[test]
fn a_config_error_names_the_line_and_shows_it_with_a_caret() {
    let dir = tempfile::tempdir().expect("dir");
    assert!(ferry(dir.path(), &["init"]).status.success());
    std::fs::write(dir.path().join("ferry.toml"), "mdns = true\nwindow = [1\n").expect("write");
    let out = ferry(dir.path(), &["id"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("ferry: ") && lines[0].contains("ferry.toml is not valid: line 2, column 12"),
        "{stderr}"
    );
    assert_eq!(lines[1], "  2 | window = [1", "{stderr}");
    assert_eq!(lines[2], format!("    | {}^", " ".repeat(11)), "{stderr}");
    // Other errors stay on one line.
    std::fs::write(dir.path().join("ferry.toml"), "window = 3\n").expect("write");
    let out = ferry(dir.path(), &["id"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
