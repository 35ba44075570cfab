//! `GET /metrics` (SPEC §6.3): the node's figures in the OpenMetrics text
//! format, through `prometheus-client`. Counters count from the node's
//! start: sessions by role and outcome, changes and bytes moved, changes
//! refused by reason, conflicts kept. Gauges are read when scraped: the
//! store's size on disk, known and connected peers, sessions in flight, the
//! change feed's newest cursor.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    role: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    state: String,
}

pub struct Metrics {
    registry: Registry,
    sessions: Family<SessionLabels, Counter>,
    changes: Family<DirectionLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    rejections: Family<ReasonLabels, Counter>,
    conflicts: Counter,
    store_bytes: Gauge,
    peers: Family<PeerLabels, Gauge>,
    in_flight: Gauge,
    feed_cursor: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut metrics = Metrics {
            sessions: Family::default(),
            changes: Family::default(),
            bytes: Family::default(),
            rejections: Family::default(),
            conflicts: Counter::default(),
            store_bytes: Gauge::default(),
            peers: Family::default(),
            in_flight: Gauge::default(),
            feed_cursor: Gauge::default(),
            registry: Registry::default(),
        };
        let registry = &mut metrics.registry;
        registry.register("ferry_sessions", "Sync sessions ended, by role and outcome", metrics.sessions.clone());
        registry.register("ferry_changes", "Changes moved, by direction", metrics.changes.clone());
        registry.register("ferry_bytes", "Bytes of sync sessions, by direction", metrics.bytes.clone());
        registry.register(
            "ferry_rejections",
            "Changes refused from peers, by kind of reason",
            metrics.rejections.clone(),
        );
        registry.register("ferry_conflicts", "Conflicts kept by merges of received changes", metrics.conflicts.clone());
        registry.register("ferry_store_bytes", "Size of the store's files on disk", metrics.store_bytes.clone());
        registry.register("ferry_peers", "Peers known and connected", metrics.peers.clone());
        registry.register("ferry_sessions_in_flight", "Sync sessions running", metrics.in_flight.clone());
        registry.register("ferry_feed_cursor", "The change feed's newest cursor", metrics.feed_cursor.clone());
        metrics
    }
}

/// The kind of a rejection's reason, from its text: a bounded label set.
fn kind_of(reason: &str) -> &'static str {
    let text = reason.to_ascii_lowercase();
    [
        ("signature", "signature"),
        ("outside", "scope"),
        ("may not", "scope"),
        ("revoked", "revoked"),
        ("expired", "expired"),
        ("equivocat", "equivocation"),
        ("two different changes", "equivocation"),
        ("field", "form"),
        ("bytes", "form"),
        ("counter", "form"),
    ]
    .iter()
    .find(|(needle, _)| text.contains(needle))
    .map_or("other", |(_, kind)| kind)
}

impl Metrics {
    /// A session ended: its role (`initiator`, `responder`) and report, or
    /// why it failed.
    pub fn session(&self, role: &str, result: Result<&engine::SyncReport, &str>) {
        let outcome = match result {
            Ok(r) if r.noop => "noop",
            Ok(_) => "completed",
            Err(_) => "failed",
        };
        self.sessions.get_or_create(&SessionLabels { role: role.into(), outcome: outcome.into() }).inc();
        let Ok(report) = result else { return };
        let direction = |d: &str| DirectionLabels { direction: d.into() };
        self.changes.get_or_create(&direction("sent")).inc_by(report.sent);
        self.changes.get_or_create(&direction("received")).inc_by(report.received);
        self.bytes.get_or_create(&direction("sent")).inc_by(report.bytes_sent);
        self.bytes.get_or_create(&direction("received")).inc_by(report.bytes_received);
        self.conflicts.inc_by(report.conflicts);
        // The report keeps the first reasons; the count is exact.
        let mut counted = 0;
        for reason in &report.rejections {
            self.rejections.get_or_create(&ReasonLabels { reason: kind_of(reason).into() }).inc();
            counted += 1;
        }
        if report.rejected > counted {
            self.rejections
                .get_or_create(&ReasonLabels { reason: "unlisted".into() })
                .inc_by(report.rejected - counted);
        }
    }

    /// The text a scrape answers, with the gauges as `now` has them.
    pub fn render(&self, now: &Scrape) -> String {
        self.store_bytes.set(dir_bytes(&now.store_dir) as i64);
        self.peers.get_or_create(&PeerLabels { state: "known".into() }).set(now.peers_known as i64);
        self.peers.get_or_create(&PeerLabels { state: "connected".into() }).set(now.peers_connected as i64);
        self.in_flight.set(now.in_flight as i64);
        self.feed_cursor.set(now.feed_cursor as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What the gauges show at a scrape.
pub struct Scrape {
    pub store_dir: std::path::PathBuf,
    pub peers_known: usize,
    pub peers_connected: usize,
    pub in_flight: usize,
    pub feed_cursor: u64,
}

/// Bytes of the files under `dir` (not following links).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
