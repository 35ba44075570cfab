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
