//! The `ferry` binary's contract at its edges: exit codes and one-line
//! errors that say what to do. (Also makes Cargo build the binary for the
//! end-to-end tests in the `tests` crate.)

use std::io::Write;
use std::process::{Command, Stdio};

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

/// A home holding an org, so it can write.
fn home_with_org() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    assert!(ferry(dir.path(), &["init"]).status.success());
    assert!(ferry(dir.path(), &["org", "create", "District"]).status.success());
    dir
}

fn run_with_stdin(home: &std::path::Path, args: &[&str], stdin: Stdio) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(stdin)
        .output()
        .expect("run ferry")
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The instance the store continues; a store left unclean starts a fresh one.
fn instance(home: &std::path::Path) -> String {
    let out = ferry(home, &["--json", "id"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_of(&out)["instance_id"].as_str().expect("instance id").to_owned()
}

fn ndjson(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "{}\n",
                serde_json::json!({ "type": "result", "id": id, "partition": "results", "fields": { "score": 1 } })
            )
        })
        .collect()
}

/// Writes `text` to a pipe that a child reads as its stdin.
fn piped(text: &str) -> Stdio {
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    let text = text.to_owned();
    std::thread::spawn(move || writer.write_all(text.as_bytes()));
    Stdio::from(reader)
}

#[test]
fn import_from_stdin_writes_every_line() {
    let dir = home_with_org();
    for (path, ids) in [("-", ["a1", "a2"]), ("/dev/stdin", ["b1", "b2"])] {
        let out = run_with_stdin(dir.path(), &["--json", "import", path], piped(&ndjson(&ids)));
        assert!(out.status.success(), "import {path}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(json_of(&out)["written"], 2, "import {path}");
    }
    // /dev/stdin redirected from a file names that file.
    let file = dir.path().join("c.ndjson");
    std::fs::write(&file, ndjson(&["c1", "c2", "c3"])).expect("write");
    let out = run_with_stdin(
        dir.path(),
        &["--json", "import", "/dev/stdin"],
        Stdio::from(std::fs::File::open(&file).expect("open")),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["written"], 3);
    let listed = ferry(dir.path(), &["--json", "list"]);
    assert_eq!(json_of(&listed).as_array().expect("list").len(), 7);
}

#[test]
fn import_with_rejected_lines_fails_with_the_counts_and_the_reasons() {
    let dir = home_with_org();
    let lines = [
        r#"{"type":"result","id":"ok","partition":"results","fields":{"score":1}}"#,
        r#"{"type":"result","id":"typo","partition":"results","feilds":{"score":1}}"#,
        r#"not json"#,
    ];
    let out = run_with_stdin(dir.path(), &["--json", "import", "-"], piped(&format!("{}\n", lines.join("\n"))));
    assert!(!out.status.success(), "an import that rejected lines must fail");
    let counts = json_of(&out);
    assert_eq!((counts["written"].as_u64(), counts["rejected"].as_u64()), (Some(1), Some(2)), "{counts}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"line 2: unknown key "feilds""#), "{stderr}");
    assert!(stderr.contains("line 3: not JSON"), "{stderr}");
    assert!(stderr.lines().last().is_some_and(|l| l.starts_with("ferry: 2 lines were rejected")), "{stderr}");
    // Every line rejected: still a failure, the text output keeps the counts.
    let out = run_with_stdin(dir.path(), &["import", "-"], piped("[1]\n"));
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "written 0, unchanged 0, rejected 1\n");
}

#[test]
fn import_accepts_a_byte_order_mark_and_a_record_as_get_prints_it() {
    let dir = home_with_org();
    assert!(ferry(dir.path(), &["put", "result", "r1", "--partition", "results", "--set", "score=1"]).status.success());
    let got = ferry(dir.path(), &["--json", "get", "result", "r1"]);
    let mut record = json_of(&got);
    record["fields"]["score"] = serde_json::json!(2);
    let text = format!("\u{feff}{record}\n{}", ndjson(&["r2"]));
    let out = run_with_stdin(dir.path(), &["--json", "import", "-"], piped(&text));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["written"], 2);
    let got = ferry(dir.path(), &["--json", "get", "result", "r1"]);
    assert_eq!(json_of(&got)["fields"]["score"], 2);
}

#[test]
fn export_into_a_closed_pipe_ends_quietly_and_closes_the_store() {
    let dir = home_with_org();
    let ids: Vec<String> = (0..200).map(|i| format!("r{i:03}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(run_with_stdin(dir.path(), &["import", "-"], piped(&ndjson(&ids))).status.success());
    let before = instance(dir.path());
    // The reader is gone before ferry writes a byte: every write fails.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--home")
        .arg(dir.path())
        .arg("export")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run ferry");
    assert!(out.status.success(), "exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "a closed stdout ends the command quietly");
    assert_eq!(instance(dir.path()), before, "the store was closed cleanly: the instance continues");
}

#[test]
fn export_onto_a_full_disk_is_a_one_line_error() {
    let dir = home_with_org();
    assert!(run_with_stdin(dir.path(), &["import", "-"], piped(&ndjson(&["a", "b"]))).status.success());
    let before = instance(dir.path());
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--home")
        .arg(dir.path())
        .arg("export")
        .stdout(full)
        .output()
        .expect("run ferry");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("ferry: cannot write the output: No space left on device"), "{stderr}");
    assert_eq!(instance(dir.path()), before, "the store was closed cleanly");
}

#[test]
fn progress_shows_off_a_terminal_only_when_asked_for() {
    let dir = home_with_org();
    for (args, shown) in [
        (vec!["import", "-"], false),
        (vec!["--json", "import", "-"], false),
        (vec!["--progress", "import", "-"], true),
    ] {
        let out = run_with_stdin(dir.path(), &args, piped(&ndjson(&["p1", "p2"])));
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.contains("progress: records 2/2"), shown, "{args:?}: {stderr:?}");
    }
}

#[test]
fn demo_with_json_says_it_has_no_json_output() {
    let dir = tempfile::tempdir().expect("dir");
    let out = ferry(dir.path(), &["--json", "demo"]);
    assert!(!out.status.success());
    assert_eq!(out.stdout, b"", "nothing that is not JSON on stdout");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "ferry: demo has no JSON output; run it without --json\n");
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
