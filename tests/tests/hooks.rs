//! Hooks (SPEC §6.3) with real `ferry` processes: `[[hooks]]` programs in
//! ferry.toml, run with one JSON object on stdin, before and after syncs
//! and after each batch a peer sends.

use tests::cli::Home;

fn network(root: &std::path::Path) -> (Home, Home) {
    let central = Home::init(root, "central");
    central.json(&["org", "create", "District", "--authority", "central"]);
    let device = Home::init(root, "device");
    (central, device)
}

fn enrol(central: &Home, device: &Home) {
    let token = central.json(&["enroll", "token", "--read", "results", "--write", "results"]);
    device.json(&["enroll", token["token"].as_str().expect("token")]);
}

fn hook(on: &str, script: &str, timeout: &str) -> String {
    format!("[[hooks]]\non = \"{on}\"\nrun = [\"sh\", \"-c\", {script:?}]\ntimeout = \"{timeout}\"\n")
}

fn waits_for(path: &std::path::Path, lines: usize) -> Vec<serde_json::Value> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let got: Vec<serde_json::Value> =
            text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("JSON")).collect();
        if got.len() >= lines {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{} never had {lines} lines", path.display());
}

#[test]
fn a_before_sync_hook_that_fails_cancels_the_sync_on_either_side_and_the_ledger_says_why() {
    let root = tempfile::tempdir().expect("dir");
    let (central, device) = network(root.path());
    let server = central.serve();
    enrol(&central, &device);
    device.ok(&["put", "result", "r1", "--partition", "results", "--set", "score=1"]);
    // The device's own hook says no.
    let seen = root.path().join("asked.json");
    let script = format!("cat > {}; echo 'maintenance window until 18:00' >&2; exit 3", seen.display());
    device.configure(&hook("before-sync", &script, "10s"));
    let refused = device.fails(&["sync", &server.address]);
    assert!(refused.contains("maintenance window until 18:00"), "{refused}");
    let asked: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&seen).expect("input")).expect("JSON");
    assert_eq!((&asked["stage"], &asked["role"]), (&"before-sync".into(), &"initiator".into()), "{asked}");
    assert_eq!(asked["peer"], central.peer_id());
    let history = device.json(&["history"]);
    let outcome = history.as_array().and_then(|h| h.last()).expect("an entry")["outcome"].as_str().expect("outcome");
    assert!(outcome.starts_with("refused:") && outcome.contains("maintenance window"), "{history}");
    assert!(central.json(&["list"]).as_array().expect("list").iter().all(|r| r["id"] != "r1"), "nothing moved");
    // The central's hook says no to the device's next sync.
    device.configure("");
    server.stop();
    central.configure(&hook("before-sync", "echo 'the central is closed for the exam' >&2; exit 1", "10s"));
    let server = central.serve();
    let refused = device.fails(&["sync", &server.address]);
    assert!(refused.contains("the central is closed for the exam"), "{refused}");
    let history = central.json(&["history"]);
    let last = history.as_array().and_then(|h| h.last()).expect("an entry");
    assert!(last["outcome"].as_str().expect("outcome").contains("closed for the exam"), "{history}");
    // Without the hook, the sync goes through.
    server.stop();
    central.configure("");
    let server = central.serve();
    assert_eq!(device.json(&["sync", &server.address])["sent"], 1);
    server.stop();
}

#[test]
fn an_after_apply_hook_hears_exactly_the_records_of_each_batch() {
    let root = tempfile::tempdir().expect("dir");
    let (central, device) = network(root.path());
    let applied = root.path().join("applied.ndjson");
    central.configure(&hook("after-apply", &format!("cat >> {}", applied.display()), "10s"));
    let server = central.serve();
    enrol(&central, &device);
    device.configure("batch_changes = 2\n");
    for i in 1..=5 {
        device.ok(&["put", "result", &format!("r{i}"), "--partition", "results", "--set", "score=1"]);
    }
    assert_eq!(device.json(&["sync", &server.address])["sent"], 5);
    let batches = waits_for(&applied, 3);
    let ids: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            assert_eq!((&b["stage"], &b["origin"]), (&"after-apply".into(), &device.peer_id().into()), "{b}");
            b["records"].as_array().expect("records").iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect()
        })
        .collect();
    assert_eq!(ids, [vec!["r1", "r2"], vec!["r3", "r4"], vec!["r5"]], "one call per batch, with its records");
    // A local write is not a batch from elsewhere: no call.
    central.ok(&["put", "result", "c1", "--partition", "results", "--set", "score=2"]);
    assert_eq!(device.json(&["sync", &server.address])["received"], 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(waits_for(&applied, 3).len(), 3, "nothing applied from elsewhere on the central");
    server.stop();
}

#[test]
fn a_hook_that_hangs_is_killed_at_its_timeout_and_the_sync_keeps_its_data() {
    let root = tempfile::tempdir().expect("dir");
    let (central, device) = network(root.path());
    let server = central.serve();
    enrol(&central, &device);
    device.configure(&hook("after-sync", "sleep 60", "1s"));
    device.ok(&["put", "result", "r1", "--partition", "results", "--set", "score=1"]);
    let started = std::time::Instant::now();
    let synced = device.json(&["sync", &server.address]);
    assert_eq!(synced["sent"], 1, "{synced}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the hook was killed, not waited for");
    assert_eq!(central.json(&["get", "result", "r1"])["fields"]["score"], 1, "the data stays");
    let history = device.json(&["history"]);
    let failed = history.as_array().expect("entries").iter().find(|e| e["via"] == "hook").expect("a hook entry");
    let outcome = failed["outcome"].as_str().expect("outcome");
    assert!(outcome.contains("after-sync hook sh") && outcome.contains("did not finish within 1 s"), "{outcome}");
    server.stop();
}
