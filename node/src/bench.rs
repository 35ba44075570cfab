//! `ferry bench`: the numbers of SPEC §5, measured with real nodes.
//!
//! Every node is a separate `ferry serve` process with its own home and
//! store on disk, talking libp2p over 127.0.0.1, with durable writes and
//! signature checks on. The benchmark drives them through their control
//! sockets (so each side's peak memory can be read from /proc), on the
//! Morango-shaped workload (`engine::workload`, seeded). Stores are loaded
//! in-process before the nodes start (signed writes, as a node makes them);
//! the `import` scenario measures `ferry import` itself.
//!
//! Bytes are counted at the stream (frames and their length prefixes); round
//! trips are the messages the initiator waited for.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use engine::{BackendKind, LocalAuthor, workload};
use partitions::{OrgId, Partition, RecordType};
use serde_json::{Value as Json, json};

use crate::home::Home;
use crate::node::Node;
use crate::ops::Op;
use crate::parallel::ParallelSigner;

mod api;
mod nat;
mod primitives;
mod scenarios;
use scenarios::*;

pub(super) const SEED: u64 = 42;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Store sizes for the sync scenarios (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub records: Vec<u64>,
    /// Records changed in the incremental and bidirectional scenarios.
    #[arg(long, default_value_t = 100)]
    pub changed: u64,
    /// Records written by the import scenario.
    #[arg(long, default_value_t = 100_000)]
    pub import: u64,
    /// Devices syncing at once with one central (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    pub devices: Vec<u64>,
    /// Records the central holds in the many-devices scenario.
    #[arg(long, default_value_t = 2000)]
    pub device_records: u64,
    /// redb, sled, or both.
    #[arg(long, default_value = "both")]
    pub backend: String,
    /// Seconds of the load scenario: every device syncs over and over while
    /// the central takes a steady stream of writes (0: skip it).
    #[arg(long, default_value_t = 0)]
    pub load_seconds: u64,
    /// Devices in the load scenario.
    #[arg(long, default_value_t = 50)]
    pub load_devices: u64,
    /// Only the load scenario.
    #[arg(long)]
    pub load_only: bool,
    /// Blob sizes in MiB for the blob scenario (comma-separated; empty: skip).
    #[arg(long, value_delimiter = ',', default_value = "50,500")]
    pub blob_mib: Vec<u64>,
    /// Devices fetching each blob at once (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    pub blob_devices: Vec<u64>,
    /// Only the blob scenario.
    #[arg(long)]
    pub blobs_only: bool,
    /// Rounds of the change-feed latency scenario (0: skip the API figures).
    #[arg(long, default_value_t = 30)]
    pub api_rounds: u64,
    /// Requests per run of the API throughput scenario.
    #[arg(long, default_value_t = 3000)]
    pub api_requests: u64,
    /// Only the HTTP API's figures (feed latency, requests per second).
    #[arg(long)]
    pub api_only: bool,
    /// Records of the relayed-versus-direct scenario, run in network
    /// namespaces behind NAT routers (needs root, `ip` and `nft`; 0: skip).
    #[arg(long, default_value_t = 0)]
    pub nat_records: u64,
    /// Only the relayed-versus-direct scenario.
    #[arg(long)]
    pub nat_only: bool,
    /// Tiny sizes, for a smoke run (what CI runs).
    #[arg(long)]
    pub quick: bool,
    /// Keep the benchmark's directory.
    #[arg(long)]
    pub keep: bool,
}

/// One measured scenario.
#[derive(Clone, Debug, Default)]
pub struct Figure {
    pub scenario: String,
    pub backend: String,
    pub records: u64,
    pub changes: u64,
    pub duration_ms: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub round_trips: u64,
    pub rss_a_kb: u64,
    pub rss_b_kb: u64,
    /// CPU time (user + system) the central and the device(s) spent during
    /// the scenario: with the wall time it shows whether a scenario waited
    /// on the CPU or on something else.
    pub cpu_a_ms: u64,
    pub cpu_b_ms: u64,
    pub note: String,
    /// The primitives measured in the same run, for the fractions.
    pub limits: Option<primitives::Primitives>,
}

impl Figure {
    fn rate(&self) -> f64 {
        if self.duration_ms <= 0.0 { 0.0 } else { self.changes as f64 / (self.duration_ms / 1000.0) }
    }

    fn per_record(&self) -> f64 {
        if self.changes == 0 { 0.0 } else { (self.bytes_sent + self.bytes_received) as f64 / self.changes as f64 }
    }

    /// The figure as a fraction of each primitive's rate (records per
    /// second over operations per second), to compare across days.
    fn fractions(&self) -> Option<Json> {
        let limits = self.limits?;
        let of = |per_s: f64| if per_s > 0.0 { (self.rate() / per_s * 1000.0).round() / 1000.0 } else { 0.0 };
        Some(json!({
            "sign": of(limits.sign_per_s),
            "verify": of(limits.verify_per_s),
            "insert": of(limits.inserts_per_s),
        }))
    }

    pub fn to_json(&self) -> Json {
        json!({
            "scenario": self.scenario,
            "backend": self.backend,
            "store_records": self.records,
            "changes": self.changes,
            "duration_ms": (self.duration_ms * 100.0).round() / 100.0,
            "records_per_s": self.rate().round(),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "bytes_per_record": (self.per_record() * 10.0).round() / 10.0,
            "round_trips": self.round_trips,
            "peak_rss_kb": { "central": self.rss_a_kb, "device": self.rss_b_kb },
            "cpu_ms": { "central": self.cpu_a_ms, "device": self.cpu_b_ms },
            "note": self.note,
            "of_primitives": self.fractions(),
        })
    }
}

/// A `ferry serve` process.
pub(super) struct Proc {
    child: Child,
    home: Home,
    address: String,
    /// The HTTP API's URL, when started with `--http`.
    http: Option<String>,
}

impl Proc {
    fn start(home: &Home) -> anyhow::Result<Proc> {
        Proc::start_with(home, &[])
    }

    /// With more `serve` arguments; waits for the HTTP API when they ask
    /// for it.
    fn start_with(home: &Home, extra: &[&str]) -> anyhow::Result<Proc> {
        let mut serve = vec!["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
        serve.extend_from_slice(extra);
        Proc::spawn(home, None, &serve)
    }

    /// `ferry serve` with these arguments, inside the network namespace
    /// `netns` when given.
    fn spawn(home: &Home, netns: Option<&str>, serve: &[&str]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("cannot find the ferry binary")?;
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let extra = serve;
        let mut child = command
            .arg("--home")
            .arg(&home.dir)
            .args(["--json", "serve"])
            .args(serve)
            .env("RUST_LOG", std::env::var("FERRY_BENCH_LOG").unwrap_or_else(|_| "error".into()))
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("FERRY_BENCH_LOG") {
                Some(_) => std::fs::File::create(home.dir.join("serve.log")).map_or(Stdio::null(), Stdio::from),
                None => Stdio::null(),
            })
            .spawn()
            .context("cannot start ferry serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines.read_line(&mut first)?;
        let event: Json = serde_json::from_str(&first).context("ferry serve did not start")?;
        let address = event["address"].as_str().context("ferry serve printed no address")?.to_owned();
        let mut http = None;
        if extra.contains(&"--http") {
            for _ in 0..16 {
                let mut line = String::new();
                if lines.read_line(&mut line)? == 0 {
                    break;
                }
                let event: Json = serde_json::from_str(&line).unwrap_or_default();
                if event["event"] == "http" {
                    http = event["url"].as_str().map(str::to_owned);
                    break;
                }
            }
            http.as_ref().context("ferry serve --http announced no URL")?;
        }
        Ok(Proc { child, home: home.clone(), address, http })
    }

    async fn op(&self, op: &Op) -> anyhow::Result<Json> {
        crate::control::request(&self.home.control_socket(), op, &mut |_| {}).await?.context("the node stopped serving")
    }

    /// Peak resident memory so far, in KiB.
    fn peak_rss_kb(&self) -> u64 {
        rss_kb(self.child.id(), "VmHWM:")
    }

    /// Resident memory now, in KiB.
    fn rss_now_kb(&self) -> u64 {
        rss_kb(self.child.id(), "VmRSS:")
    }

    /// Resets the peak to the memory held now (Linux: `5` to clear_refs),
    /// so a peak read later is the peak of what came after.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// CPU time used so far, in milliseconds.
    fn cpu_ms(&self) -> u64 {
        cpu_ms(self.child.id())
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn init(root: &Path, name: &str, backend: BackendKind) -> anyhow::Result<Home> {
    let home = Home::resolve(Some(root.join(name)));
    crate::node::init(&home, Some(backend))?;
    Ok(home)
}

/// A central with an org, and devices holding certificates for `results`.
pub(super) fn district(root: &Path, backend: BackendKind, devices: u64) -> anyhow::Result<(Home, OrgId, Vec<Home>)> {
    let central = init(root, "central", backend)?;
    let node = Node::open(central.clone())?;
    let org =
        OrgId::parse(node.org_create("Bench district", Some("central".into()))?["org_id"].as_str().unwrap_or(""))?;
    let mut homes = Vec::new();
    for d in 0..devices {
        let home = init(root, &format!("device-{d}"), backend)?;
        let device = Node::open(home.clone())?;
        let (chain, _) = node.cert_issue(
            org,
            &device.identity.peer_id().to_string(),
            "results",
            "results",
            "",
            30,
            false,
            None,
            None,
        )?;
        device.cert_import(&certs::pem::encode_chain(&chain))?;
        device.close()?;
        homes.push(home);
    }
    node.close()?;
    Ok((central, org, homes))
}

/// Writes `count` workload records (from `first`) into a home that is not
/// serving, as signed local writes in batches.
pub(super) fn preload(home: &Home, org: OrgId, first: u64, count: u64, version: u64) -> anyhow::Result<Duration> {
    let node = Node::open(home.clone())?;
    let (_, _, authority) = node.local_scope(org)?;
    let author = LocalAuthor { key: node.identity.key.clone(), authority };
    let partition = Partition::resolve(org, workload::PARTITION)?;
    let record_type = RecordType::parse(workload::RECORD_TYPE)?;
    let started = Instant::now();
    let mut seq = first;
    while seq < first + count {
        let end = (seq + 2000).min(first + count);
        let writes = workload::writes(&partition, &record_type, SEED, seq..end, version);
        for result in node.store.write_with(
            &author,
            &writes,
            crate::node::now_ms(),
            node.auth.as_ref(),
            &ParallelSigner,
            false,
        )? {
            result.map_err(|e| anyhow::anyhow!("preload: {e}"))?;
        }
        seq = end;
    }
    let elapsed = started.elapsed();
    node.close()?;
    Ok(elapsed)
}

pub(super) fn sync_op(peer: &str, pull: bool, push: bool) -> Op {
    Op::Sync(crate::ops::Sync {
        peer: peer.to_owned(),
        org: None,
        filters: vec![],
        pull,
        push,
        types: vec![],
        skip_types: vec![],
    })
}

/// Runs one sync on `device` and measures it, CPU time of both sides
/// included.
pub(super) async fn measured(
    scenario: &str,
    backend: BackendKind,
    records: u64,
    op: &Op,
    central: &Proc,
    device: &Proc,
) -> anyhow::Result<(Json, Figure)> {
    let cpu = (central.cpu_ms(), device.cpu_ms());
    let result = device.op(op).await?;
    let mut f = figure(scenario, backend, records, &result, central, device);
    f.cpu_a_ms = central.cpu_ms().saturating_sub(cpu.0);
    f.cpu_b_ms = device.cpu_ms().saturating_sub(cpu.1);
    Ok((result, f))
}

pub(super) fn figure(
    scenario: &str,
    backend: BackendKind,
    records: u64,
    result: &Json,
    central: &Proc,
    device: &Proc,
) -> Figure {
    let u = |k: &str| result[k].as_u64().unwrap_or(0);
    Figure {
        scenario: scenario.to_owned(),
        backend: backend.name().to_owned(),
        records,
        changes: u("sent") + u("received"),
        duration_ms: result["duration_ms"].as_f64().unwrap_or(0.0),
        bytes_sent: u("bytes_sent"),
        bytes_received: u("bytes_received"),
        round_trips: u("round_trips"),
        rss_a_kb: central.peak_rss_kb(),
        rss_b_kb: device.peak_rss_kb(),
        ..Figure::default()
    }
}
/// User plus system CPU time of a process, from /proc/PID/stat (fields 14
/// and 15, in USER_HZ ticks, which Linux fixes at 100 per second).
pub(super) fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; count from after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    (tick(11) + tick(12)) * 10
}

/// A field of /proc/PID/status in KiB (`VmRSS:`, `VmHWM:`).
pub(super) fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub async fn run(args: &BenchArgs, json_output: bool) -> anyhow::Result<()> {
    let mut args = args.clone();
    if args.quick {
        args.records = vec![200];
        args.changed = 20;
        args.import = 300;
        args.devices = vec![3];
        args.device_records = 100;
        args.load_seconds = 3;
        args.load_devices = args.load_devices.min(3);
        args.blob_mib = vec![4];
        args.blob_devices = vec![1, 2];
        args.api_rounds = args.api_rounds.min(5);
        args.api_requests = args.api_requests.min(100);
    }
    let backends = match args.backend.as_str() {
        "both" => vec![BackendKind::Redb, BackendKind::Sled],
        other => {
            vec![BackendKind::parse(other).with_context(|| format!("--backend {other:?}: use redb, sled or both"))?]
        }
    };
    let root = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
    let mut all = Vec::new();
    // The primitives of the backend being measured; every scenario's figure
    // is also given as a fraction of them.
    let limits = std::cell::Cell::new(None);
    let mut print = |mut figure: Figure| {
        let own_unit = ["primitive:", "blob ", "feed:", "API:"].iter().any(|p| figure.scenario.starts_with(p));
        if !own_unit {
            figure.limits = limits.get();
        }
        if json_output {
            println!("{}", figure.to_json());
        } else {
            if all.is_empty() {
                println!(
                    "| scenario | backend | store | changes | ms | records/s | bytes sent | bytes received | bytes/record | round trips | peak RSS central / device (MiB) | CPU s central / device | of sign / verify / insert | note |"
                );
                println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            }
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.0} | {} | {} | {:.1} | {} | {:.0} / {:.0} | {:.2} / {:.2} | {} | {} |",
                figure.scenario,
                figure.backend,
                figure.records,
                figure.changes,
                figure.duration_ms,
                figure.rate(),
                figure.bytes_sent,
                figure.bytes_received,
                figure.per_record(),
                figure.round_trips,
                figure.rss_a_kb as f64 / 1024.0,
                figure.rss_b_kb as f64 / 1024.0,
                figure.cpu_a_ms as f64 / 1000.0,
                figure.cpu_b_ms as f64 / 1000.0,
                figure
                    .fractions()
                    .map_or(String::new(), |f| format!("{} / {} / {}", f["sign"], f["verify"], f["insert"])),
                figure.note
            );
        }
        let _ = std::io::stdout().flush();
        all.push(figure);
    };
    let result: anyhow::Result<()> = async {
        for &backend in &backends {
            let inserts = if args.quick { 2_000 } else { 100_000 };
            let (dir, measured) = (root.path().to_path_buf(), backend);
            let (found, figures) = crate::pool::blocking(move || primitives::measure(&dir, measured, inserts)).await?;
            for figure in figures {
                print(figure);
            }
            limits.set(Some(found));
            if args.nat_records > 0 {
                for figure in nat::relayed_and_direct(root.path(), backend, args.nat_records).await? {
                    print(figure);
                }
            }
            if args.nat_only {
                continue;
            }
            if args.api_rounds > 0 {
                for figure in api::api(root.path(), backend, args.api_rounds, args.api_requests).await? {
                    print(figure);
                }
            }
            if args.api_only {
                continue;
            }
            if args.load_seconds > 0 {
                print(load(root.path(), backend, args.load_devices, args.load_seconds, args.device_records).await?);
            }
            if args.load_only {
                continue;
            }
            for &mib in args.blob_mib.iter().filter(|m| **m > 0) {
                for &devices in args.blob_devices.iter().filter(|d| **d > 0) {
                    print(blob_fanout(root.path(), backend, mib, devices).await?);
                }
            }
            if args.blobs_only {
                continue;
            }
            for &records in &args.records {
                sync_scenarios(root.path(), backend, records, args.changed, &mut print).await?;
            }
            let (dir, import) = (root.path().to_path_buf(), args.import);
            print(crate::pool::blocking(move || import_scenario(&dir, backend, import)).await?);
            for &devices in &args.devices {
                print(fanout(root.path(), backend, devices, args.device_records).await?);
            }
        }
        Ok(())
    }
    .await;
    if args.keep {
        let kept: PathBuf = root.keep();
        eprintln!("kept {}", kept.display());
    }
    result
}
