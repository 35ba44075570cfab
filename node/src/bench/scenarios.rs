//! The benchmark's scenarios: initial, no-op, incremental and
//! bidirectional syncs at each store size; `ferry import`; many devices
//! syncing with one central at once; and the load scenario (syncs under a
//! steady stream of writes).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use engine::{BackendKind, RecordId, workload};
use partitions::OrgId;
use serde_json::{Value as Json, json};

use crate::ops::Op;

use super::*;

/// Initial, no-op, incremental and bidirectional syncs at one store size.
pub(super) async fn sync_scenarios(
    root: &Path,
    backend: BackendKind,
    records: u64,
    changed: u64,
    out: &mut dyn FnMut(Figure),
) -> anyhow::Result<()> {
    let dir = root.join(format!("{}-{records}", backend.name()));
    let (central_home, org, devices) = district(&dir, backend, 1)?;
    preload(&central_home, org, 0, records, 0)?;
    let central = Proc::start(&central_home)?;
    let device = Proc::start(&devices[0])?;

    let (initial, f) =
        measured("initial", backend, records, &sync_op(&central.address, true, false), &central, &device).await?;
    if initial["received"].as_u64() != Some(records) {
        bail!("initial sync moved {} of {records} records", initial["received"]);
    }
    out(f);

    let (noop, f) =
        measured("no-op", backend, records, &sync_op(&central.address, true, true), &central, &device).await?;
    if noop["noop"] != true {
        bail!("the second sync was not a no-op: {noop}");
    }
    out(f);

    // The central changes `changed` records spread over the store.
    let step = (records / changed.max(1)).max(1);
    let edits: Vec<u64> = (0..changed.min(records)).map(|i| i * step).collect();
    edit(&central, org, &edits, 1).await?;
    let (_, f) =
        measured("incremental", backend, records, &sync_op(&central.address, true, false), &central, &device).await?;
    out(f);

    // Both sides edit: half of the device's edits touch the central's records.
    edit(&central, org, &edits, 2).await?;
    let device_edits: Vec<u64> = edits.iter().enumerate().map(|(i, &s)| if i % 2 == 0 { s } else { s + 1 }).collect();
    edit(&device, org, &device_edits, 3).await?;
    let (both, mut f) =
        measured("bidirectional", backend, records, &sync_op(&central.address, true, true), &central, &device).await?;
    f.note = format!("{} conflicts kept", both["conflicts"]);
    out(f);

    central.stop();
    device.stop();
    Ok(())
}

/// Edits records through a serving node's control socket (one import).
pub(super) async fn edit(node: &Proc, org: OrgId, seqs: &[u64], version: u64) -> anyhow::Result<()> {
    let path = node.home.dir.join(format!("edits-{version}.ndjson"));
    let mut file = std::fs::File::create(&path)?;
    for &s in seqs {
        let fields: serde_json::Map<String, Json> = workload::result_fields(SEED, s, version)
            .iter()
            .map(|(k, v)| (k.clone(), crate::json::to_json(v)))
            .collect();
        writeln!(
            file,
            "{}",
            json!({ "type": workload::RECORD_TYPE, "id": workload::record_id(SEED, s).as_str(), "partition": workload::PARTITION, "fields": fields })
        )?;
    }
    drop(file);
    let result = node.op(&Op::Import(crate::ops::Import { org: Some(org.to_string()), path })).await?;
    if result["rejected"].as_u64() != Some(0) {
        bail!("edits were rejected: {result}");
    }
    Ok(())
}

/// `ferry import` of `count` NDJSON records, as a user runs it.
pub(super) fn import_scenario(root: &Path, backend: BackendKind, count: u64) -> anyhow::Result<Figure> {
    let dir = root.join(format!("{}-import", backend.name()));
    let (home, _, _) = district(&dir, backend, 0)?;
    let path = dir.join("records.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for s in 0..count {
        let fields: serde_json::Map<String, Json> =
            workload::result_fields(SEED, s, 0).iter().map(|(k, v)| (k.clone(), crate::json::to_json(v))).collect();
        let id: RecordId = workload::record_id(SEED, s);
        writeln!(
            file,
            "{}",
            json!({ "type": workload::RECORD_TYPE, "id": id.as_str(), "partition": workload::PARTITION, "fields": fields })
        )?;
    }
    file.flush()?;
    drop(file);
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let child = Command::new(exe)
        .arg("--home")
        .arg(&home.dir)
        .args(["--json", "import"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watch = {
        let (peak, cpu) = (peak.clone(), cpu.clone());
        std::thread::spawn(move || {
            // Sample the importer's peak memory and CPU time until it exits.
            while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(kb) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak.store(kb, std::sync::atomic::Ordering::Relaxed);
                }
                cpu.fetch_max(cpu_ms(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let output = child.wait_with_output()?;
    let elapsed = started.elapsed();
    let _ = watch.join();
    let result: Json = serde_json::from_slice(&output.stdout).context("ferry import printed no result")?;
    if result["written"].as_u64() != Some(count) {
        bail!("import wrote {} of {count}", result["written"]);
    }
    Ok(Figure {
        scenario: "import".into(),
        backend: backend.name().into(),
        records: count,
        changes: count,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        rss_b_kb: peak.load(std::sync::atomic::Ordering::Relaxed),
        cpu_b_ms: cpu.load(std::sync::atomic::Ordering::Relaxed),
        note: "whole command: start, parse, sign, write, exit".into(),
        ..Figure::default()
    })
}

/// A central serving `devices` devices that all sync at once.
pub(super) async fn fanout(root: &Path, backend: BackendKind, devices: u64, records: u64) -> anyhow::Result<Figure> {
    let dir = root.join(format!("{}-fanout-{devices}", backend.name()));
    let (central_home, org, homes) = district(&dir, backend, devices)?;
    preload(&central_home, org, 0, records, 0)?;
    let central = Proc::start(&central_home)?;
    let procs: Vec<Proc> = homes.iter().map(Proc::start).collect::<anyhow::Result<_>>()?;
    let cpu_before = (central.cpu_ms(), procs.iter().map(Proc::cpu_ms).sum::<u64>());
    let started = Instant::now();
    let op = sync_op(&central.address, true, false);
    let syncs = procs.iter().map(|p| p.op(&op));
    let results = futures::future::join_all(syncs).await;
    let elapsed = started.elapsed();
    let mut figure = Figure {
        scenario: format!("{devices} devices at once"),
        backend: backend.name().into(),
        records,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        rss_a_kb: central.peak_rss_kb(),
        rss_b_kb: procs.iter().map(Proc::peak_rss_kb).max().unwrap_or(0),
        cpu_a_ms: central.cpu_ms().saturating_sub(cpu_before.0),
        cpu_b_ms: procs.iter().map(Proc::cpu_ms).sum::<u64>().saturating_sub(cpu_before.1),
        ..Figure::default()
    };
    let mut slowest: f64 = 0.0;
    for result in results {
        let result = result?;
        if result["received"].as_u64() != Some(records) {
            bail!("a device received {} of {records}", result["received"]);
        }
        figure.changes += records;
        figure.bytes_sent += result["bytes_sent"].as_u64().unwrap_or(0);
        figure.bytes_received += result["bytes_received"].as_u64().unwrap_or(0);
        figure.round_trips += result["round_trips"].as_u64().unwrap_or(0);
        slowest = slowest.max(result["duration_ms"].as_f64().unwrap_or(0.0));
    }
    figure.note = format!("{records} records to each; slowest device {slowest:.0} ms; rates count all devices");
    central.stop();
    for p in procs {
        p.stop();
    }
    Ok(figure)
}

/// Records each device writes per round of the load scenario, and records
/// the central writes every `LOAD_WRITE_EVERY`.
pub(super) const LOAD_DEVICE_WRITES: u64 = 5;
pub(super) const LOAD_CENTRAL_WRITES: u64 = 20;
pub(super) const LOAD_WRITE_EVERY: Duration = Duration::from_millis(100);

/// A central under many devices that sync over and over, with a steady
/// stream of local writes, for `seconds`; then every device syncs until all
/// agree, checked by a final round in which every sync must be a no-op.
pub(super) async fn load(
    root: &Path,
    backend: BackendKind,
    devices: u64,
    seconds: u64,
    records: u64,
) -> anyhow::Result<Figure> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let dir = root.join(format!("{}-load-{devices}", backend.name()));
    let (central_home, org, homes) = district(&dir, backend, devices)?;
    preload(&central_home, org, 0, records, 0)?;
    let central = Proc::start(&central_home)?;
    let procs: Vec<Proc> = homes.iter().map(Proc::start).collect::<anyhow::Result<_>>()?;
    let both = sync_op(&central.address, true, true);
    for result in futures::future::join_all(procs.iter().map(|p| p.op(&both))).await {
        result?;
    }
    let stop = AtomicBool::new(false);
    let (syncs, moved, written) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (bytes_sent, bytes_received) = (AtomicU64::new(0), AtomicU64::new(0));
    let cpu_before = (central.cpu_ms(), procs.iter().map(Proc::cpu_ms).sum::<u64>());
    let started = Instant::now();
    // The central's own writes: a steady stream through its local API.
    let writer = async {
        let mut version = 1;
        let mut next = 0;
        while !stop.load(Relaxed) {
            let seqs: Vec<u64> = (0..LOAD_CENTRAL_WRITES).map(|i| (next + i) % records.max(1)).collect();
            next += LOAD_CENTRAL_WRITES;
            version += 1;
            edit(&central, org, &seqs, version).await?;
            written.fetch_add(LOAD_CENTRAL_WRITES, Relaxed);
            tokio::time::sleep(LOAD_WRITE_EVERY).await;
        }
        anyhow::Ok(())
    };
    // Each device: write a few of its own records, sync, pause, again.
    let device_loops = procs.iter().enumerate().map(|(d, p)| {
        let (stop, syncs, moved, both) = (&stop, &syncs, &moved, &both);
        let (bytes_sent, bytes_received) = (&bytes_sent, &bytes_received);
        async move {
            let first = 10_000_000 + d as u64 * 1_000_000;
            let mut round = 0;
            while !stop.load(Relaxed) {
                let seqs: Vec<u64> = (0..LOAD_DEVICE_WRITES).map(|i| first + round * LOAD_DEVICE_WRITES + i).collect();
                edit(p, org, &seqs, 1).await?;
                let result = p.op(both).await.with_context(|| format!("device {d}, round {round}"))?;
                syncs.fetch_add(1, Relaxed);
                bytes_sent.fetch_add(result["bytes_sent"].as_u64().unwrap_or(0), Relaxed);
                bytes_received.fetch_add(result["bytes_received"].as_u64().unwrap_or(0), Relaxed);
                moved.fetch_add(
                    result["sent"].as_u64().unwrap_or(0) + result["received"].as_u64().unwrap_or(0),
                    Relaxed,
                );
                round += 1;
                tokio::time::sleep(Duration::from_millis(crate::random::bytes::<1>()[0] as u64 * 2)).await;
            }
            anyhow::Ok(())
        }
    });
    // Memory of the central over time, to show it stays bounded.
    let samples = std::sync::Mutex::new(Vec::new());
    let sampler = async {
        while !stop.load(Relaxed) {
            samples.lock().expect("samples").push(rss_kb(central.child.id(), "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let timer = async {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Relaxed);
    };
    let (w, devices_done, (), ()) = futures::join!(writer, futures::future::join_all(device_loops), sampler, timer);
    w?;
    for result in devices_done {
        result?;
    }
    let elapsed = started.elapsed();
    // Settle: everyone syncs twice (the second round carries what others
    // pushed in the first), then a round that must change nothing.
    for _ in 0..2 {
        for result in futures::future::join_all(procs.iter().map(|p| p.op(&both))).await {
            result?;
        }
    }
    for (d, result) in futures::future::join_all(procs.iter().map(|p| p.op(&both))).await.into_iter().enumerate() {
        let result = result?;
        if result["noop"] != true {
            bail!("device {d} had not converged after the load: {result}");
        }
    }
    let samples = samples.into_inner().expect("samples");
    let half = samples.len() / 2;
    let first_half = samples[..half].iter().max().copied().unwrap_or(0);
    let second_half = samples[half..].iter().max().copied().unwrap_or(0);
    let figure = Figure {
        scenario: format!("load: {devices} devices, {seconds} s"),
        backend: backend.name().into(),
        records,
        changes: moved.load(Relaxed),
        bytes_sent: bytes_sent.load(Relaxed),
        bytes_received: bytes_received.load(Relaxed),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        rss_a_kb: central.peak_rss_kb(),
        rss_b_kb: procs.iter().map(Proc::peak_rss_kb).max().unwrap_or(0),
        cpu_a_ms: central.cpu_ms().saturating_sub(cpu_before.0),
        cpu_b_ms: procs.iter().map(Proc::cpu_ms).sum::<u64>().saturating_sub(cpu_before.1),
        note: format!(
            "{} syncs, none failed; central wrote {} records ({:.0}/s); central RSS max {} MiB in the first half, {} MiB in the second; all converged",
            syncs.load(Relaxed),
            written.load(Relaxed),
            written.load(Relaxed) as f64 / elapsed.as_secs_f64(),
            first_half / 1024,
            second_half / 1024
        ),
        ..Figure::default()
    };
    central.stop();
    for p in procs {
        p.stop();
    }
    Ok(figure)
}

/// A blob of `mib` MiB on the central, fetched by `devices` devices at
/// once after the one record naming it; then a second sync that must move
/// no blob byte. Memory is each side's peak during the sync above what it
/// held before it (VmHWM is reset to VmRSS first, where Linux allows).
pub(super) async fn blob_fanout(root: &Path, backend: BackendKind, mib: u64, devices: u64) -> anyhow::Result<Figure> {
    let dir = root.join(format!("{}-blob-{mib}-{devices}", backend.name()));
    let (central_home, org, homes) = district(&dir, backend, devices)?;
    let size = mib * 1024 * 1024;
    let file = dir.join("package.bin");
    write_noise(&file, size)?;
    {
        let node = crate::node::Node::open(central_home.clone())?;
        let reference = node.blobs.add_file(&file, &mut |_, _| {})?;
        let set = [("package".to_owned(), reference.to_value())].into_iter().collect();
        node.put(org, workload::RECORD_TYPE, "package", workload::PARTITION, set, Default::default())?;
        node.close()?;
    }
    std::fs::remove_file(&file)?;
    let central = Proc::start(&central_home)?;
    let procs: Vec<Proc> = homes.iter().map(Proc::start).collect::<anyhow::Result<_>>()?;
    let before = (central.rss_now_kb(), procs.iter().map(Proc::rss_now_kb).collect::<Vec<_>>());
    central.reset_peak();
    procs.iter().for_each(Proc::reset_peak);
    let cpu_before = (central.cpu_ms(), procs.iter().map(Proc::cpu_ms).sum::<u64>());
    let op = sync_op(&central.address, true, false);
    let started = Instant::now();
    let results = futures::future::join_all(procs.iter().map(|p| p.op(&op))).await;
    let elapsed = started.elapsed();
    let mut moved = 0u64;
    for result in results {
        let result = result?;
        if result["blob_bytes_received"].as_u64() != Some(size) {
            bail!("a device received {} blob bytes of {size}: {result}", result["blob_bytes_received"]);
        }
        moved += size;
    }
    let growth = |peak: u64, before: u64| peak.saturating_sub(before);
    let device_growth = procs.iter().zip(&before.1).map(|(p, b)| growth(p.peak_rss_kb(), *b)).max().unwrap_or(0);
    let central_growth = growth(central.peak_rss_kb(), before.0);
    let mut figure = Figure {
        scenario: format!("blob {mib} MiB to {devices} device{}", if devices == 1 { "" } else { "s" }),
        backend: backend.name().into(),
        records: 1,
        changes: devices,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        bytes_received: moved,
        rss_a_kb: central_growth,
        rss_b_kb: device_growth,
        cpu_a_ms: central.cpu_ms().saturating_sub(cpu_before.0),
        cpu_b_ms: procs.iter().map(Proc::cpu_ms).sum::<u64>().saturating_sub(cpu_before.1),
        ..Figure::default()
    };
    // Held now: a second sync moves no blob byte.
    let again = procs[0].op(&op).await?;
    if again["blob_bytes_received"].as_u64() != Some(0) {
        bail!("a blob already held was sent again: {again}");
    }
    let mib_per_s = moved as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9);
    figure.note = format!(
        "{mib_per_s:.0} MiB/s in all, whole sync from the command; memory columns are growth during the sync (central {:.0} MiB, largest device {:.0} MiB); a second sync moved 0 blob bytes",
        central_growth as f64 / 1024.0,
        device_growth as f64 / 1024.0
    );
    central.stop();
    for p in procs {
        p.stop();
    }
    Ok(figure)
}

/// Writes `size` bytes no compressor shrinks.
fn write_noise(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = (size - written).min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        written += n as u64;
    }
    out.flush()?;
    Ok(())
}
