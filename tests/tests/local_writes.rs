//! Whatever a node writes, its peers must be able to accept: every local
//! write path (put, import, resolve) runs the receivers' form check before a
//! change is made, with real `ferry` processes. Each case once poisoned a
//! partition or silently changed a value.

use tests::cli::Home;

/// An org on `central` and a device enrolled for `results:tc-1`, with the
/// central serving; returns the central's address.
fn central_and_device(root: &std::path::Path) -> (Home, Home, tests::cli::Server) {
    let central = Home::init(root, "central");
    central.json(&["org", "create", "Riverside", "--authority", "central"]);
    let server = central.serve();
    let device = Home::init(root, "device");
    let token = central.json(&["enroll", "token", "--read", "results:tc-1", "--write", "results:tc-1"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    device.json(&["enroll", &token]);
    (central, device, server)
}

/// `[[[…1…]]]` nested `depth` deep (a scalar is depth 1).
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1))
}

/// Runs `ferry --json import FILE` with these lines; returns the JSON it
/// printed and all it said (whatever its exit code: a rejection may make it
/// non-zero).
fn import(home: &Home, root: &std::path::Path, lines: &[String]) -> (serde_json::Value, String) {
    let path = root.join(format!("{}-import.ndjson", home.name));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write import file");
    let out = home.run(&["--json", "import", path.to_str().expect("utf-8 path")]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let printed =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("import printed no JSON ({e}): {said}"));
    (printed, said)
}

fn line(id: &str, field: &str, value: &str) -> String {
    format!(r#"{{"type":"result","id":"{id}","partition":"results:tc-1","fields":{{"{field}":{value}}}}}"#)
}

#[test]
fn a_value_nested_too_deep_is_refused_at_every_write_path_and_never_strands_a_partition() {
    let root = tempfile::tempdir().expect("dir");
    let (central, device, server) = central_and_device(root.path());
    // 32 levels is the limit and is kept; 33 is refused naming field and limit.
    device.ok(&["put", "result", "ok", "--partition", "results:tc-1", "--set", &format!("a={}", nested(32))]);
    let reason =
        device.fails(&["put", "result", "deep", "--partition", "results:tc-1", "--set", &format!("a={}", nested(33))]);
    assert!(reason.contains("\"a\"") && reason.contains("33") && reason.contains("32"), "{reason}");
    let (imported, _) = import(&device, root.path(), &[line("deep2", "b", &nested(40)), line("fine", "b", "1")]);
    assert_eq!((imported["written"].as_u64(), imported["rejected"].as_u64()), (Some(1), Some(1)), "{imported}");
    device.ok(&["put", "result", "ok", "--partition", "results:tc-1", "--set", "b=2"]);
    // Nothing poisoned: every read works and the device pushes all it holds.
    assert_eq!(device.json(&["list"]).as_array().expect("list").len(), 2);
    device.ok(&["export"]);
    let pushed = device.json(&["sync", &server.address]);
    assert_eq!(pushed["sent"], 3, "two changes to `ok` and one to `fine`: {pushed}");
    assert_eq!(pushed["rejected"], 0, "{pushed}");
    assert_eq!(
        central.json(&["get", "result", "ok"])["fields"]["a"],
        serde_json::from_str::<serde_json::Value>(&nested(32)).expect("json")
    );
    // The central refuses the same way, so it never fails a device's pull.
    let reason =
        central.fails(&["put", "result", "c", "--partition", "results:tc-1", "--set", &format!("a={}", nested(33))]);
    assert!(reason.contains("33"), "{reason}");
    let pulled = device.json(&["sync", &server.address]);
    assert_eq!(pulled["rejected"], 0, "{pulled}");
}

#[test]
fn a_record_over_the_size_limit_is_refused_locally_with_a_message() {
    let root = tempfile::tempdir().expect("dir");
    let (central, device, server) = central_and_device(root.path());
    let big = format!("\"{}\"", "x".repeat(2 * 1024 * 1024));
    let (imported, said) = import(&device, root.path(), &[line("big", "payload", &big), line("small", "payload", "1")]);
    assert_eq!((imported["written"].as_u64(), imported["rejected"].as_u64()), (Some(1), Some(1)), "{imported}");
    assert!(said.contains("1048576"), "the reason names the limit: {said}");
    assert!(said.contains("--attach FIELD=PATH"), "the reason points to blobs: {said}");
    // Through the serving central's local API the same (a command line
    // cannot carry 2 MiB, so import it there too).
    let (imported, _) = import(&central, root.path(), &[line("big", "payload", &big)]);
    assert_eq!((imported["written"].as_u64(), imported["rejected"].as_u64()), (Some(0), Some(1)), "{imported}");
    // Only what peers accept was made, so the push moves it and a second
    // sync has nothing to do.
    let pushed = device.json(&["sync", &server.address]);
    assert_eq!((pushed["sent"].as_u64(), pushed["rejected_by_peer"].as_u64()), (Some(1), Some(0)), "{pushed}");
    let again = device.json(&["sync", &server.address]);
    assert!(again["noop"].as_bool().expect("noop"), "{again}");
    assert!(central.json(&["list"]).as_array().expect("list").len() == 1, "{:?}", central.json(&["list"]));
}

#[test]
fn integers_beyond_64_bits_are_refused_never_rounded() {
    let root = tempfile::tempdir().expect("dir");
    let device = Home::init(root.path(), "device");
    device.json(&["org", "create", "Lab"]);
    let reason = device.fails(&["put", "sample", "s1", "--partition", "samples", "--set", "n=18446744073709551617"]);
    assert!(reason.contains("n") && reason.contains("18446744073709551617"), "{reason}");
    let reason = device.fails(&["put", "sample", "s1", "--partition", "samples", "--set", "n=9223372036854775808"]);
    assert!(reason.contains("9223372036854775808"), "{reason}");
    let path = root.path().join("big.ndjson");
    std::fs::write(
        &path,
        "{\"type\":\"sample\",\"id\":\"s2\",\"partition\":\"samples\",\"fields\":{\"n\":18446744073709551617}}\n",
    )
    .expect("write");
    let out = device.run(&["--json", "import", path.to_str().expect("utf-8")]);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("import json");
    assert_eq!((printed["written"].as_u64(), printed["rejected"].as_u64()), (Some(0), Some(1)), "{printed}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("fields.n"), "the reason names the field: {said}");
    // The extremes that fit are kept exactly.
    device.ok(&[
        "put",
        "sample",
        "s3",
        "--partition",
        "samples",
        "--set",
        "max=9223372036854775807",
        "--set",
        "min=-9223372036854775808",
    ]);
    let record = device.json(&["get", "sample", "s3"]);
    assert_eq!(record["fields"]["max"].as_i64(), Some(i64::MAX), "{record}");
    assert_eq!(record["fields"]["min"].as_i64(), Some(i64::MIN), "{record}");
    assert!(device.json(&["list"]).as_array().expect("list").len() == 1, "nothing else was written");
}

/// `ferry profile set` writes one type's policy, keeping what it is not
/// given; a policy with an unknown word is refused however it is written
/// (a typo once fell back to the default unseen); the profile syncs like
/// data, and a device shows the same policies.
#[test]
fn profile_set_and_show_and_a_policy_with_an_unknown_word_is_refused() {
    let root = tempfile::tempdir().expect("dir");
    let (central, device, server) = central_and_device(root.path());
    central.json(&["profile", "set", "result", "--policy", "authority:central"]);
    let set = central.json(&["profile", "set", "result", "--update-wins"]);
    assert_eq!(
        set,
        serde_json::json!({"type": "result", "policy": "authority:central", "delete": "update-wins", "local": [], "send_when": null, "evict_after_ack": null, "sealed": [], "readers": null})
    );
    let said = central.fails(&["profile", "set", "result", "--policy", "authority:central,update-wins"]);
    assert!(said.contains("--delete-wins or --update-wins"), "{said}");
    let said = central.fails(&["profile", "set", "result", "--policy", "newst"]);
    assert!(said.contains("unknown word \"newst\""), "{said}");
    let said = central.fails(&[
        "put",
        "ferry.profile",
        "profile",
        "--partition",
        "ferry",
        "--set",
        "sample=authority:lab,upate-wins",
    ]);
    assert!(said.contains("unknown word \"upate-wins\""), "{said}");
    let shown = central.json(&["profile", "show"]);
    assert_eq!(
        shown,
        serde_json::json!([{"type": "result", "policy": "authority:central", "delete": "update-wins", "local": [], "send_when": null, "evict_after_ack": null, "sealed": [], "readers": null}])
    );
    device.json(&["sync", &server.address]);
    assert_eq!(device.json(&["profile", "show"]), shown, "the profile syncs like data");
    let said = device.fails(&["profile", "set", "result", "--policy", "newest"]);
    assert!(said.contains("outside this node's write scope"), "only the whole org's writers set policies: {said}");
    server.stop();
}
