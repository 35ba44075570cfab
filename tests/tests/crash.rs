//! `kill -9` at seeded random points of an import, a sync and a bundle
//! import, against real `ferry` processes. After each kill: every write the
//! killed side had acknowledged (a progress line is printed only after its
//! durable commit) is present, nothing is half applied, re-running the
//! operation applies exactly what was missing (nothing twice), and the next
//! sync completes, converges and leaves frontiers that agree (a further sync
//! is a no-op).
//!
//! A kill is placed by what the process reports, never by the clock: it is
//! sent the moment the process prints its k-th trace point (progress line),
//! k seeded, so whether it lands inside the operation does not depend on the
//! machine's speed. Each test prints how many kills landed after each trace
//! point (the lines the process had printed when it died).
//!
//! `FERRY_CRASH_POINTS` (default 50) sets how many kills must land inside
//! each operation (points where the operation finished first do not count),
//! `FERRY_CRASH_SEED` the seed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tests::cli::{Home, Server};

fn points() -> usize {
    std::env::var("FERRY_CRASH_POINTS").ok().and_then(|p| p.parse().ok()).unwrap_or(50)
}

fn rng(salt: u64) -> StdRng {
    let seed: u64 = std::env::var("FERRY_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_122);
    println!("seed {seed} (FERRY_CRASH_SEED)");
    StdRng::seed_from_u64(seed ^ salt)
}

/// Homes on tmpfs when there is one: a process crash loses nothing the
/// kernel holds, so the page cache is as good as a disk here and faster.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("scratch dir")
}

/// What happened to a command killed on purpose.
struct Killed {
    /// The highest progress count seen per kind (`records`, `received`, `sent`).
    acked: BTreeMap<String, u64>,
    /// The highest total announced per kind.
    totals: BTreeMap<String, u64>,
    killed: bool,
    /// The trace points (progress lines) the command had reported when it
    /// died: where the kill landed.
    landed_at: usize,
}

/// Runs `command` and SIGKILLs it, or `server` instead when given, the
/// moment it reports its `k`-th trace point (a progress line, printed after
/// a durable commit), or at once for 0. Kills are placed by what the
/// process reports, not by the clock, so whether they land inside the
/// operation does not depend on the machine's speed.
fn run_and_kill(mut command: Command, k: usize, server: Option<Server>) -> Killed {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn ferry");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut server = server;
    let mut kill = |child: &mut std::process::Child| match server.take() {
        Some(s) => s.kill(),
        None => {
            let _ = child.kill();
        }
    };
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = 0;
    let mut killed = false;
    if k == 0 {
        kill(&mut child);
        killed = true;
    }
    // After the kill, the lines the command wrote before it died are still
    // read: they say where it was.
    for line in stderr.lines().map_while(Result::ok) {
        if std::env::var_os("FERRY_CRASH_TRACE").is_some() {
            println!("  {line}");
        }
        let Some(rest) = line.strip_prefix("progress: ") else { continue };
        let Some((what, count)) = rest.split_once(' ') else { continue };
        // The last line may be cut short by the kill.
        let Some((Ok(done), Ok(total))) = count.split_once('/').map(|(d, t)| (d.parse::<u64>(), t.parse::<u64>()))
        else {
            continue;
        };
        let entry = acked.entry(what.to_owned()).or_default();
        *entry = (*entry).max(done);
        let entry = totals.entry(what.to_owned()).or_default();
        *entry = (*entry).max(total);
        seen += 1;
        if !killed && seen == k {
            kill(&mut child);
            killed = true;
        }
    }
    let status = child.wait().expect("reap ferry");
    // A command that ended on its own was not interrupted.
    Killed { acked, totals, killed: killed && !status.success(), landed_at: seen }
}

/// How many kills landed at each trace point of an operation, printed at the
/// end of its test: the seeded points spread over the whole operation.
#[derive(Default)]
struct Landings(BTreeMap<usize, usize>);

impl Landings {
    fn record(&mut self, killed: &Killed) {
        if killed.killed {
            *self.0.entry(killed.landed_at).or_default() += 1;
        }
    }

    fn print(&self, operation: &str) {
        let table: Vec<String> = self.0.iter().map(|(at, kills)| format!("{at}: {kills}")).collect();
        println!("{operation}: kills landed after this many trace points (points: kills): {}", table.join(", "));
    }
}

fn write_ndjson(path: &Path, lines: impl Iterator<Item = serde_json::Value>) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for line in lines {
        writeln!(file, "{line}").expect("write");
    }
}

fn result_line(id: &str, partition: &str, v: u64, score: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "result", "id": id, "partition": partition,
        "fields": { "v": v, "score": score, "note": format!("answer {score} of round {v}") },
    })
}

/// id → fields of every record a node lists.
fn records(home: &Home) -> BTreeMap<String, serde_json::Value> {
    home.json(&["list"])
        .as_array()
        .expect("list")
        .iter()
        .map(|r| (r["id"].as_str().expect("id").to_owned(), r["fields"].clone()))
        .collect()
}

fn count_round(records: &BTreeMap<String, serde_json::Value>, round: u64, prefix: &str) -> u64 {
    records.iter().filter(|(id, f)| id.starts_with(prefix) && f["v"] == round).count() as u64
}

fn org(home: &Home) {
    home.json(&["org", "create", "Crash test", "--authority", "central"]);
}

#[test]
fn kill_9_during_an_import() {
    const RECORDS: u64 = 3000;
    const CHUNK: u64 = 100;
    let root = scratch();
    let file = root.path().join("records.ndjson");
    write_ndjson(&file, (0..RECORDS).map(|i| result_line(&format!("r{i:05}"), "results", 1, i)));
    let file = file.to_str().expect("path");
    let mut rng = rng(1);
    let mut interrupted = 0;
    let mut landings = Landings::default();
    // Until `points()` kills have landed inside the import (a kill can also
    // come after the end), with a bound.
    for point in 0..points() * 3 {
        if interrupted == points() {
            break;
        }
        let home = Home::init(root.path(), &format!("import-{point}"));
        home.configure(&format!("batch_changes = {CHUNK}\n"));
        org(&home);
        // Odd points kill the daemon the import runs in, even points the
        // `ferry import` process itself.
        let server = (point % 2 == 1).then(|| home.serve());
        let k = rng.random_range(0..RECORDS / CHUNK) as usize;
        let killed = run_and_kill(home.command(&["--progress", "import", file]), k, server);
        interrupted += usize::from(killed.killed);
        landings.record(&killed);
        let acked = killed.acked.get("records").copied().unwrap_or(0);
        let held = records(&home);
        let n = held.len() as u64;
        let at = format!("point {point} (k {k}, landed at {}, acked {acked}, held {n})", killed.landed_at);
        assert!(n >= acked, "{at}: acknowledged records lost");
        assert!(n.is_multiple_of(CHUNK) || n == RECORDS, "{at}: a commit was half applied");
        for (id, fields) in &held {
            let i: u64 = id[1..].parse().expect("id");
            assert_eq!(fields["score"], i, "{at}: {id} damaged");
        }
        // The frontier matches the records: a full bundle carries one change per record.
        let bundle = root.path().join(format!("import-{point}.bundle"));
        let exported = home.json(&["bundle", "export", "--out", bundle.to_str().expect("path")]);
        assert_eq!(exported["changes"], n, "{at}: frontier and records disagree");
        // Running the import again writes exactly what is missing.
        let again = home.json(&["import", file]);
        assert_eq!((again["written"].as_u64(), again["unchanged"].as_u64()), (Some(RECORDS - n), Some(n)), "{at}");
        assert_eq!(records(&home).len() as u64, RECORDS, "{at}");
        std::fs::remove_dir_all(&home.dir).expect("clean up");
    }
    landings.print("import");
    assert_eq!(interrupted, points(), "too few kills landed inside the import");
}

/// A central holding `base` results (`c0000`…) and a fresh device home, both
/// committing every 10 changes.
fn central_and_device(root: &Path, base: u64) -> (Home, Home) {
    let central = Home::init(root, "central");
    central.configure("batch_changes = 10\n");
    org(&central);
    let file = root.join("base.ndjson");
    write_ndjson(&file, (0..base).map(|i| result_line(&format!("c{i:04}"), "results", 0, i)));
    central.json(&["import", file.to_str().expect("path")]);
    let device = Home::init(root, "device");
    device.configure("batch_changes = 10\n");
    (central, device)
}

/// Enrols `device` with the serving `central` (read `results`, write
/// `results:dev`) and pulls everything once.
fn enrol_and_pull(central: &Home, device: &Home, address: &str) {
    let token = central.json(&["enroll", "token", "--read", "results", "--write", "results:dev"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    device.json(&["enroll", &token]);
    device.json(&["sync", address]);
}

#[test]
fn kill_9_during_a_sync() {
    const BASE: u64 = 600;
    const UPDATES: u64 = 120;
    const PUSHED: u64 = 30;
    let root = scratch();
    let (central, device) = central_and_device(root.path(), BASE);
    let mut server = central.serve();
    enrol_and_pull(&central, &device, &server.address);
    let mut rng = rng(2);
    let mut interrupted = 0;
    let mut landings = Landings::default();
    for point in 1..=points() as u64 * 3 {
        if interrupted == points() {
            break;
        }
        // New work on both sides: updates on the central, new records on the device.
        let updates = root.path().join("updates.ndjson");
        let mut ids: Vec<u64> = (0..BASE).collect();
        for i in 0..UPDATES as usize {
            let j = rng.random_range(i..ids.len());
            ids.swap(i, j);
        }
        write_ndjson(
            &updates,
            ids[..UPDATES as usize]
                .iter()
                .map(|i| result_line(&format!("c{i:04}"), "results", point, point * 10_000 + i)),
        );
        central.json(&["import", updates.to_str().expect("path")]);
        let pushed = root.path().join("pushed.ndjson");
        write_ndjson(
            &pushed,
            (0..PUSHED).map(|j| result_line(&format!("d{point:03}-{j:02}"), "results:dev", point, j)),
        );
        device.json(&["import", pushed.to_str().expect("path")]);

        // Kill the device's `ferry sync` or the central's `ferry serve`.
        let kill_server = rng.random_bool(0.5);
        let k = rng.random_range(0..16);
        let address = server.address.clone();
        let killed = if kill_server {
            let killed = run_and_kill(device.command(&["--progress", "sync", &address]), k, Some(server));
            server = central.serve();
            killed
        } else {
            run_and_kill(device.command(&["--progress", "sync", &address]), k, None)
        };
        interrupted += usize::from(killed.killed);
        landings.record(&killed);
        let on_device = records(&device);
        let on_central = records(&central);
        let pulled = count_round(&on_device, point, "c");
        let pushed_held = count_round(&on_central, point, "d");
        // A sync may also carry changes the other side holds already:
        // relays of ones it has since superseded (its frontier went down).
        // They are skipped there; allow for them in the acknowledged counts.
        let relayed_in = killed.totals.get("received").copied().unwrap_or(0).saturating_sub(UPDATES);
        let relayed_out = killed.totals.get("sent").copied().unwrap_or(0).saturating_sub(PUSHED);
        let acked_in = killed.acked.get("received").copied().unwrap_or(0).saturating_sub(relayed_in);
        let acked_out = killed.acked.get("sent").copied().unwrap_or(0).saturating_sub(relayed_out);
        let at = format!(
            "point {point} (kill {}, k {k}, landed at {}; device applied {pulled}, acked {acked_in}; central applied {pushed_held}, acked {acked_out})",
            if kill_server { "serve" } else { "sync" },
            killed.landed_at
        );
        assert!(pulled >= acked_in, "{at}: the device lost acknowledged changes");
        assert!(pushed_held >= acked_out, "{at}: the central lost acknowledged changes");
        // The next sync applies exactly what is missing on each side (the
        // central's ledger tells what it applied), and converges.
        let device_id = device.peer_id();
        let from_device = || -> Vec<serde_json::Value> {
            let ledger = central.json(&["history"]);
            ledger.as_array().expect("ledger").iter().filter(|e| e["peer"] == device_id.as_str()).cloned().collect()
        };
        let started = node::node::now_ms();
        let resumed = device.json(&["sync", &server.address]);
        assert_eq!(resumed["updated"], UPDATES - pulled, "{at}: {resumed}");
        // The central writes its entry when it has seen the end, which can be
        // just after the device is done.
        let mut waited = 0;
        let entry = loop {
            if let Some(entry) = from_device().into_iter().find(|e| e["started_at_ms"].as_u64() >= Some(started)) {
                break entry;
            }
            waited += 1;
            assert!(waited < 100, "{at}: the central recorded no entry for the resumed sync");
            std::thread::sleep(Duration::from_millis(50));
        };
        let later: Vec<serde_json::Value> =
            from_device().into_iter().filter(|e| e["started_at_ms"].as_u64() >= Some(started)).collect();
        assert!(
            entry["outcome"] == "completed" || entry["outcome"] == "no-op",
            "{at}: {entry}\nall: {later:?}\nresumed: {resumed}"
        );
        assert_eq!(entry["updated"], PUSHED - pushed_held, "{at}: {entry}");
        let again = device.json(&["sync", &server.address]);
        assert_eq!(again["noop"], true, "{at}: frontiers disagree after the resumed sync: {again}");
        assert_eq!(records(&device), records(&central), "{at}: the nodes did not converge");
    }
    landings.print("sync");
    assert_eq!(interrupted, points(), "too few kills landed inside the sync");
    server.stop();
}

#[test]
fn kill_9_during_a_bundle_import() {
    const BASE: u64 = 400;
    const UPDATES: u64 = 100;
    let root = scratch();
    let (central, device) = central_and_device(root.path(), BASE);
    {
        let server = central.serve();
        enrol_and_pull(&central, &device, &server.address);
        server.stop();
    }
    let frontier = root.path().join("device.frontier");
    let bundle = root.path().join("for-device.bundle");
    let (frontier_s, bundle_s) = (frontier.to_str().expect("path"), bundle.to_str().expect("path"));
    let mut rng = rng(3);
    let mut interrupted = 0;
    let mut landings = Landings::default();
    for point in 1..=points() as u64 * 3 {
        if interrupted == points() {
            break;
        }
        let updates = root.path().join("updates.ndjson");
        let start = rng.random_range(0..BASE - UPDATES);
        write_ndjson(
            &updates,
            (start..start + UPDATES).map(|i| result_line(&format!("c{i:04}"), "results", point, point * 10_000 + i)),
        );
        central.json(&["import", updates.to_str().expect("path")]);
        device.json(&["bundle", "frontier", "--out", frontier_s]);
        let exported = central.json(&["bundle", "export", "--since", frontier_s, "--out", bundle_s]);
        assert_eq!(exported["changes"], UPDATES, "point {point}: the bundle carries exactly the new changes");
        // Odd points kill the device's daemon running the import, even
        // points the `ferry bundle import` process.
        let server = (point % 2 == 1).then(|| device.serve());
        let k = rng.random_range(0..(UPDATES / 10) as usize);
        let killed = run_and_kill(device.command(&["--progress", "bundle", "import", bundle_s]), k, server);
        interrupted += usize::from(killed.killed);
        landings.record(&killed);
        let applied = count_round(&records(&device), point, "c");
        let acked = killed.acked.get("received").copied().unwrap_or(0);
        let at = format!("point {point} (k {k}, landed at {}, acked {acked}, applied {applied})", killed.landed_at);
        assert!(applied >= acked, "{at}: acknowledged changes lost");
        assert!(applied.is_multiple_of(10), "{at}: a batch was half applied");
        let again = device.json(&["bundle", "import", bundle_s]);
        assert_eq!(
            (again["updated"].as_u64(), again["skipped"].as_u64()),
            (Some(UPDATES - applied), Some(applied)),
            "{at}: {again}"
        );
        assert_eq!(records(&device), records(&central), "{at}: the nodes did not converge");
    }
    landings.print("bundle import");
    assert_eq!(interrupted, points(), "too few kills landed inside the bundle import");
}
