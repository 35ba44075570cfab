//! Relayed versus direct (SPEC §6.4, issue 16): a central serving as relay
//! on an "internet" segment, and two devices, each behind its own NAT
//! router, in network namespaces made by the script the NAT tests use
//! (compiled in). Device B pulls the records of device A by its peer id,
//! once behind endpoint-independent ("cone") NATs, where hole punching makes
//! the link direct, and once behind symmetric NATs, where only the relay
//! carries it. The central's CPU time and peak memory are the relay's cost.
//! Needs root, `ip` and `nft`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use engine::BackendKind;

use super::{Figure, Proc, district, measured, preload, sync_op};
use crate::ops::Op;

const SCRIPT: &str = include_str!("../../../tests/netns/two-homes.sh");
const TAG: &str = "bench";
const LISTEN: [&str; 5] =
    ["--listen", "/ip4/0.0.0.0/tcp/4040", "--listen", "/ip4/0.0.0.0/udp/4040/quic-v1", "--no-mdns"];

/// The namespaces of one run, removed when dropped.
struct Namespaces {
    script: std::path::PathBuf,
}

impl Namespaces {
    fn up(dir: &Path, mode: &str) -> anyhow::Result<Namespaces> {
        let script = dir.join("two-homes.sh");
        std::fs::write(&script, SCRIPT)?;
        let _ = Command::new("sh").arg(&script).args(["down", TAG]).output();
        let out = Command::new("sh").arg(&script).args(["up", TAG, mode]).output().context("run sh")?;
        if !out.status.success() {
            bail!(
                "cannot make the namespaces (the NAT scenario needs root, ip and nft): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Namespaces { script })
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg(&self.script).args(["down", TAG]).output();
    }
}

fn ns(name: &str) -> String {
    format!("fh-{name}-{TAG}")
}

/// The peer id at the end of a multiaddr.
fn peer_of(address: &str) -> anyhow::Result<String> {
    address.rsplit("/p2p/").next().map(str::to_owned).context("an address without /p2p/")
}

/// Runs of each kind, alternating: the figure given is the median run's.
const ROUNDS: usize = 3;

pub(super) async fn relayed_and_direct(root: &Path, backend: BackendKind, records: u64) -> anyhow::Result<Vec<Figure>> {
    let kinds = [("cone", "direct"), ("symmetric", "relayed")];
    let mut runs: Vec<Vec<Figure>> = vec![Vec::new(); kinds.len()];
    for round in 0..ROUNDS {
        for (i, (mode, expected)) in kinds.iter().enumerate() {
            runs[i].push(one(root, backend, records, mode, expected, round).await?);
        }
    }
    Ok(runs
        .into_iter()
        .map(|mut figures| {
            figures.sort_by(|x, y| x.duration_ms.total_cmp(&y.duration_ms));
            let all: Vec<String> = figures.iter().map(|f| format!("{:.0}", f.duration_ms)).collect();
            let mut median = figures.swap_remove(figures.len() / 2);
            median.note = format!("median of {ROUNDS} runs ({} ms); {}", all.join(", "), median.note);
            median
        })
        .collect())
}

async fn one(
    root: &Path,
    backend: BackendKind,
    records: u64,
    mode: &str,
    expected: &str,
    round: usize,
) -> anyhow::Result<Figure> {
    let dir = root.join(format!("nat-{}-{mode}-{round}", backend.name()));
    std::fs::create_dir_all(&dir)?;
    let _namespaces = Namespaces::up(&dir, mode)?;
    let (central_home, org, devices) = district(&dir, backend, 2)?;
    preload(&devices[0], org, 0, records, 0)?;
    std::fs::write(central_home.config_file(), "relay_server = true\nmdns = false\n")?;
    let central = Proc::spawn(&central_home, Some(&ns("central")), &LISTEN)?;
    let relay = format!("/ip4/10.214.0.10/tcp/4040/p2p/{}", peer_of(&central.address)?);
    for device in &devices {
        std::fs::write(device.config_file(), format!("mdns = false\nrelays = [\"{relay}\"]\n"))?;
    }
    let a = Proc::spawn(&devices[0], Some(&ns("a")), &LISTEN)?;
    let b = Proc::spawn(&devices[1], Some(&ns("b")), &LISTEN)?;
    let a_id = peer_of(&a.address)?;
    // B finds A at the rendezvous point with a relayed address (A holds a
    // slot), bounded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let peers = b.op(&Op::Peers).await?;
        let ready = peers.as_array().into_iter().flatten().any(|p| {
            p["peer_id"] == a_id.as_str()
                && p["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x.as_str().is_some_and(|x| x.contains("p2p-circuit")))
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("device B never found device A at the rendezvous point: {peers}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    central.reset_peak();
    let scenario = format!("NAT: {expected} ({mode} NATs)");
    let started = Instant::now();
    let (result, mut figure) =
        measured(&scenario, backend, records, &sync_op(&a_id, true, false), &central, &b).await?;
    let wall_ms = started.elapsed().as_millis();
    if result["received"].as_u64() != Some(records) {
        bail!("the {mode} sync moved {} of {records} records", result["received"]);
    }
    let peers = b.op(&Op::Peers).await?;
    let link = peers
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["peer_id"] == a_id.as_str())
        .and_then(|p| p["link"].as_str())
        .unwrap_or("none")
        .to_owned();
    if link != expected {
        bail!("behind {mode} NATs the link ended {link}, not {expected}");
    }
    // `ms` is the session's own count, from once connected; the wall time
    // adds finding the peer, connecting and hole punching (`meet::reach`).
    figure.note = format!("link {link}; {wall_ms} ms with finding and connecting; central = the relay");
    central.stop();
    a.stop();
    b.stop();
    Ok(figure)
}
