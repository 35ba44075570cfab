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
