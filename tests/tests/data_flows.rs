//! The seeds' data flows (SPEC §6.2) with real `ferry` processes on
//! 127.0.0.1: per-peer type rules, the purge after a scope shrinks, local
//! fields, send-when-finished, and write-only types evicted once the
//! central acknowledged them.

use tests::cli::Home;

fn org(central: &Home) -> String {
    central.json(&["org", "create", "Lab network", "--authority", "master"])["org_id"]
        .as_str()
        .expect("org id")
        .to_owned()
}

/// Enrols `device` with a token reading `read` and writing `write`;
/// returns its certificate id.
fn enrol(central: &Home, device: &Home, read: &str, write: &str, extra: &[&str]) -> String {
    let mut args = vec!["enroll", "token", "--read", read];
    if !write.is_empty() {
        args.extend(["--write", write]);
    }
    args.extend_from_slice(extra);
    let token = central.json(&args)["token"].as_str().expect("token").to_owned();
    device.json(&["enroll", &token])["certificate_id"].as_str().expect("certificate id").to_owned()
}

/// Issues `device` a certificate reading `read` and writing `write`, valid
/// for `days` (more than the one it holds), and imports it there: the new
/// scope is in force.
fn reissue(central: &Home, device: &Home, read: &str, write: &str, days: &str) -> serde_json::Value {
    let pem = device.dir.join(format!("reissued-{}-{days}.pem", read.replace([':', ','], "-")));
    let pem = pem.to_str().expect("utf-8 path");
    let subject = device.peer_id();
    central.json(&[
        "cert",
        "issue",
        "--subject",
        &subject,
        "--read",
        read,
        "--write",
        write,
        "--days",
        days,
        "--out",
        pem,
    ]);
    device.json(&["cert", "import", pem])
}

/// Writes result `id` in results:tc-1 with `sets` (FIELD=VALUE each).
fn put_result(home: &Home, id: &str, sets: &[&str]) {
    let mut args = vec!["put", "result", id, "--partition", "results:tc-1"];
    for s in sets {
        args.extend(["--set", s]);
    }
    home.ok(&args);
}

/// The ledger entries of a purge after a scope shrank.
fn purges(home: &Home) -> Vec<serde_json::Value> {
    let history = home.json(&["history"]);
    history.as_array().expect("history").iter().filter(|e| e["via"] == "scope").cloned().collect()
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

#[test]
fn a_narrowed_device_purges_what_it_may_no_longer_read_and_gets_it_back_when_widened() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&central, &device, "results", "results:tc-1", &[]);
    let package = root.path().join("tc2-package.bin");
    std::fs::write(&package, vec![7u8; 300_000]).expect("write");
    central.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=1"]);
    let attach = format!("package={}", package.display());
    central.ok(&["put", "result", "r2", "--partition", "results:tc-2", "--attach", &attach]);
    central.ok(&["put", "result", "r3", "--partition", "results:tc-2", "--set", "score=3"]);
    sync(&device, &server.address, &[]);
    device.ok(&["put", "result", "mine", "--partition", "results:tc-1", "--set", "score=9"]);
    sync(&device, &server.address, &[]);
    assert_eq!(ids(&device), ["mine", "r1", "r2", "r3"]);
    assert_eq!(device.json(&["blob", "list"]).as_array().expect("list").len(), 1);

    // The centre is narrowed to tc-1: tc-2's records go, and the ledger says so.
    reissue(&central, &device, "results:tc-1", "results:tc-1", "3000");
    assert_eq!(ids(&device), ["mine", "r1"]);
    let missing = device.fails(&["get", "result", "r2"]);
    assert!(missing.contains("r2"), "{missing}");
    let entries = purges(&device);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["purged"], 2, "{entries:?}");
    let text = device.ok(&["history"]);
    assert!(text.contains("purged 2 records"), "{text}");
    // Its blob is no longer referenced: the gc removes it.
    let gc = device.json(&["blob", "gc"]);
    assert_eq!(gc["removed"], 1, "{gc}");
    // Opening again purges nothing more and says nothing more.
    assert_eq!(ids(&device), ["mine", "r1"]);
    assert_eq!(purges(&device).len(), 1);
    // Syncing within the narrow scope moves nothing of tc-2.
    let narrow = sync(&device, &server.address, &[]);
    assert_eq!(narrow["received"], 0, "{narrow}");

    // Widened again, the next sync brings tc-2 back: the purge left no
    // frontier claiming what the device no longer held.
    reissue(&central, &device, "results", "results:tc-1", "3600");
    let back = sync(&device, &server.address, &[]);
    assert_eq!(back["received"], 2, "{back}");
    assert_eq!(ids(&device), ["mine", "r1", "r2", "r3"]);
    assert_eq!(back["blobs_received"], 1, "{back}");
    server.stop();
}

#[test]
fn a_purge_keeps_what_was_written_here_and_no_peer_holds_yet() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&central, &device, "results", "results", &[]);
    central.ok(&["put", "result", "r2", "--partition", "results:tc-2", "--set", "score=2"]);
    sync(&device, &server.address, &[]);
    device.ok(&["put", "result", "unsent", "--partition", "results:tc-1", "--set", "score=9"]);
    central.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=1"]);
    // Moved to centre tc-2 before its last result left the device.
    reissue(&central, &device, "results:tc-2", "results:tc-2", "3000");
    assert_eq!(ids(&device), ["r2", "unsent"], "the unsent result stays");
    let entries = purges(&device);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let outcome = entries[0]["outcome"].as_str().expect("outcome");
    assert!(outcome.contains("kept 1 record ") && outcome.contains("written here"), "{outcome}");
    // Checking again keeps it and writes no second entry.
    assert_eq!(ids(&device), ["r2", "unsent"]);
    assert_eq!(purges(&device).len(), 1);
    server.stop();
}

/// A serving central (its org's authority `master`) and a device enrolled
/// with a token reading `read` and writing `write`.
fn central_and_device(
    root: &std::path::Path,
    read: &str,
    write: &str,
    extra: &[&str],
) -> (Home, tests::cli::Server, Home) {
    let central = Home::init(root, "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root, "device");
    enrol(&central, &device, read, write, extra);
    (central, server, device)
}

#[test]
fn a_pull_only_sync_proves_nothing_the_peer_holds_so_a_purge_keeps_the_unsent_result() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, device) = central_and_device(root.path(), "results", "results", &[]);
    central.ok(&["put", "result", "r2", "--partition", "results:tc-2", "--set", "score=2"]);
    sync(&device, &server.address, &[]);
    device.ok(&["put", "result", "unsent", "--partition", "results:tc-1", "--set", "score=9"]);
    // The device only fetches: its result stays with it alone.
    let pulled = sync(&device, &server.address, &["--pull-only"]);
    assert_eq!(pulled["sent"], 0, "{pulled}");
    reissue(&central, &device, "results:tc-2", "results:tc-2", "3000");
    assert_eq!(ids(&device), ["r2", "unsent"], "the unsent result stays");
    server.stop();
}

#[test]
fn a_bundle_for_a_peer_after_a_pull_only_sync_carries_what_that_sync_did_not_send() {
    let root = tempfile::tempdir().expect("dir");
    let (m, server, a) = central_and_device(root.path(), "lab-a", "lab-a", &[]);
    a.ok(&["put", "sample", "s1", "--partition", "lab-a", "--set", "v=1"]);
    sync(&a, &server.address, &[]);
    a.ok(&["put", "sample", "s2", "--partition", "lab-a", "--set", "v=2"]);
    let pulled = sync(&a, &server.address, &["--pull-only"]);
    assert_eq!(pulled["sent"], 0, "{pulled}");
    server.stop();
    let bundle = root.path().join("to-m.bundle");
    let exported = a.json(&["bundle", "export", "--out", bundle.to_str().expect("path"), "--for", &m.peer_id()]);
    assert_eq!(exported["changes"], 1, "s2, which no sync sent: {exported}");
    m.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!(ids(&m), ["s1", "s2"]);
}

#[test]
fn a_revoked_device_purges_the_org_but_its_unsent_writes() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    let cert = enrol(&central, &device, "results", "results:tc-1", &[]);
    central.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=1"]);
    central.ok(&["put", "result", "r2", "--partition", "results:tc-2", "--set", "score=2"]);
    device.ok(&["put", "result", "sent", "--partition", "results:tc-1", "--set", "score=8"]);
    sync(&device, &server.address, &[]);
    device.ok(&["put", "result", "unsent", "--partition", "results:tc-1", "--set", "score=9"]);
    server.stop();
    central.json(&["cert", "revoke", &cert]);
    // The revocation reaches the device on a USB stick.
    let bundle = root.path().join("revocation.bundle");
    central.json(&["bundle", "export", "--out", bundle.to_str().expect("path")]);
    device.json(&["bundle", "import", bundle.to_str().expect("path")]);
    // tc-2 goes; tc-1's results stay with the one no peer holds yet.
    let left = ids(&device);
    assert!(!left.contains(&"r2".to_owned()), "{left:?}");
    assert!(["r1", "sent", "unsent"].iter().all(|id| left.contains(&id.to_string())), "{left:?}");
    let entries = purges(&device);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["purged"], 1, "{entries:?}");
    assert!(entries[0]["outcome"].as_str().expect("outcome").contains("may no longer read the org"), "{entries:?}");
}

/// Whether any file under `dir` holds `needle`.
fn found_in_files(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

#[test]
fn a_local_field_stays_on_the_node_that_wrote_it() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let set = central.json(&["profile", "set", "learner", "--local", "password_hash"]);
    assert_eq!(set["local"], serde_json::json!(["password_hash"]), "{set}");
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&central, &device, "people", "people", &[]);
    const SECRET: &str = "pbkdf2-SECRET-7f3a9c";
    let put = central.json(&[
        "put",
        "learner",
        "l1",
        "--partition",
        "people",
        "--set",
        "name=Ann",
        "--set",
        &format!("password_hash={SECRET}"),
    ]);
    assert_eq!(put["fields"]["password_hash"], SECRET, "the writer sees it: {put}");
    assert_eq!(central.json(&["get", "learner", "l1"])["fields"]["password_hash"], SECRET);

    let pulled = sync(&device, &server.address, &[]);
    assert_eq!(pulled["received"], 1, "the learner (the profile came with the enrolment): {pulled}");
    let got = device.json(&["get", "learner", "l1"]);
    assert_eq!(got["fields"]["name"], "Ann", "{got}");
    assert!(got["fields"].get("password_hash").is_none(), "{got}");
    let listed = device.ok(&["--json", "list"]);
    assert!(!listed.contains(SECRET), "{listed}");

    // A change of the local field alone makes no change: nothing syncs.
    let newer = "pbkdf2-SECRET-newer-11";
    central.ok(&["put", "learner", "l1", "--partition", "people", "--set", &format!("password_hash={newer}")]);
    assert_eq!(central.json(&["get", "learner", "l1"])["fields"]["password_hash"], newer);
    let again = sync(&device, &server.address, &[]);
    assert_eq!(again["received"], 0, "{again}");
    // The name still syncs, and the local field stays where it is.
    central.ok(&["put", "learner", "l1", "--partition", "people", "--set", "name=Anne"]);
    sync(&device, &server.address, &[]);
    assert_eq!(device.json(&["get", "learner", "l1"])["fields"]["name"], "Anne");
    assert_eq!(central.json(&["get", "learner", "l1"])["fields"]["password_hash"], newer);

    // Nowhere in the device's files, nor in a bundle.
    server.stop();
    let bundle = root.path().join("all.bundle");
    central.json(&["bundle", "export", "--out", bundle.to_str().expect("path")]);
    for secret in [SECRET, newer] {
        assert_eq!(found_in_files(&device.dir, secret.as_bytes()), Vec::<std::path::PathBuf>::new());
        assert!(
            found_in_files(root.path().join("all.bundle").parent().expect("dir"), secret.as_bytes())
                .iter()
                .all(|p| p.starts_with(&central.dir)),
            "only the central's own files hold it"
        );
    }

    // A deleted record takes its local fields with it.
    central.ok(&["delete", "learner", "l1"]);
    central.ok(&["put", "learner", "l1", "--partition", "people", "--set", "name=Ann"]);
    let back = central.json(&["get", "learner", "l1"]);
    assert!(back["fields"].get("password_hash").is_none(), "{back}");
    let shown = central.ok(&["profile", "show"]);
    assert!(shown.contains("learner: newest, delete-wins, local password_hash"), "{shown}");
}

#[test]
fn an_unfinished_result_stays_on_the_device_until_it_is_finished_then_goes_whole() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let set = central.json(&["profile", "set", "result", "--send-when", "completed=true"]);
    assert_eq!(set["send_when"], serde_json::json!({"completed": true}), "{set}");
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&central, &device, "results:tc-1", "results:tc-1", &[]);
    sync(&device, &server.address, &[]);
    let put = |id: &str, sets: &[&str]| put_result(&device, id, sets);
    put("a1", &["answer=x", "completed=false"]);
    put("a1", &["answer=xy"]);
    put("a2", &["answer=y"]);
    put("a3", &["answer=z", "completed=true"]);
    let first = sync(&device, &server.address, &[]);
    assert_eq!(first["sent"], 1, "only the finished result: {first}");
    assert_eq!(ids(&central), ["a3", "profile"]);

    // Through a serving device killed with -9 and a restart, the unfinished
    // results stay, and stay unsent.
    let serving = device.serve();
    serving.kill();
    assert_eq!(ids(&device), ["a1", "a2", "a3", "profile"]);
    let again = sync(&device, &server.address, &[]);
    assert_eq!(again["sent"], 0, "{again}");
    let bundle = root.path().join("for-central.bundle");
    let exported =
        device.json(&["bundle", "export", "--out", bundle.to_str().expect("path"), "--for", &central.peer_id()]);
    assert_eq!(exported["changes"], 0, "a bundle holds them back too: {exported}");

    // Finished: its whole current state goes in the next sync, once.
    put("a1", &["completed=true"]);
    let finished = sync(&device, &server.address, &[]);
    assert_eq!(finished["sent"], 1, "{finished}");
    let got = central.json(&["get", "result", "a1"]);
    assert_eq!(
        (got["fields"]["answer"].as_str(), got["fields"]["completed"].as_bool()),
        (Some("xy"), Some(true)),
        "{got}"
    );
    assert_eq!(ids(&central), ["a1", "a3", "profile"]);
    // Later edits of a finished result travel as usual.
    put("a1", &["score=0.5"]);
    assert_eq!(sync(&device, &server.address, &[])["sent"], 1);
    assert_eq!(central.json(&["get", "result", "a1"])["fields"]["score"], 0.5);
    let shown = device.ok(&["profile", "show"]);
    assert!(shown.contains("sent when completed=true"), "{shown}");
    server.stop();
}

/// A result the device reopened and held back, closed by the central
/// meanwhile: the device's own values still reach the central, though the
/// central's frontier was already past the counter they were written under.
#[test]
fn a_result_finished_elsewhere_still_brings_what_the_device_held_back() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    central.ok(&["profile", "set", "result", "--send-when", "completed=true"]);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&central, &device, "results:tc-1", "results:tc-1", &[]);
    sync(&device, &server.address, &[]);
    let put = put_result;
    put(&device, "r1", &["answer=x", "completed=true"]);
    assert_eq!(sync(&device, &server.address, &[])["sent"], 1);
    // Reopened on the device (held back), while a later result goes up.
    put(&device, "r1", &["answer=x2", "completed=false"]);
    put(&device, "r2", &["answer=y", "completed=true"]);
    assert_eq!(sync(&device, &server.address, &[])["sent"], 1, "r2 only");
    // The central closes r1 itself (a proctor ends the session).
    put(&central, "r1", &["completed=true", "note=closed by proctor"]);
    sync(&device, &server.address, &[]);
    let after = sync(&device, &server.address, &[]);
    assert_eq!(after["sent"], 1, "the device's answer, written again: {after}");
    let got = central.json(&["get", "result", "r1"]);
    assert_eq!(got["fields"]["answer"], "x2", "{got}");
    assert_eq!(got["fields"]["completed"], true, "{got}");
    assert_eq!(got["fields"]["note"], "closed by proctor", "{got}");
    assert_eq!(central.json(&["get", "result", "r1"]), device.json(&["get", "result", "r1"]));
    server.stop();
}

/// The ids of the results `home` lists, sorted.
fn results(home: &Home) -> Vec<String> {
    let list = home.json(&["list", "--type", "result"]);
    let mut ids: Vec<String> =
        list.as_array().expect("list").iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect();
    ids.sort();
    ids
}

/// A central whose root certificate carries authority `master`, with
/// `result` evicted once `master` acknowledged it, and a device that may
/// only write results in tc-1 and has the profile.
fn write_only_pair(root: &std::path::Path) -> (Home, tests::cli::Server, Home) {
    let (central, server, device) = central_and_device(root, "results", "results:tc-1", &["--types", "result=wo"]);
    central.json(&["profile", "set", "result", "--evict-after-ack", "master"]);
    sync(&device, &server.address, &[]);
    (central, server, device)
}

#[test]
fn a_write_only_device_sends_its_results_once_and_evicts_them_after_the_central_acknowledged() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, device) = write_only_pair(root.path());
    let shown = device.json(&["profile", "show", "--json"]);
    assert_eq!(shown[0]["evict_after_ack"], "master", "{shown}");
    // Someone else's result in the same centre never reaches the device.
    central.ok(&["put", "result", "theirs", "--partition", "results:tc-1", "--set", "score=1"]);
    put_result(&device, "a1", &["answer=zebra-quartz-answer-1"]);
    put_result(&device, "a2", &["score=2"]);
    assert_eq!(results(&device), ["a1", "a2"]);
    let first = sync(&device, &server.address, &[]);
    assert_eq!((first["sent"].as_u64(), first["received"].as_u64()), (Some(2), Some(0)), "{first}");
    // Gone from the device, all there on the central.
    assert_eq!(results(&device), Vec::<String>::new());
    assert!(device.fails(&["get", "result", "a1", "--partition", "results:tc-1"]).contains("a1"));
    assert_eq!(results(&central), ["a1", "a2", "theirs"]);
    let evictions: Vec<serde_json::Value> = device
        .json(&["history"])
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["via"] == "evict")
        .cloned()
        .collect();
    assert_eq!(evictions.len(), 1, "{evictions:?}");
    assert_eq!(evictions[0]["purged"], 2, "{evictions:?}");
    assert!(device.ok(&["history"]).contains("evicted 2"));
    let export = device.ok(&["export"]);
    assert!(!export.contains("a1"), "{export}");
    let left = found_in_files(&device.dir, b"zebra-quartz-answer-1");
    assert!(left.is_empty(), "the evicted answer is still in {left:?}");
    // Never sent again, never offered back.
    let again = sync(&device, &server.address, &[]);
    assert_eq!((again["sent"].as_u64(), again["received"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(results(&device), Vec::<String>::new());
    // The next result goes the same way; the central keeps every one.
    put_result(&device, "a3", &["score=3"]);
    let third = sync(&device, &server.address, &[]);
    assert_eq!((third["sent"].as_u64(), third["received"].as_u64()), (Some(1), Some(0)), "{third}");
    assert_eq!(results(&device), Vec::<String>::new());
    assert_eq!(results(&central), ["a1", "a2", "a3", "theirs"]);
    let kept = central.json(&["get", "result", "a1", "--partition", "results:tc-1"]);
    assert_eq!(kept["fields"]["answer"], "zebra-quartz-answer-1", "{kept}");
    server.stop();
}

#[test]
fn a_kill_between_the_acknowledgement_and_the_eviction_loses_nothing_and_the_next_start_evicts() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, device) = write_only_pair(root.path());
    put_result(&device, "a1", &["score=1"]);
    let mut command = device.command(&["sync", &server.address]);
    command.env("FERRY_FAULT", "abort-before-evict");
    let died = tests::cli::within(command, std::time::Duration::from_secs(60));
    assert!(!died.status.success(), "the sync was to die before evicting");
    // The acknowledgement was durable: the central has the result.
    assert_eq!(results(&central), ["a1"]);
    // The next start evicts it, once.
    assert_eq!(results(&device), Vec::<String>::new());
    assert_eq!(results(&device), Vec::<String>::new());
    let history = device.json(&["history"]);
    let evictions = history.as_array().expect("history").iter().filter(|e| e["via"] == "evict").count();
    assert_eq!(evictions, 1, "{history}");
    server.stop();
}

#[test]
fn a_result_no_acknowledging_peer_holds_stays_on_the_write_only_device() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, device) = write_only_pair(root.path());
    // A relay in the centre that may read results but is no authority.
    let relay = Home::init(root.path(), "relay");
    enrol(&central, &relay, "results:tc-1", "results:tc-1", &[]);
    server.stop();
    let relay_server = relay.serve();
    put_result(&device, "a1", &["score=1"]);
    sync(&device, &relay_server.address, &[]);
    assert_eq!(results(&relay), ["a1"]);
    // Only the central's acknowledgement evicts.
    assert_eq!(results(&device), ["a1"]);
    relay_server.stop();
    let server = central.serve();
    sync(&device, &server.address, &[]);
    assert_eq!(results(&device), Vec::<String>::new());
    assert_eq!(results(&central), ["a1"]);
    server.stop();
}

/// The records of `record_type` `home` lists, as (partition relative to
/// the org, id), sorted.
fn placed(home: &Home, record_type: &str) -> Vec<(String, String)> {
    let list = home.json(&["list", "--type", record_type]);
    let mut out: Vec<(String, String)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|r| {
            let partition = r["partition"].as_str().expect("partition");
            let relative = partition.split_once(':').map_or(partition, |(_, rest)| rest);
            (relative.to_owned(), r["id"].as_str().expect("id").to_owned())
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, i)| (p.to_string(), i.to_string())).collect()
}

/// SENAITE.SYNC's Example 1 and 2 (shared/reference): a master lab M and
/// collaborators A to D. Each lab's samples, analyses and analysis requests
/// live in its own partition, so they travel only between that lab and M,
/// and the same id in two labs is two records: partitions replace SENAITE's
/// remote and local id prefixes. Shared types (departments) live in
/// `shared`, which every lab reads and writes. `extra` narrows the
/// collaborators' certificates (Example 2).
fn senaite_network(root: &std::path::Path, extra: &[&str]) -> (Home, tests::cli::Server, Vec<(String, Home)>) {
    let m = Home::init(root, "m");
    org(&m);
    let server = m.serve();
    let mut labs = Vec::new();
    for lab in ["a", "b", "c", "d"] {
        let home = Home::init(root, lab);
        let own = format!("lab-{lab}");
        enrol(&m, &home, &format!("{own},shared"), &format!("{own},shared"), extra);
        labs.push((own, home));
    }
    (m, server, labs)
}

#[test]
fn senaite_example_1_samples_travel_only_between_their_lab_and_the_master() {
    let root = tempfile::tempdir().expect("dir");
    let (m, server, labs) = senaite_network(root.path(), &[]);
    for (own, lab) in &labs {
        // The same ids in every lab: no prefix, the partition tells them apart.
        for (t, id) in [("sample", "s1"), ("analysis", "an1"), ("analysis_request", "ar1")] {
            lab.ok(&["put", t, id, "--partition", own, "--set", &format!("lab={own}")]);
        }
    }
    labs[0].1.ok(&["put", "department", "chemistry", "--partition", "shared", "--set", "head=Ann"]);
    for _ in 0..2 {
        for (_, lab) in &labs {
            sync(lab, &server.address, &[]);
        }
    }
    // M holds every lab's samples under their own ids.
    assert_eq!(placed(&m, "sample"), pairs(&[("lab-a", "s1"), ("lab-b", "s1"), ("lab-c", "s1"), ("lab-d", "s1")]));
    assert_eq!(placed(&m, "analysis").len(), 4);
    assert_eq!(placed(&m, "analysis_request").len(), 4);
    for (own, lab) in &labs {
        // Each lab holds only its own samples, and the shared department.
        assert_eq!(placed(lab, "sample"), pairs(&[(own, "s1")]), "{own}");
        assert_eq!(placed(lab, "analysis"), pairs(&[(own, "an1")]), "{own}");
        assert_eq!(placed(lab, "department"), pairs(&[("shared", "chemistry")]), "{own}");
    }
    // M verifies lab B's sample: the update goes to B, and only to B.
    m.ok(&["put", "sample", "s1", "--partition", "lab-b", "--set", "status=verified"]);
    let moved: Vec<u64> =
        labs.iter().map(|(_, lab)| sync(lab, &server.address, &[])["received"].as_u64().expect("received")).collect();
    assert_eq!(moved, [0, 1, 0, 0], "only lab B receives its sample's update");
    let b = &labs[1].1;
    let got = b.json(&["get", "sample", "s1", "--partition", "lab-b"]);
    assert_eq!(got["fields"]["status"], "verified", "{got}");
    // B's own update reaches M.
    b.ok(&["put", "sample", "s1", "--partition", "lab-b", "--set", "note=re-run"]);
    assert_eq!(sync(b, &server.address, &[])["sent"], 1);
    let at_m = m.json(&["get", "sample", "s1", "--partition", "lab-b"]);
    assert_eq!((&at_m["fields"]["status"], &at_m["fields"]["note"]), (&"verified".into(), &"re-run".into()), "{at_m}");
    // SENAITE skips an object modified on both sides: with policy `skip`,
    // a department edited on two labs at once keeps the head every lab
    // had, and both new heads wait as conflicts, the same on every lab.
    let shown = m.json(&["profile", "set", "department", "--policy", "skip"]);
    assert_eq!(shown["policy"], "skip", "{shown}");
    for (_, lab) in &labs {
        sync(lab, &server.address, &[]);
    }
    labs[0].1.ok(&["put", "department", "chemistry", "--partition", "shared", "--set", "head=Ben"]);
    labs[0].1.ok(&["put", "department", "chemistry", "--partition", "shared", "--set", "head=Bea"]);
    labs[2].1.ok(&["put", "department", "chemistry", "--partition", "shared", "--set", "head=Cat"]);
    for _ in 0..2 {
        for (_, lab) in &labs {
            sync(lab, &server.address, &[]);
        }
    }
    let everyone: Vec<&Home> = std::iter::once(&m).chain(labs.iter().map(|(_, l)| l)).collect();
    for home in &everyone {
        let d = home.json(&["get", "department", "chemistry", "--partition", "shared"]);
        assert_eq!(d["fields"]["head"], "Ann", "the head every lab had seen stays: {d}");
        let mut waiting: Vec<&str> =
            d["conflicts"].as_array().expect("conflicts").iter().filter_map(|c| c["value"].as_str()).collect();
        waiting.sort_unstable();
        assert_eq!(waiting, ["Bea", "Cat"], "both new heads wait: {d}");
    }
    // Someone decides on the master; every lab takes the decision.
    m.ok(&["resolve", "department", "chemistry", "--partition", "shared", "--set", "head=Cat"]);
    for (_, lab) in &labs {
        sync(lab, &server.address, &[]);
    }
    for home in &everyone {
        let d = home.json(&["get", "department", "chemistry", "--partition", "shared"]);
        assert_eq!((&d["fields"]["head"], &d["conflicts"]), (&"Cat".into(), &serde_json::json!([])), "{d}");
    }
    server.stop();
}

#[test]
fn senaite_example_2_methods_are_handled_only_on_the_master_and_read_only_elsewhere() {
    let root = tempfile::tempdir().expect("dir");
    let read_only = ["--types", "method=ro,analysis_service=ro,calculation=ro"];
    let (m, server, labs) = senaite_network(root.path(), &read_only);
    for (t, id) in [("method", "icp-ms"), ("analysis_service", "lead"), ("calculation", "dilution")] {
        m.ok(&["put", t, id, "--partition", "shared", "--set", "version=1"]);
    }
    let (own_a, a) = &labs[0];
    a.ok(&["put", "sample", "s1", "--partition", own_a, "--set", "v=1"]);
    for (_, lab) in &labs {
        sync(lab, &server.address, &[]);
    }
    for (own, lab) in &labs {
        // Every collaborator can view and use them…
        assert_eq!(placed(lab, "method"), pairs(&[("shared", "icp-ms")]), "{own}");
        assert_eq!(placed(lab, "calculation"), pairs(&[("shared", "dilution")]), "{own}");
        // …but never edit, create nor delete them.
        let edit = lab.fails(&["put", "method", "icp-ms", "--partition", "shared", "--set", "version=2"]);
        assert!(edit.contains("method"), "{edit}");
        lab.fails(&["put", "method", "new", "--partition", "shared", "--set", "version=1"]);
        lab.fails(&["delete", "calculation", "dilution", "--partition", "shared"]);
    }
    // What Example 1 asks still holds: A's sample is on M and on no other lab.
    assert_eq!(placed(&m, "sample"), pairs(&[("lab-a", "s1")]));
    for (own, lab) in &labs[1..] {
        assert!(placed(lab, "sample").is_empty(), "{own}");
    }
    // M's new version reaches every lab.
    m.ok(&["put", "method", "icp-ms", "--partition", "shared", "--set", "version=2"]);
    for (own, lab) in &labs {
        sync(lab, &server.address, &[]);
        let method = lab.json(&["get", "method", "icp-ms", "--partition", "shared"]);
        assert_eq!(method["fields"]["version"], 2, "{own}: {method}");
    }
    server.stop();
}

/// The TAO district of issue 14: a central, two test centres with two
/// devices each. Results are sealed to the central, held on the device
/// until finished, pushed once, then evicted after the central acknowledged
/// them; a learner's `password_hash` never leaves the central; a device
/// moved to the other centre purges the first centre's tests but keeps its
/// unfinished result.
#[test]
fn a_tao_district_pushes_sealed_results_once_when_finished_and_keeps_secrets_on_the_central() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    central.json(&["org", "create", "Riverside District", "--authority", "central"]);
    central.json(&[
        "profile",
        "set",
        "result",
        "--send-when",
        "completed=true",
        "--evict-after-ack",
        "central",
        "--sealed",
        "answers",
        "--readers",
        "central",
    ]);
    central.json(&["profile", "set", "learner", "--local", "password_hash"]);
    for centre in ["tc-1", "tc-2"] {
        let tests = format!("tests:{centre}");
        central.ok(&["put", "test", &format!("maths-{centre}"), "--partition", &tests, "--set", "items=12"]);
        central.ok(&[
            "put",
            "learner",
            &format!("l-{centre}"),
            "--partition",
            &tests,
            "--set",
            "name=Ann",
            "--set",
            "password_hash=pbkdf2-secret-hash-77",
        ]);
    }
    let server = central.serve();
    let mut devices = Vec::new();
    for (centre, n) in [("tc-1", 1), ("tc-1", 2), ("tc-2", 1), ("tc-2", 2)] {
        let device = Home::init(root.path(), &format!("{centre}-d{n}"));
        let read = format!("tests:{centre},results:{centre}");
        enrol(&central, &device, &read, &format!("results:{centre}"), &["--types", "test=ro,result=wo"]);
        sync(&device, &server.address, &[]);
        assert_eq!(placed(&device, "test"), pairs(&[(&format!("tests:{centre}"), &format!("maths-{centre}"))]));
        let learner =
            device.json(&["get", "learner", &format!("l-{centre}"), "--partition", &format!("tests:{centre}")]);
        assert!(learner["fields"].get("password_hash").is_none(), "{learner}");
        devices.push((centre, n, device));
    }
    // Candidates answer; nothing leaves a device before it is finished, and
    // the answers are sealed to the central from the moment they are written.
    let answers = |centre: &str, n: i32| format!("choice-B-{centre}-d{n}");
    for (centre, n, device) in &devices {
        let results = format!("results:{centre}");
        device.ok(&[
            "put",
            "result",
            &format!("r{n}"),
            "--partition",
            &results,
            "--set",
            &format!("answers={}", answers(centre, *n)),
            "--set",
            "completed=false",
        ]);
        let early = sync(device, &server.address, &[]);
        assert_eq!(early["sent"], 0, "{centre}-d{n}: {early}");
        let leaked = found_in_files(&device.dir, answers(centre, *n).as_bytes());
        assert!(leaked.is_empty(), "{centre}-d{n}: {leaked:?}");
    }
    assert!(placed(&central, "result").is_empty());
    // Finished: sent once, then gone from the device; the central has all four.
    for (centre, n, device) in &devices[..3] {
        let results = format!("results:{centre}");
        device.ok(&[
            "put",
            "result",
            &format!("r{n}"),
            "--partition",
            &results,
            "--set",
            "score=0.8",
            "--set",
            "completed=true",
        ]);
        let sent = sync(device, &server.address, &[]);
        assert_eq!((sent["sent"].as_u64(), sent["received"].as_u64()), (Some(1), Some(0)), "{centre}-d{n}: {sent}");
        assert!(placed(device, "result").is_empty(), "{centre}-d{n}");
    }
    assert_eq!(
        placed(&central, "result"),
        pairs(&[("results:tc-1", "r1"), ("results:tc-1", "r2"), ("results:tc-2", "r1")])
    );
    let r = central.json(&["get", "result", "r1", "--partition", "results:tc-2"]);
    assert_eq!(
        (&r["fields"]["answers"], &r["fields"]["completed"]),
        (&answers("tc-2", 1).into(), &true.into()),
        "sent whole, and the central opens the answers: {r}"
    );
    // No device ever received a result, nor the central's secret.
    for (centre, n, device) in &devices {
        let received: u64 = device
            .json(&["history"])
            .as_array()
            .expect("history")
            .iter()
            .flat_map(|e| e["records"].as_array().cloned().unwrap_or_default())
            .filter(|m| m["type"] == "result" && m["direction"] != "sent")
            .count() as u64;
        assert_eq!(received, 0, "{centre}-d{n}");
        let leaked = found_in_files(&device.dir, b"pbkdf2-secret-hash-77");
        assert!(leaked.is_empty(), "{centre}-d{n}: {leaked:?}");
    }
    // The last tc-2 device moves to tc-1 with its result still unfinished:
    // tc-2's tests leave it, its own unfinished result stays.
    let (_, _, moved) = &devices[3];
    reissue(&central, moved, "tests:tc-1,results:tc-1", "results:tc-1", "3000");
    assert_eq!(placed(moved, "test"), Vec::<(String, String)>::new());
    assert_eq!(placed(moved, "result"), pairs(&[("results:tc-2", "r2")]));
    let entries = purges(moved);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0]["purged"].as_u64() >= Some(1), "{entries:?}");
    server.stop();
}

/// A central (authority `master`) whose profile seals `answer` of results
/// to itself, serving, and a device enrolled for `results:tc-1` that synced
/// once (so it holds the profile and the central's key).
fn sealed_pair(root: &std::path::Path, readers: &str) -> (Home, tests::cli::Server, Home) {
    let (central, server, device) = central_and_device(root, "results", "results:tc-1", &[]);
    let set = central.json(&["profile", "set", "result", "--sealed", "answer", "--readers", readers]);
    assert_eq!((&set["sealed"], &set["readers"]), (&serde_json::json!(["answer"]), &readers.into()), "{set}");
    sync(&device, &server.address, &[]);
    (central, server, device)
}

/// The device's key and chain, for a raw peer speaking as it.
fn raw_identity(home: &Home) -> (ed25519_dalek::SigningKey, Vec<u8>) {
    let secret: [u8; 32] = std::fs::read(home.dir.join("node.key")).expect("key").try_into().expect("32 bytes");
    let pem = std::fs::read_dir(home.dir.join("certs")).expect("certs").next().expect("a chain").expect("entry");
    let chain = certs::pem::decode_chain(&std::fs::read_to_string(pem.path()).expect("pem")).expect("chain");
    (ed25519_dalek::SigningKey::from_bytes(&secret), chain)
}

const PLAIN: &str = "answer-PLAINTEXT-5d1e9b";

#[test]
fn a_sealed_answer_opens_only_on_the_central_and_its_plaintext_is_in_no_file_bundle_or_frame() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, device) = sealed_pair(root.path(), "master");
    let keys = device.json(&["sealing-key"]);
    assert_eq!(keys["own"], serde_json::json!([]), "the device reads nothing sealed: {keys}");
    assert_eq!(keys["readers"].as_array().map(Vec::len), Some(1), "it knows the central's key: {keys}");

    let put = device.json(&["put", "result", "r1", "--partition", "results:tc-1", "--set", &format!("answer={PLAIN}")]);
    let placeholder = serde_json::json!({ "$sealed": { "readers": "master" } });
    assert_eq!(put["fields"]["answer"], placeholder, "{put}");
    assert_eq!(device.json(&["get", "result", "r1"])["fields"]["answer"], placeholder);
    let export = root.path().join("device.jsonl");
    let exported = device.ok(&["export"]);
    assert!(exported.contains(r#""answer":{"$sealed":{"readers":"master"}}"#), "{exported}");
    std::fs::write(&export, exported).expect("write");
    // The export holds the placeholder; importing it again keeps the value.
    let again = device.json(&["import", export.to_str().expect("path")]);
    assert_eq!((again["written"].as_u64(), again["rejected"].as_u64()), (Some(0), Some(0)), "{again}");
    let bundle = root.path().join("device.bundle");
    device.json(&["bundle", "export", "--out", bundle.to_str().expect("path")]);

    // A relay without the key stores and passes on the sealed value.
    let relay = Home::init(root.path(), "relay");
    enrol(&central, &relay, "results", "", &[]);
    let relay_server = relay.serve();
    sync(&device, &relay_server.address, &[]);
    assert_eq!(relay.json(&["get", "result", "r1"])["fields"]["answer"], placeholder);
    let pulled = central.json(&["sync", &relay_server.address]);
    assert_eq!(pulled["received"], 1, "{pulled}");
    relay_server.stop();
    assert_eq!(central.json(&["get", "result", "r1"])["fields"]["answer"], PLAIN, "the reader opens it");

    // On the wire: a peer pulling from the central gets the sealed value,
    // never the plaintext (the frames as read, inside the transport).
    let (key, chain) = raw_identity(&device);
    let raw = tests::hostile::Hostile::new(key);
    let org = partitions::OrgId::parse(central.json(&["id"])["certificates"][0]["org_id"].as_str().expect("org"))
        .expect("org id");
    let filter = partitions::Filter::new(vec![partitions::Partition::resolve(org, "results").expect("partition")]);
    let mut frames: Vec<u8> = Vec::new();
    {
        let mut conn = raw.open(&server.address);
        conn.handshake(&chain, &filter, true, false);
        while let Some(frame) = conn.recv_frame(std::time::Duration::from_secs(3)) {
            // Batches travel compressed: search what they carry too.
            if let Ok(engine::wire::Message::Batch(batch)) = engine::wire::decode_message(&frame) {
                frames.extend_from_slice(&engine::wire::encode_batch_body(&batch));
            }
            frames.extend_from_slice(&frame);
        }
    }
    let holds = |needle: &[u8]| frames.windows(needle.len()).any(|w| w == needle);
    assert!(holds(b"$sealed"), "the sealed value travelled ({} bytes)", frames.len());
    assert!(!holds(PLAIN.as_bytes()), "the plaintext travelled");
    server.stop();

    // Nowhere at rest either: not in any store file (the central's holds
    // the sealed value too), the export or the bundle.
    let leaked = found_in_files(root.path(), PLAIN.as_bytes());
    assert_eq!(leaked, Vec::<std::path::PathBuf>::new());
    let private = std::fs::metadata(central.dir.join("sealing-keys")).expect("the central's keys");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&private.permissions()) & 0o777, 0o600);
    assert!(!device.dir.join("sealing-keys").exists(), "a writer holds no key");
}

#[test]
fn a_writer_that_knows_no_reader_key_is_refused_and_writes_nothing() {
    let root = tempfile::tempdir().expect("dir");
    // No node holds authority `auditor`: nobody published a key for it.
    let (central, server, device) = sealed_pair(root.path(), "auditor");
    let refused =
        device.fails(&["put", "result", "r1", "--partition", "results:tc-1", "--set", &format!("answer={PLAIN}")]);
    assert!(refused.contains("sealed to the readers auditor") && refused.contains("knows no key"), "{refused}");
    let line = format!(r#"{{"type":"result","id":"r2","partition":"results:tc-1","fields":{{"answer":"{PLAIN}"}}}}"#);
    let input = root.path().join("one.jsonl");
    std::fs::write(&input, format!("{line}\n")).expect("write");
    let imported = device.run(&["import", input.to_str().expect("path")]);
    let said = format!("{}{}", String::from_utf8_lossy(&imported.stdout), String::from_utf8_lossy(&imported.stderr));
    assert!(!imported.status.success() && said.contains("1 line was rejected, 0 written"), "{said}");
    assert!(said.contains("knows no key"), "{said}");
    // A placeholder is no value to write, sealed or not.
    let fake = device.fails(&[
        "put",
        "result",
        "r3",
        "--partition",
        "results:tc-1",
        "--set",
        r#"answer={"$sealed":{"readers":"auditor"}}"#,
    ]);
    assert!(fake.contains("cannot read"), "{fake}");
    let elsewhere = device.fails(&[
        "put",
        "result",
        "r3",
        "--partition",
        "results:tc-1",
        "--set",
        r#"note={"$sealed":{"readers":"auditor"}}"#,
    ]);
    assert!(elsewhere.contains("reserved"), "{elsewhere}");
    // Fields that are not sealed still write; nothing sealed ever left.
    device.ok(&["put", "result", "r4", "--partition", "results:tc-1", "--set", "score=1"]);
    assert_eq!(results(&device), ["r4"]);
    let sent = sync(&device, &server.address, &[]);
    assert_eq!(sent["sent"], 1, "{sent}");
    server.stop();
    for home in [&device, &central] {
        assert_eq!(found_in_files(&home.dir, PLAIN.as_bytes()), Vec::<std::path::PathBuf>::new());
    }
    assert_eq!(results(&central), ["r4"]);
}

#[test]
fn sealing_covers_import_resolve_and_the_local_api_and_survives_a_key_rotation() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, device) = sealed_pair(root.path(), "master");
    let before = central.json(&["sealing-key"]);
    assert_eq!(before["own"].as_array().map(Vec::len), Some(1), "{before}");
    device.ok(&["put", "result", "old", "--partition", "results:tc-1", "--set", "answer=to be resolved"]);
    device.ok(&["put", "result", "b4", "--partition", "results:tc-1", "--set", "answer=before the rotation"]);
    sync(&device, &server.address, &[]);

    let rotated = central.json(&["sealing-key", "--rotate"]);
    let own = rotated["own"].as_array().expect("own keys").clone();
    assert_eq!(own.len(), 2, "{rotated}");
    assert_eq!((&own[0]["published"], &own[1]["published"]), (&false.into(), &true.into()), "{rotated}");
    sync(&device, &server.address, &[]);
    let known = device.json(&["sealing-key"]);
    assert_eq!(known["readers"][0]["key_id"], own[1]["key_id"], "the device seals to the new key: {known}");

    // Every write path seals: an import, a resolve, and a put through the
    // local API of a serving device.
    let input = root.path().join("import.jsonl");
    std::fs::write(
        &input,
        r#"{"type":"result","id":"imported","partition":"results:tc-1","fields":{"answer":"via import"}}"#,
    )
    .expect("write");
    device.json(&["import", input.to_str().expect("path")]);
    device.ok(&["resolve", "result", "old", "--set", "answer=via resolve"]);
    let device_server = device.serve();
    let put =
        device.json(&["put", "result", "api", "--partition", "results:tc-1", "--set", "answer=via the local api"]);
    assert_eq!(put["fields"]["answer"]["$sealed"]["readers"], "master", "{put}");
    let pushed = central.json(&["sync", &device_server.address]);
    assert_eq!(pushed["received"], 3, "{pushed}");
    device_server.stop();
    server.stop();
    let answer = |id: &str| central.json(&["get", "result", id])["fields"]["answer"].clone();
    assert_eq!(answer("imported"), "via import");
    assert_eq!(answer("old"), "via resolve");
    assert_eq!(answer("api"), "via the local api");
    assert_eq!(answer("b4"), "before the rotation", "the older key still opens what was sealed to it");
    for plain in ["via import", "via resolve", "via the local api", "before the rotation"] {
        assert_eq!(found_in_files(&device.dir, plain.as_bytes()), Vec::<std::path::PathBuf>::new(), "{plain}");
    }

    // What was written after the rotation needs only the new key: with the
    // old secret gone, those values still open, and one sealed before does not.
    let keys = central.dir.join("sealing-keys");
    let text = std::fs::read_to_string(&keys).expect("keys");
    let newest = text.lines().last().expect("a key").to_owned();
    std::fs::write(&keys, format!("{newest}\n")).expect("write");
    assert_eq!(answer("api"), "via the local api");
    assert_eq!(answer("old"), "via resolve");
    assert_eq!(answer("b4"), serde_json::json!({ "$sealed": { "readers": "master" } }));
}

#[test]
fn a_device_knows_the_org_rules_from_its_enrolment_before_its_first_sync() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    central.json(&["profile", "set", "result", "--sealed", "answer", "--readers", "master"]);
    central.json(&["profile", "set", "learner", "--local", "password_hash"]);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&central, &device, "results,people", "results:tc-1,people", &[]);
    // No sync yet: what it writes now already follows the org's rules.
    assert_eq!(device.json(&["profile", "show"]), central.json(&["profile", "show"]));
    let put = device.json(&["put", "result", "r1", "--partition", "results:tc-1", "--set", &format!("answer={PLAIN}")]);
    assert_eq!(put["fields"]["answer"]["$sealed"]["readers"], "master", "{put}");
    device.ok(&["put", "learner", "l1", "--partition", "people", "--set", "password_hash=local-only-3f9"]);
    let sent = sync(&device, &server.address, &[]);
    assert_eq!(sent["sent"], 2, "{sent}");
    server.stop();
    assert_eq!(central.json(&["get", "result", "r1"])["fields"]["answer"], PLAIN);
    assert!(central.json(&["get", "learner", "l1"])["fields"].get("password_hash").is_none());
    for plain in [PLAIN, "local-only-3f9"] {
        assert_eq!(found_in_files(&central.dir, plain.as_bytes()), Vec::<std::path::PathBuf>::new(), "{plain}");
    }
}
