//! `ferry demo`: the README's first command. In a temporary directory, three
//! real nodes (each with its own home, store and libp2p host on 127.0.0.1)
//! play a school district: a central server and two tablets in a test centre.
//! They enrol, sync, lose the central, edit the same record offline, sync
//! device to device, sync with the central again, resolve the conflict, and
//! end holding identical data. Every number printed is measured on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use engine::Value;
use engine::workload;
use libp2p::Multiaddr;
use partitions::OrgId;
use tokio::sync::broadcast;

use crate::control::Shared;
use crate::home::Home;
use crate::net::Net;
use crate::node::Node;
use crate::protocols::SyncOutcome;
use crate::serve::{Report, Responders};

struct Member {
    name: &'static str,
    node: Arc<Node>,
    net: Option<Arc<Net>>,
    responders: Option<Responders>,
}

impl Member {
    async fn create(dir: &std::path::Path, name: &'static str) -> anyhow::Result<Member> {
        let home = Home::resolve(Some(dir.join(name)));
        let node = crate::pool::blocking(move || {
            crate::node::init(&home, None)?;
            Node::open(home).map(Arc::new)
        })
        .await?;
        Ok(Member { name, node, net: None, responders: None })
    }

    /// Store work for this member, on the blocking pool.
    async fn store<T: Send + 'static>(&self, work: impl FnOnce(&Node) -> T + Send + 'static) -> T {
        let node = self.node.clone();
        crate::pool::blocking(move || work(&node)).await
    }

    async fn go_online(&mut self) -> anyhow::Result<String> {
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr");
        let net = Arc::new(Net::start(&self.node.identity, &[listen], false, None).await?);
        let (events, _) = broadcast::channel(16);
        let shared = Shared::new(self.node.clone(), net.clone(), events);
        let quiet: Report = Arc::new(|_| {});
        self.responders = Some(Responders::start(self.node.clone(), &net, shared, quiet)?);
        let address = net.dialable().into_iter().next().context("no listen address")?;
        self.net = Some(net);
        Ok(address)
    }

    async fn go_offline(&mut self) {
        if let Some(responders) = self.responders.take() {
            responders.stop(std::time::Duration::from_secs(5)).await;
        }
        if let Some(net) = self.net.take()
            && let Ok(net) = Arc::try_unwrap(net)
        {
            net.stop();
        }
    }

    async fn sync(&self, address: &str, org: OrgId) -> anyhow::Result<SyncOutcome> {
        let net = self.net.as_ref().context("offline")?;
        crate::protocols::sync(
            &self.node,
            net,
            address,
            org,
            crate::protocols::SyncAsk::everything(),
            None,
            &mut |_| {},
            &mut |_, _, _| {},
        )
        .await
    }

    async fn put(
        &self,
        org: OrgId,
        record_type: &'static str,
        id: &str,
        partition: &'static str,
        fields: BTreeMap<String, Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let id = id.to_owned();
        self.store(move |node| node.put(org, record_type, &id, partition, fields, BTreeSet::new()))
            .await
            .map(|r| r.to_json())
    }

    async fn records(&self, org: OrgId) -> anyhow::Result<Vec<serde_json::Value>> {
        let listed = self.store(move |node| node.list(Some(org), None, None, true)).await?;
        Ok(listed.iter().map(|r| crate::json::record(&r.key, &r.view)).collect())
    }
}

// The narration never panics on a closed stdout (`ferry demo | head`): the
// demo runs on, and its directory is still removed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn step(n: u32, text: &str) {
    say!("\n{n}. {text}");
}

fn line(text: impl std::fmt::Display) {
    say!("   {text}");
}

fn describe(outcome: &SyncOutcome) -> String {
    let s = &outcome.report;
    if s.noop {
        return format!("already in sync ({} bytes, one round trip)", s.bytes_sent + s.bytes_received);
    }
    format!(
        "sent {}, received {} ({} new or fast-forward, {} skipped, {} conflicts), {} bytes in {} ms",
        s.sent,
        s.received,
        s.updated + s.merged,
        s.skipped,
        s.conflicts,
        s.bytes_sent + s.bytes_received,
        s.duration_ms
    )
}

async fn score_of(member: &Member, org: OrgId, id: &'static str) -> anyhow::Result<serde_json::Value> {
    member.store(move |node| node.get(org, "result", id, Some("results:tc-1"))).await.map(|r| r.to_json())
}

pub async fn run(keep: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("ferry-demo-").tempdir()?;
    say!("ferry demo: a school district's central server and two tablets in test centre tc-1.");
    say!("Three real nodes, each with its own store and libp2p host on 127.0.0.1, in {}.", dir.path().display());

    step(1, "The central server creates the organisation and starts serving.");
    let mut central = Member::create(dir.path(), "central").await?;
    let created = central.store(|node| node.org_create("Riverside School District", Some("central".into()))).await?;
    let org = OrgId::parse(created["org_id"].as_str().unwrap_or_default())?;
    let central_address = central.go_online().await?;
    line(format!("org {org} (its id is the hash of its root key: no registry needed)"));
    line(format!("central {} listens on {central_address}", central.node.identity.peer_id()));

    step(2, "It hands out two one-time enrolment tokens; each tablet enrols with its own.");
    let mut tablets = [Member::create(dir.path(), "tablet-a").await?, Member::create(dir.path(), "tablet-b").await?];
    let mut used_token = String::new();
    for tablet in tablets.iter_mut() {
        let net = central.net.as_ref().context("central online")?;
        let addresses = net.dialable();
        let token = central
            .store(move |node| {
                node.create_token(
                    org,
                    "tests,results:tc-1",
                    "results:tc-1",
                    "test=ro",
                    3600,
                    1,
                    30,
                    false,
                    None,
                    addresses,
                )
            })
            .await?;
        let token = token["token"].as_str().context("a token")?.to_owned();
        tablet.go_online().await?;
        let enrolled =
            crate::protocols::enroll(&tablet.node, tablet.net.as_ref().context("online")?, &token, tablet.name).await?;
        line(format!(
            "{} ({}) enrolled: certificate {}, may read tests and results:tc-1, write results:tc-1, tests read-only",
            tablet.name,
            tablet.node.identity.peer_id(),
            enrolled["certificate_id"].as_str().unwrap_or("?")
        ));
        used_token = token;
    }
    let again =
        crate::protocols::enroll(&tablets[0].node, tablets[0].net.as_ref().context("online")?, &used_token, "again")
            .await;
    line(format!(
        "tablet-a tries tablet-b's token again: {}",
        again.err().map_or("accepted (wrong!)".to_owned(), |e| format!("{e}"))
    ));

    step(3, "The central writes tests and results, Morango-shaped (10 fields, about 400 bytes each).");
    for t in 0..5 {
        central
            .put(
                org,
                "test",
                &format!("test-{t}"),
                "tests",
                BTreeMap::from([
                    ("title".into(), Value::Text(format!("Fractions, part {}", t + 1))),
                    ("items".into(), Value::Int(12)),
                ]),
            )
            .await?;
    }
    for seq in 0..20u64 {
        central.put(org, "result", &format!("r{seq:02}"), "results:tc-1", workload::result_fields(1, seq, 0)).await?;
    }
    for seq in 0..10u64 {
        central
            .put(org, "result", &format!("other-{seq:02}"), "results:tc-2", workload::result_fields(2, seq, 0))
            .await?;
    }
    line("5 tests, 20 results of test centre tc-1, 10 results of test centre tc-2");

    step(4, "Both tablets pull from the central.");
    for tablet in &tablets {
        let outcome = tablet.sync(&central_address, org).await?;
        line(format!("{}: {}", tablet.name, describe(&outcome)));
    }
    let held = tablets[0].records(org).await?.len();
    line(format!(
        "each tablet holds {held} records: tc-2's results never left the central (outside the tablets' read scope)"
    ));
    ensure!(held == 25, "a tablet should hold 25 records, holds {held}");

    step(5, "The central goes away. The tablets keep working offline.");
    central.go_offline().await;
    let offline = tablets[0].sync(&central_address, org).await;
    ensure!(offline.is_err(), "the central answered while offline");
    line("tablet-a tries to sync with the central: unreachable");
    let mut a_edit = BTreeMap::new();
    a_edit.insert("score".to_owned(), Value::Float(0.92));
    a_edit.insert("attempts".to_owned(), Value::Int(2));
    tablets[0].put(org, "result", "r07", "results:tc-1", a_edit).await?;
    line("tablet-a re-marks r07: score = 0.92, attempts = 2");
    let mut b_edit = BTreeMap::new();
    b_edit.insert("score".to_owned(), Value::Float(0.75));
    b_edit.insert("note".to_owned(), Value::Text("checked by hand".into()));
    tablets[1].put(org, "result", "r07", "results:tc-1", b_edit).await?;
    line("tablet-b, a moment later, re-marks the same r07: score = 0.75, note = \"checked by hand\"");
    tablets[0].put(org, "result", "a-new", "results:tc-1", workload::result_fields(3, 1, 0)).await?;
    tablets[1].put(org, "result", "b-new", "results:tc-1", workload::result_fields(3, 2, 0)).await?;
    line("each tablet also records one new result");
    let denied = tablets[0]
        .store(move |node| {
            node.put(
                org,
                "test",
                "test-0",
                "tests",
                BTreeMap::from([("title".into(), Value::Text("x".into()))]),
                BTreeSet::new(),
            )
        })
        .await;
    line(format!(
        "tablet-a tries to edit a test: {}",
        denied.err().map_or("accepted (wrong!)".into(), |e| format!("refused: {e:#}"))
    ));

    step(6, "Tablet A and tablet B sync directly, with no central in reach.");
    let b_address = tablets[1].net.as_ref().context("online")?.dialable().into_iter().next().context("address")?;
    let outcome = tablets[0].sync(&b_address, org).await?;
    line(format!("tablet-a <-> tablet-b: {}", describe(&outcome)));
    for tablet in &tablets {
        let record = score_of(tablet, org, "r07").await?;
        let conflicts: Vec<String> = record["conflicts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} = {}", c["field"].as_str().unwrap_or("record"), c["value"]))
            .collect();
        line(format!(
            "{} shows r07: score {}, attempts {}, note {}; kept conflict: {}",
            tablet.name,
            record["fields"]["score"],
            record["fields"]["attempts"],
            record["fields"]["note"],
            conflicts.join(", ")
        ));
    }
    line("the same field was edited on both sides: the newer edit wins on every node, the other value is kept;");
    line("fields edited on one side only (attempts, note) merge");

    step(7, "The central comes back; both tablets sync with it.");
    let central_address = central.go_online().await?;
    for tablet in &tablets {
        let outcome = tablet.sync(&central_address, org).await?;
        line(format!("{} <-> central: {}", tablet.name, describe(&outcome)));
    }

    step(8, "The district resolves the conflict on the central (it takes tablet-a's score) and the tablets sync.");
    let resolved = central
        .store(move |node| node.resolve(org, "result", "r07", Some("results:tc-1"), Some(1), BTreeMap::new()))
        .await
        .map(|r| r.to_json())?;
    line(format!(
        "central: r07 score = {}, conflicts left: {}",
        resolved["fields"]["score"],
        resolved["conflicts"].as_array().map_or(0, Vec::len)
    ));
    for tablet in &tablets {
        let outcome = tablet.sync(&central_address, org).await?;
        line(format!("{} <-> central: {}", tablet.name, describe(&outcome)));
    }

    step(9, "Do all three hold identical data?");
    let tc1 = |records: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        records.into_iter().filter(|r| !r["partition"].as_str().unwrap_or("").contains(":results:tc-2")).collect()
    };
    let (c, a, b) =
        (tc1(central.records(org).await?), tc1(tablets[0].records(org).await?), tc1(tablets[1].records(org).await?));
    let conflicts: usize = c.iter().map(|r| r["conflicts"].as_array().map_or(0, Vec::len)).sum();
    if c != a || c != b {
        bail!("the nodes differ: central {} records, tablet-a {}, tablet-b {}", c.len(), a.len(), b.len());
    }
    line(format!(
        "yes: {} records, byte for byte the same on the central and both tablets, {conflicts} conflicts left",
        c.len()
    ));
    let r07 = score_of(&tablets[1], org, "r07").await?;
    let fields = &r07["fields"];
    line(format!(
        "r07 everywhere: score {}, attempts {}, note {}",
        fields["score"], fields["attempts"], fields["note"]
    ));
    let again = tablets[0].sync(&central_address, org).await?;
    line(format!("one more sync: {}", describe(&again)));

    for tablet in tablets.iter_mut() {
        tablet.go_offline().await;
    }
    central.go_offline().await;
    let ledger = central.store(|node| node.history()).await?;
    say!(
        "\nThe central's sync ledger holds {} sessions (`ferry history`). Done in {:.1} s.",
        ledger.len(),
        started.elapsed().as_secs_f64()
    );
    for member in [central, tablets.into_iter().next().context("a")?] {
        drop(member.responders);
        if let Ok(node) = Arc::try_unwrap(member.node) {
            crate::pool::blocking(move || node.close()).await?;
        }
    }
    if keep {
        let kept = dir.keep();
        say!("The demo's homes are kept in {} (try `ferry --home {}/central list`).", kept.display(), kept.display());
    }
    Ok(())
}
