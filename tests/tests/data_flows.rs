//! The seeds' data flows (SPEC §6.2) with real `ferry` processes on
//! 127.0.0.1: per-peer type rules, the purge after a scope shrinks, local
//! fields and send-when-finished.

use tests::cli::Home;

fn org(central: &Home) -> String {
    central.json(&["org", "create", "Lab network", "--authority", "master"])["org_id"]
        .as_str()
        .expect("org id")
        .to_owned()
}

/// Enrols `device` with a token reading `read` and writing `write`.
fn enrol(central: &Home, device: &Home, read: &str, write: &str, extra: &[&str]) {
    let mut args = vec!["enroll", "token", "--read", read];
    if !write.is_empty() {
        args.extend(["--write", write]);
    }
    args.extend_from_slice(extra);
    let token = central.json(&args)["token"].as_str().expect("token").to_owned();
    device.json(&["enroll", &token]);
}

fn sync(device: &Home, address: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["sync", address];
    args.extend_from_slice(extra);
    device.json(&args)
}

/// The ids `home` lists, sorted.
fn ids(home: &Home) -> Vec<String> {
    let list = home.json(&["list"]);
    let mut ids: Vec<String> =
        list.as_array().expect("list").iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect();
    ids.sort();
    ids
}

#[test]
fn type_rules_narrow_a_sync_both_ways_and_what_they_left_out_comes_later() {
    let root = tempfile::tempdir().expect("dir");
    let m = Home::init(root.path(), "m");
    org(&m);
    let server = m.serve();
    let a = Home::init(root.path(), "a");
    enrol(&m, &a, "lab-a", "lab-a", &[]);
    for (t, id) in [("sample", "s1"), ("analysis", "an1"), ("client", "c1")] {
        m.ok(&["put", t, id, "--partition", "lab-a", "--set", "v=1"]);
    }
    a.ok(&["put", "note", "n1", "--partition", "lab-a", "--set", "v=1"]);

    let only = sync(&a, &server.address, &["--types", "sample,analysis"]);
    assert_eq!((only["received"].as_u64(), only["sent"].as_u64()), (Some(2), Some(0)), "{only}");
    assert_eq!(ids(&a), ["an1", "n1", "s1"], "only the named types came, and the note stayed");
    assert_eq!(ids(&m), ["an1", "c1", "s1"]);

    // The types left out still count as unsynced: skipping analysis brings
    // the client and sends the note, and nothing of analysis moves.
    m.ok(&["put", "analysis", "an2", "--partition", "lab-a", "--set", "v=1"]);
    let skip = sync(&a, &server.address, &["--skip-types", "analysis"]);
    assert_eq!((skip["received"].as_u64(), skip["sent"].as_u64()), (Some(1), Some(1)), "{skip}");
    assert_eq!(ids(&a), ["an1", "c1", "n1", "s1"]);
    assert_eq!(ids(&m), ["an1", "an2", "c1", "n1", "s1"]);

    // A sync with no rules brings what the rules held back.
    let all = sync(&a, &server.address, &[]);
    assert_eq!(all["received"], 1, "{all}");
    assert_eq!(ids(&a), ["an1", "an2", "c1", "n1", "s1"]);

    // Rules never widen a scope: naming a type of another lab brings nothing.
    m.ok(&["put", "sample", "b1", "--partition", "lab-b", "--set", "v=1"]);
    let wider = sync(&a, &server.address, &["--types", "sample"]);
    assert_eq!(wider["received"], 0, "{wider}");
    assert!(!ids(&a).contains(&"b1".to_owned()));

    // Bad rules get one line that says what to do.
    let bad = a.fails(&["sync", &server.address, "--types", "sample", "--skip-types", "sample"]);
    assert!(bad.contains("sample is both"), "{bad}");
    let bad = a.fails(&["sync", &server.address, "--types", "bad type"]);
    assert!(bad.contains("is not a record type"), "{bad}");
    server.stop();
}

#[test]
fn the_profile_syncs_whatever_the_type_rules_say() {
    let root = tempfile::tempdir().expect("dir");
    let m = Home::init(root.path(), "m");
    org(&m);
    let server = m.serve();
    let a = Home::init(root.path(), "a");
    enrol(&m, &a, "lab-a", "lab-a", &[]);
    m.ok(&["profile", "set", "sample", "--policy", "authority:master"]);
    m.ok(&["put", "sample", "s1", "--partition", "lab-a", "--set", "v=1"]);
    let only = sync(&a, &server.address, &["--types", "analysis"]);
    assert_eq!(only["received"], 1, "the profile only: {only}");
    let shown = a.json(&["profile", "show"]);
    assert_eq!(shown[0]["type"], "sample", "{shown}");
    assert_eq!(shown[0]["policy"], "authority:master", "{shown}");
    assert_eq!(ids(&a), ["profile"], "the profile record, and no sample");
    server.stop();
}

#[test]
fn a_peer_entry_with_types_narrows_its_automatic_syncs() {
    let root = tempfile::tempdir().expect("dir");
    let m = Home::init(root.path(), "m");
    org(&m);
    let server = m.serve();
    let a = Home::init(root.path(), "a");
    enrol(&m, &a, "lab-a", "lab-a", &[]);
    m.ok(&["put", "sample", "s1", "--partition", "lab-a", "--set", "v=1"]);
    m.ok(&["put", "client", "c1", "--partition", "lab-a", "--set", "v=1"]);

    a.configure(&format!(
        "[[peers]]\nname = \"m\"\naddress = \"{}\"\nsync_every = \"1s\"\ntypes = []\n",
        server.address
    ));
    let refused = a.fails(&["status"]);
    assert!(refused.contains("names none"), "an empty list of types is refused at load: {refused}");

    a.configure(&format!(
        "[[peers]]\nname = \"m\"\naddress = \"{}\"\nsync_every = \"1s\"\nskip_types = [\"client\"]\n",
        server.address
    ));
    let device = a.serve();
    let synced = device.wait_until("auto_synced", |e| e["event"] == "auto_synced");
    assert_eq!(synced["received"], 1, "{synced}");
    device.stop();
    assert_eq!(ids(&a), ["s1"]);
    server.stop();
}

#[test]
fn a_bundle_for_a_peer_after_a_narrowed_sync_carries_the_types_that_sync_left_out() {
    let root = tempfile::tempdir().expect("dir");
    let m = Home::init(root.path(), "m");
    org(&m);
    let server = m.serve();
    let a = Home::init(root.path(), "a");
    enrol(&m, &a, "lab-a", "lab-a", &[]);
    a.ok(&["put", "sample", "s1", "--partition", "lab-a", "--set", "v=1"]);
    a.ok(&["put", "note", "n1", "--partition", "lab-a", "--set", "v=1"]);
    let only = sync(&a, &server.address, &["--types", "sample"]);
    assert_eq!(only["sent"], 1, "{only}");
    server.stop();
    // What the device remembers of the central's frontier covers only the
    // types that sync moved: the note still goes in a bundle for it.
    let bundle = root.path().join("to-m.bundle");
    let exported = a.json(&["bundle", "export", "--out", bundle.to_str().expect("path"), "--for", &m.peer_id()]);
    assert_eq!(exported["changes"], 1, "the note only: {exported}");
    m.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!(ids(&m), ["n1", "s1"]);
}
