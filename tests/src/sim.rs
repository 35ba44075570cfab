//! The deterministic multi-node simulator.
//!
//! One thread, virtual time, one seeded generator. Three to seven nodes, each
//! with a store in a temporary directory (most in memory, a seeded eighth
//! each on redb and sled), hold scopes drawn from an org's partition tree:
//! the whole org, one facility, a single-user device in Morango's style, a
//! read-only portal, a device that may only read tests and never sees
//! answers. They write, delete and edit
//! the same fields concurrently, and sync random pairs with random filters
//! through the real sans-IO session, over a network that drops, duplicates,
//! delays and reorders messages, cuts links, isolates nodes, and crashes and
//! restarts them. Some syncs are narrowed by per-peer type rules; on odd
//! seeds the org's profile sends results only once finished (send-when),
//! and the converge phase finishes them. On every third seed the profile
//! evicts results once the central holds them, and some devices may only
//! write results (`wo`): each evicts what its sessions with the central
//! proved the central holds.
//!
//! After every step it checks safety: no node holds a record outside its
//! scope, no frontier entry claims a change the node cannot serve (or
//! evicted), no session claims its peer holds what it lacks, and no
//! instance's counter goes back. Then faults stop, every pair syncs until
//! nothing moves, and it checks convergence: any two nodes hold identical
//! records, conflicts and frontiers in the region both may read; the central
//! reflects every result a write-only node wrote, and those nodes hold none.
//! Every retained change's signature must verify.
//!
//! A failure reports the seed and the last steps; `SIM_SEED=<seed>` replays it
//! (read by `tests/simulator.rs`).
//! Debugging aids: `SIM_TRACE=1` prints every step as it happens,
//! `SIM_TRACE_NET=1` adds every delivered message, and `SIM_CALM=1` turns
//! off cuts, isolation and crashes (drops, duplicates and reordering stay).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use ed25519_dalek::SigningKey;
use engine::backend::BackendKind;
use engine::{
    AuthorKey, Env, Event, InstanceId, LocalAuthor, LocalOp, LocalWrite, RecordId, RecordKey, Region, SerialSigner,
    SerialVerifier, Session, SessionConfig, StaticAuthorizer, Store, Value, View,
};
use partitions::{Filter, OrgId, Partition, RecordType, Scope, TypeMode, WriteKind};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// How a simulation run went.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub steps: usize,
    pub writes: u64,
    pub syncs_started: u64,
    pub syncs_completed: u64,
    pub syncs_failed: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub crashes: u64,
    /// Records write-only nodes evicted once the central held them.
    pub evicted: u64,
    pub convergence_rounds: usize,
    pub records: usize,
    pub conflicts: usize,
    /// Session failures by reason (the reason's text up to its first digit).
    pub failures: BTreeMap<String, u64>,
}

/// A violated property, with the seed and the steps that led to it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: usize,
    pub message: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation seed {} failed at step {}: {}", self.seed, self.step, self.message)?;
        writeln!(f, "replay with: SIM_SEED={} cargo test -p tests --test simulator", self.seed)?;
        writeln!(f, "last steps:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub seed: u64,
    pub steps: usize,
}

const TYPES: [&str; 3] = ["result", "answer", "test"];
const FIELDS: [&str; 4] = ["score", "attempts", "done", "note"];
const RETRANSMIT_MS: u64 = 2_000;
const IDLE_MS: u64 = 20_000;
const TRACE_LINES: usize = 60;

struct SimNode {
    name: String,
    kind: BackendKind,
    dir: tempfile::TempDir,
    store: Option<Store>,
    seed: u8,
    scope: Scope,
}

/// A session at one node: its peer, the state machine, and when it finished.
type SimSession = (usize, Session, Option<u64>);

struct InFlight {
    from: usize,
    to: usize,
    session: [u8; 16],
    frame: Vec<u8>,
}

struct World {
    rng: StdRng,
    now: u64,
    org: OrgId,
    leaves: Vec<Partition>,
    auth: StaticAuthorizer,
    nodes: Vec<SimNode>,
    net: Vec<InFlight>,
    /// (node, session id) → (peer, session, when it finished).
    sessions: BTreeMap<(usize, [u8; 16]), SimSession>,
    cuts: BTreeSet<(usize, usize)>,
    isolated: BTreeSet<usize>,
    counters: BTreeMap<(usize, InstanceId), u64>,
    trace: VecDeque<String>,
    report: Report,
    step: usize,
    /// This seed's org profile sends `result` records only once `done`
    /// holds 1 (SPEC §6.2, send when finished): every node reads the org's
    /// system partition and gets the profile before anything is written.
    send_when: bool,
    /// A property a session broke, found while flushing it; reported by
    /// the next safety check.
    violation: Option<String>,
    /// This seed's profile evicts `result` records once the central
    /// (node 0, the acknowledging authority) holds them, on the nodes that
    /// may only write them (`wo`; SPEC §6.2, push once, then evict).
    evict: bool,
    /// Per node, what its last completed session with the central proved
    /// the central holds (a node's `frontier:<org>` note).
    acked: BTreeMap<usize, engine::store::Held>,
    /// Every result a write-only node wrote, with the change's dot: the
    /// central must reflect each one in the end.
    wo_written: Vec<(usize, RecordKey, engine::Dot)>,
}

/// The field and value a `result` waits for when `send_when` is on.
const DONE_FIELD: &str = "done";
const DONE_VALUE: i64 = 1;

/// Runs one seed. Returns the report, or the first violated property.
pub fn run(options: Options) -> Result<Report, Failure> {
    let mut world = World::new(options.seed);
    for step in 0..options.steps {
        world.step = step;
        world.random_step();
        if world.send_when {
            world.reissue_all()?;
        }
        world.check_safety(step % 10 == 9)?;
    }
    world.converge()?;
    world.report.steps = options.steps;
    Ok(world.report)
}

/// The Morango issue 144 scenario: data written on a single-user device
/// reaches a third device through a second, and verifies there.
pub fn morango_144(kind: BackendKind) -> Result<(), String> {
    let mut world = World::empty(144, kind);
    let org = world.org;
    let f = |t: &str| Filter::parse(org, t).expect("valid");
    let user = world.add_node(
        kind,
        Scope { read: f("f0:user-ro,f0:user-rw:u0"), write: f("f0:user-rw:u0"), types: Default::default() },
        "single-user",
    );
    let facility = world.add_node(kind, Scope { read: f("f0"), write: f("f0"), types: Default::default() }, "facility");
    let third = world.add_node(kind, Scope { read: f("f0"), write: f("f0"), types: Default::default() }, "third");
    let key = RecordKey {
        partition: Partition::resolve(org, "f0:user-rw:u0").expect("p"),
        record_type: RecordType::parse("result").expect("t"),
        id: RecordId::parse("exercise-1").expect("id"),
    };
    world
        .write(
            user,
            &key,
            LocalOp::Put { set: [("score".to_owned(), Value::Int(7))].into(), unset: Default::default() },
        )
        .map_err(|e| format!("write on the single-user device: {e}"))?;
    // The single-user device syncs its own narrow filter with the facility device.
    world.sync_reliably(user, facility, Filter::parse(org, "f0:user-rw:u0").expect("f"), true, true)?;
    // Then the facility device syncs the whole facility with a third device.
    world.sync_reliably(third, facility, Filter::parse(org, "f0").expect("f"), true, true)?;
    let store = world.nodes[third].store.as_ref().expect("alive");
    let view = store.view(&key).map_err(|e| e.to_string())?.ok_or("the third device lacks the record")?;
    if view.fields.get("score") != Some(&Value::Int(7)) {
        return Err(format!("the third device shows {:?}", view.fields));
    }
    let state = store.record(&key).map_err(|e| e.to_string())?.ok_or("no state")?;
    for change in &state.changes {
        store.verify_change(change).map_err(|e| format!("the relayed change does not verify: {e}"))?;
        if change.author_key != AuthorKey(world.key(user).verifying_key().to_bytes()) {
            return Err("the relayed change is not the single-user device's".into());
        }
    }
    Ok(())
}

impl World {
    fn empty(seed: u64, _kind: BackendKind) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut root = [0u8; 32];
        rng.fill(&mut root[..]);
        let org = OrgId::from_public_key(&root);
        World {
            rng,
            now: 1_700_000_000_000,
            org,
            leaves: Vec::new(),
            auth: StaticAuthorizer::new(),
            nodes: Vec::new(),
            net: Vec::new(),
            sessions: BTreeMap::new(),
            cuts: BTreeSet::new(),
            isolated: BTreeSet::new(),
            counters: BTreeMap::new(),
            trace: VecDeque::new(),
            report: Report { seed, ..Report::default() },
            step: 0,
            // From the seed, not the generator: the other draws stay put.
            send_when: seed % 2 == 1,
            violation: None,
            evict: seed.is_multiple_of(3),
            acked: BTreeMap::new(),
            wo_written: Vec::new(),
        }
    }

    fn new(seed: u64) -> World {
        let mut world = World::empty(seed, BackendKind::Redb);
        let org = world.org;
        // A random partition tree: facilities, each with shared learner
        // data, per-learner partitions and test-centre results.
        let facilities = world.rng.random_range(1..=3usize);
        let mut leaves = Vec::new();
        for f in 0..facilities {
            leaves.push(format!("f{f}:user-ro"));
            for u in 0..world.rng.random_range(1..=3usize) {
                leaves.push(format!("f{f}:user-rw:u{u}"));
            }
            leaves.push(format!("f{f}:results:tc-{}", world.rng.random_range(1..=2u32)));
        }
        world.leaves = leaves.iter().map(|l| Partition::resolve(org, l).expect("valid leaf")).collect();
        let count = world.rng.random_range(3..=7usize);
        for i in 0..count {
            // Most nodes keep their store in memory, so a seed costs
            // microseconds of IO; a seeded fraction stays on the file
            // backends, so their durability and the instance rule's file
            // checks stay in every campaign.
            let kind = match world.rng.random_range(0..8u32) {
                0 => BackendKind::Redb,
                1 => BackendKind::Sled,
                _ => BackendKind::Memory,
            };
            let (scope, name) = if i == 0 { (Scope::full(org), "central".to_owned()) } else { world.random_scope() };
            world.add_node(kind, scope, &format!("{name}#{i}"));
        }
        world.report.nodes = count;
        if world.send_when || world.evict {
            world.publish_profile();
        }
        world
    }

    /// The central writes the profile and every node pulls it.
    fn publish_profile(&mut self) {
        let key = engine::store::profile_key(self.org);
        let mut text = "newest".to_owned();
        if self.send_when {
            text.push_str(&format!(",send-when:{DONE_FIELD}={DONE_VALUE}"));
        }
        if self.evict {
            text.push_str(",evict-after-ack:central");
        }
        let set = BTreeMap::from([("result".to_owned(), Value::Text(text.clone()))]);
        self.write(0, &key, LocalOp::Put { set, unset: BTreeSet::new() }).expect("the central writes the profile");
        let system = Filter::new([engine::policy::system_partition(self.org)]);
        for node in 1..self.nodes.len() {
            self.sync_reliably(node, 0, system.clone(), true, false).expect("the profile reaches every node");
        }
        self.log(format!("the profile says result: {text}"));
    }

    /// Converge phase with send-when: every node finishes each unfinished
    /// result it holds and may write (so nothing stays held back).
    fn finish_results(&mut self) -> Result<(), Failure> {
        for node in 0..self.nodes.len() {
            let store = self.nodes[node].store.as_ref().expect("all alive");
            let mut unfinished = Vec::new();
            store
                .list(None, Some(&RecordType::parse("result").expect("type")), &mut |r| {
                    if r.view.exists && r.view.fields.get(DONE_FIELD) != Some(&Value::Int(DONE_VALUE)) {
                        unfinished.push(r.key);
                    }
                    true
                })
                .map_err(|e| self.fail(e.to_string()))?;
            for key in unfinished {
                if self.nodes[node].scope.may_write(&key.partition, &key.record_type, WriteKind::Update) {
                    let set = BTreeMap::from([(DONE_FIELD.to_owned(), Value::Int(DONE_VALUE))]);
                    self.write(node, &key, LocalOp::Put { set, unset: BTreeSet::new() })
                        .map_err(|e| self.fail(format!("{} cannot finish {key:?}: {e}", self.nodes[node].name)))?;
                }
            }
        }
        Ok(())
    }

    fn random_scope(&mut self) -> (Scope, String) {
        let (mut scope, name) = self.random_member_scope();
        if self.send_when || self.evict {
            scope.read = scope.read.union(&Filter::new([engine::policy::system_partition(self.org)]));
        }
        (scope, name)
    }

    fn random_member_scope(&mut self) -> (Scope, String) {
        let org = self.org;
        let f = |t: &str| Filter::parse(org, t).expect("valid filter");
        let fac = format!("f{}", self.rng.random_range(0..3u32));
        let types = |list: &[(&str, TypeMode)]| {
            list.iter().map(|(t, m)| (RecordType::parse(t).expect("type"), *m)).collect::<BTreeMap<_, _>>()
        };
        match self.rng.random_range(0..if self.evict { 7 } else { 5u32 }) {
            0 => (Scope::full(org), "full".into()),
            1 => (Scope { read: f(&fac), write: f(&fac), types: BTreeMap::new() }, format!("facility-{fac}")),
            2 => {
                let u = format!("{fac}:user-rw:u{}", self.rng.random_range(0..3u32));
                (
                    Scope { read: f(&format!("{fac}:user-ro,{u}")), write: f(&u), types: BTreeMap::new() },
                    format!("single-user-{u}"),
                )
            }
            3 => (Scope { read: Filter::org(org), write: Filter::empty(), types: BTreeMap::new() }, "portal".into()),
            4 => (
                Scope {
                    read: f(&fac),
                    write: f(&fac),
                    types: types(&[("test", TypeMode::ReadOnly), ("answer", TypeMode::None)]),
                },
                format!("no-answers-{fac}"),
            ),
            // A test-taking device: it writes results it never receives.
            _ => (
                Scope { read: f(&fac), write: f(&fac), types: types(&[("result", TypeMode::WriteOnly)]) },
                format!("write-only-{fac}"),
            ),
        }
    }

    fn add_node(&mut self, kind: BackendKind, scope: Scope, name: &str) -> usize {
        let index = self.nodes.len();
        let seed = index as u8 + 1;
        // tmpfs when there is one: fsync is a no-op there, which keeps
        // thousands of seeds fast without changing what the stores do.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let fresh = self.fresh_instance();
        let (store, _) = Store::open(dir.path(), kind, fresh, self.now).expect("open store");
        let key = AuthorKey(SigningKey::from_bytes(&self.secret(seed)).verifying_key().to_bytes());
        self.auth.grant(key, scope.clone(), None);
        store.put_chain(&key, &key.0).expect("own credentials");
        self.nodes.push(SimNode { name: name.to_owned(), kind, dir, store: Some(store), seed, scope });
        index
    }

    fn secret(&self, seed: u8) -> [u8; 32] {
        let mut s = [seed; 32];
        s[..8].copy_from_slice(&self.report.seed.to_be_bytes());
        s
    }

    fn key(&self, node: usize) -> SigningKey {
        SigningKey::from_bytes(&self.secret(self.nodes[node].seed))
    }

    fn author_key(&self, node: usize) -> AuthorKey {
        AuthorKey(self.key(node).verifying_key().to_bytes())
    }

    fn fresh_instance(&mut self) -> InstanceId {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id[..]);
        InstanceId(id)
    }

    fn log(&mut self, line: String) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("[{} t={}] {line}", self.step, self.now % 1_000_000_000);
        }
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{} t={}] {line}", self.step, self.now % 1_000_000_000));
    }

    fn fail(&self, message: String) -> Failure {
        Failure { seed: self.report.seed, step: self.step, message, trace: self.trace.iter().cloned().collect() }
    }

    // -- actions -------------------------------------------------------------

    /// What a node does after its sessions: writes again its own changes to
    /// records a peer finished while it held them back (send-when).
    fn reissue_all(&mut self) -> Result<(), Failure> {
        for node in 0..self.nodes.len() {
            let author = LocalAuthor { key: self.key(node), authority: None };
            let Some(store) = self.nodes[node].store.as_ref() else { continue };
            let written = store
                .reissue_marked(&author, self.now, &self.auth, &SerialSigner)
                .map_err(|e| self.fail(format!("{}: reissue: {e}", self.nodes[node].name)))?;
            if written > 0 {
                let line = format!("{} writes again {written} held-back changes", self.nodes[node].name);
                self.log(line);
            }
        }
        Ok(())
    }

    fn random_step(&mut self) {
        match self.rng.random_range(0..1000u32) {
            0..200 => self.random_write(),
            200..320 => self.random_sync(),
            320..720 => self.deliver_random(),
            720..760 => self.drop_random(),
            760..800 => self.duplicate_random(),
            800..900 => self.advance_time(),
            900..975 if std::env::var_os("SIM_CALM").is_some() => {}
            900..915 => self.cut(),
            915..923 => self.isolate(),
            923..963 => self.heal(),
            963..975 => self.crash(),
            _ => self.restart_one(),
        }
    }

    fn writable(&self, node: usize) -> Vec<(Partition, RecordType)> {
        let scope = &self.nodes[node].scope;
        let mut out = Vec::new();
        for leaf in &self.leaves {
            for t in TYPES {
                let t = RecordType::parse(t).expect("type");
                if scope.may_write(leaf, &t, WriteKind::Create) {
                    out.push((leaf.clone(), t));
                }
            }
        }
        out
    }

    fn random_write(&mut self) {
        let node = self.rng.random_range(0..self.nodes.len());
        if self.nodes[node].store.is_none() {
            return;
        }
        let options = self.writable(node);
        if options.is_empty() {
            return;
        }
        let (partition, record_type) = options[self.rng.random_range(0..options.len())].clone();
        let id = RecordId::parse(&format!("r{}", self.rng.random_range(0..4u32))).expect("id");
        let key = RecordKey { partition, record_type, id };
        let roll = self.rng.random_range(0..100u32);
        let op = if roll < 12 {
            LocalOp::Delete
        } else if roll < 16 {
            LocalOp::Restore
        } else {
            let mut set = BTreeMap::new();
            for _ in 0..self.rng.random_range(1..=2u32) {
                let field = FIELDS[self.rng.random_range(0..FIELDS.len())];
                set.insert(field.to_owned(), Value::Int(self.rng.random_range(0..10i64)));
            }
            // With send-when, results are often finished or reopened.
            if self.send_when && key.record_type.as_str() == "result" && self.rng.random_bool(0.3) {
                set.insert(DONE_FIELD.to_owned(), Value::Int(self.rng.random_range(0..2i64)));
            }
            let mut unset = BTreeSet::new();
            if self.rng.random_bool(0.1) {
                unset.insert(FIELDS[self.rng.random_range(0..FIELDS.len())].to_owned());
            }
            LocalOp::Put { set, unset }
        };
        let described = format!(
            "{} writes {:?} {}/{}/{}",
            self.nodes[node].name,
            short_op(&op),
            key.partition.relative(),
            key.record_type,
            key.id
        );
        match self.write(node, &key, op) {
            Ok(()) => {
                self.report.writes += 1;
                self.log(described);
            }
            Err(e) => self.log(format!("{described}: refused ({e})")),
        }
    }

    fn write(&mut self, node: usize, key: &RecordKey, op: LocalOp) -> Result<(), String> {
        let author = LocalAuthor { key: self.key(node), authority: None };
        let store = self.nodes[node].store.as_ref().ok_or("node is down")?;
        let result = store
            .write(&author, &[LocalWrite { record: key.clone(), op }], self.now, &self.auth, &SerialSigner)
            .map_err(|e| e.to_string())?;
        let written = result.into_iter().next().expect("one result").map_err(|e| e.to_string())?;
        if self.nodes[node].scope.mode(&key.record_type) == TypeMode::WriteOnly && !written.unchanged {
            self.wo_written.push((node, key.clone(), written.dot));
        }
        Ok(())
    }

    /// After a completed session of `node` with `peer`: what it proved the
    /// central holds is kept, and a write-only node evicts what that covers.
    fn after_session(&mut self, node: usize, peer: usize, holds: Option<Vec<engine::wire::HeadEntry>>) {
        if !self.evict || peer != 0 {
            return;
        }
        if let Some(holds) = holds {
            let held = holds.into_iter().map(|e| ((e.partition, e.record_type, e.instance), e.counter)).collect();
            self.acked.insert(node, held);
        }
        self.evict_acked(node);
    }

    fn evict_acked(&mut self, node: usize) {
        let result = RecordType::parse("result").expect("type");
        let scope = self.nodes[node].scope.clone();
        let (Some(store), Some(acked)) = (self.nodes[node].store.as_ref(), self.acked.get(&node)) else { return };
        if scope.mode(&result) != TypeMode::WriteOnly {
            return;
        }
        let evicts = |p: &Partition, t: &RecordType| *t == result && scope.write.contains(p);
        match store.evict_acknowledged(self.org, &evicts, acked) {
            Ok(0) => {}
            Ok(n) => {
                self.report.evicted += n;
                let line = format!("{} evicts {n} results the central holds", self.nodes[node].name);
                self.log(line);
            }
            Err(e) => {
                let message = format!("{}: eviction: {e}", self.nodes[node].name);
                self.violation.get_or_insert(message);
            }
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cuts.contains(&(a.min(b), a.max(b))) && !self.isolated.contains(&a) && !self.isolated.contains(&b)
    }

    fn random_sync(&mut self) {
        let n = self.nodes.len();
        let a = self.rng.random_range(0..n);
        let b = (a + self.rng.random_range(1..n)) % n;
        if self.nodes[a].store.is_none() {
            return;
        }
        let filter = if self.rng.random_bool(0.5) {
            Filter::org(self.org)
        } else {
            let leaf = self.leaves[self.rng.random_range(0..self.leaves.len())].clone();
            // A leaf or its facility.
            if self.rng.random_bool(0.5) {
                Filter::new([leaf])
            } else {
                let fac = leaf.segments().next().expect("has a facility").to_owned();
                Filter::new([Partition::resolve(self.org, &fac).expect("valid")])
            }
        };
        let (pull, push) = match self.rng.random_range(0..5u32) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let mut id = [0u8; 16];
        self.rng.fill(&mut id[..]);
        let mut config = self.config(a, b, id);
        config.filter = filter.clone();
        config.pull = pull;
        config.push = push;
        config.batch_changes = self.rng.random_range(1..=6usize);
        config.retransmit_ms = Some(RETRANSMIT_MS);
        // Per-peer type rules on some syncs: what they leave out must come
        // with a later sync (the converge phase syncs every type).
        config.types = match self.rng.random_range(0..8u32) {
            0 => engine::region::TypeRules {
                only: Some(
                    [TYPES[self.rng.random_range(0..TYPES.len())]].map(|t| RecordType::parse(t).expect("type")).into(),
                ),
                skip: BTreeSet::new(),
            },
            1 => engine::region::TypeRules {
                only: None,
                skip: [TYPES[self.rng.random_range(0..TYPES.len())]]
                    .map(|t| RecordType::parse(t).expect("type"))
                    .into(),
            },
            _ => engine::region::TypeRules::default(),
        };
        let rules = config.types.clone();
        let session = Session::initiate(config, self.now);
        self.sessions.insert((a, id), (b, session, None));
        self.report.syncs_started += 1;
        let line = format!(
            "{} starts sync {} with {} filter {} pull {pull} push {push}{}",
            self.nodes[a].name,
            partitions::hex::encode(&id[..3]),
            self.nodes[b].name,
            filter
                .prefixes()
                .iter()
                .map(|p| if p.depth() == 0 { "<org>".to_owned() } else { p.relative().to_owned() })
                .collect::<Vec<_>>()
                .join(","),
            if rules.is_empty() { String::new() } else { format!(" types {:?} skip {:?}", rules.only, rules.skip) }
        );
        self.log(line);
        self.flush(a, id);
    }

    fn config(&mut self, node: usize, peer: usize, id: [u8; 16]) -> SessionConfig {
        let own = self.author_key(node);
        let mut config = SessionConfig::new(id, self.author_key(peer), own.0.to_vec(), self.nodes[node].scope.clone());
        config.started_at_ms = self.now;
        config.idle_timeout_ms = IDLE_MS;
        config.fresh_instance = self.fresh_instance();
        // Both windows, so batches overtaking a lost one are exercised too.
        config.window = self.rng.random_range(1..=engine::limits::WINDOW_MAX);
        config
    }

    /// Moves a session's output to the network and its events to the report.
    fn flush(&mut self, node: usize, id: [u8; 16]) {
        let Some(store) = self.nodes[node].store.as_ref() else {
            return;
        };
        let Some((peer, session, _)) = self.sessions.get_mut(&(node, id)) else {
            return;
        };
        let env = Env { store, auth: &self.auth, verifier: &SerialVerifier };
        let peer = *peer;
        let mut frames = Vec::new();
        for _ in 0..4 {
            while let Some(frame) = session.poll_transmit() {
                frames.push(frame);
            }
            session.handle_idle(self.now, &env);
        }
        let mut events = Vec::new();
        while let Some(event) = session.poll_event() {
            events.push(event);
        }
        let peer_holds = session.peer_holds();
        for frame in frames {
            self.net.push(InFlight { from: node, to: peer, session: id, frame });
        }
        for event in events {
            match event {
                Event::Completed(s) => {
                    self.report.syncs_completed += 1;
                    if let Err(e) = self.check_holds(node, peer, peer_holds.as_deref()) {
                        self.violation.get_or_insert(e);
                    }
                    self.after_session(node, peer, peer_holds.clone());
                    let line =
                        format!("{} completes {}: {}", self.nodes[node].name, partitions::hex::encode(&id[..3]), s);
                    self.log(line);
                }
                Event::Failed { error, .. } => {
                    self.report.syncs_failed += 1;
                    let kind: String = error.to_string().chars().take_while(|c| !c.is_ascii_digit()).collect();
                    *self.report.failures.entry(kind).or_default() += 1;
                    let line = format!(
                        "{} session {} failed: {error}",
                        self.nodes[node].name,
                        partitions::hex::encode(&id[..3])
                    );
                    self.log(line);
                }
                Event::InstanceChanged { reason } => {
                    let line = format!("{} changes instance: {reason}", self.nodes[node].name);
                    self.log(line);
                }
                _ => {}
            }
        }
    }

    fn deliver_random(&mut self) {
        if self.net.is_empty() {
            return;
        }
        // Mostly in order, sometimes any message: reordering.
        let index = if self.rng.random_bool(0.7) { 0 } else { self.rng.random_range(0..self.net.len()) };
        let message = self.net.remove(index);
        self.deliver(message);
    }

    fn deliver(&mut self, m: InFlight) {
        if !self.linked(m.from, m.to) || self.nodes[m.to].store.is_none() {
            self.report.dropped += 1;
            return;
        }
        self.now += self.rng.random_range(0..20u64);
        let key = (m.to, m.session);
        if !self.sessions.contains_key(&key) {
            // Only a Hello opens a session at the responder.
            if !matches!(engine::wire::decode_message(&m.frame), Ok(engine::wire::Message::Hello(_))) {
                self.report.dropped += 1;
                return;
            }
            let mut config = self.config(m.to, m.from, m.session);
            config.retransmit_ms = Some(RETRANSMIT_MS);
            let session = Session::accept(config, self.now);
            self.sessions.insert(key, (m.from, session, None));
        }
        let store = self.nodes[m.to].store.as_ref().expect("checked above");
        let env = Env { store, auth: &self.auth, verifier: &SerialVerifier };
        let (_, session, _) = self.sessions.get_mut(&key).expect("inserted above");
        session.handle_message(self.now, &m.frame, &env);
        self.report.delivered += 1;
        if std::env::var_os("SIM_TRACE_NET").is_some() {
            let what = engine::wire::decode_message(&m.frame)
                .map(|msg| format!("{msg:?}").chars().take(90).collect::<String>())
                .unwrap_or_default();
            let line = format!("deliver {} -> {} [{}]: {what}", m.from, m.to, partitions::hex::encode(&m.session[..3]));
            self.log(line);
        }
        self.flush(m.to, m.session);
    }

    fn drop_random(&mut self) {
        if !self.net.is_empty() {
            let i = self.rng.random_range(0..self.net.len());
            self.net.remove(i);
            self.report.dropped += 1;
        }
    }

    fn duplicate_random(&mut self) {
        if !self.net.is_empty() {
            let i = self.rng.random_range(0..self.net.len());
            let m = &self.net[i];
            let copy = InFlight { from: m.from, to: m.to, session: m.session, frame: m.frame.clone() };
            self.net.push(copy);
            self.report.duplicated += 1;
        }
    }

    fn advance_time(&mut self) {
        self.now += self.rng.random_range(20..800u64);
        let due: Vec<(usize, [u8; 16])> = self
            .sessions
            .iter()
            .filter(|(_, (_, s, _))| s.poll_timeout().is_some_and(|t| t <= self.now))
            .map(|(k, _)| *k)
            .collect();
        for (node, id) in due {
            if let Some(store) = self.nodes[node].store.as_ref() {
                let env = Env { store, auth: &self.auth, verifier: &SerialVerifier };
                if let Some((_, session, _)) = self.sessions.get_mut(&(node, id)) {
                    session.handle_timeout(self.now, &env);
                }
                self.flush(node, id);
            }
        }
        // Finished sessions linger, like TCP's TIME-WAIT, to answer a peer
        // whose last message was lost; then they are forgotten.
        let now = self.now;
        for (_, (_, session, finished_at)) in self.sessions.iter_mut() {
            if session.is_finished() && finished_at.is_none() {
                *finished_at = Some(now);
            }
        }
        self.sessions.retain(|_, (_, _, f)| f.is_none_or(|at| now - at < 3 * IDLE_MS));
    }

    fn cut(&mut self) {
        let n = self.nodes.len();
        let a = self.rng.random_range(0..n);
        let b = (a + self.rng.random_range(1..n)) % n;
        if self.cuts.insert((a.min(b), a.max(b))) {
            let line = format!("cut {} - {}", self.nodes[a].name, self.nodes[b].name);
            self.log(line);
        }
    }

    fn isolate(&mut self) {
        let node = self.rng.random_range(0..self.nodes.len());
        if self.isolated.insert(node) {
            let line = format!("isolate {}", self.nodes[node].name);
            self.log(line);
        }
    }

    /// Heals one cut link or isolated node.
    fn heal(&mut self) {
        let cut = self.cuts.iter().next().copied();
        if let Some(pair) = cut.filter(|_| self.rng.random_bool(0.6) || self.isolated.is_empty()) {
            self.cuts.remove(&pair);
            self.log(format!("heal link {pair:?}"));
        } else if let Some(node) = self.isolated.iter().next().copied() {
            self.isolated.remove(&node);
            let line = format!("rejoin {}", self.nodes[node].name);
            self.log(line);
        }
    }

    fn crash(&mut self) {
        let node = self.rng.random_range(0..self.nodes.len());
        if self.nodes[node].store.is_some() {
            // The store is dropped without closing; in-flight sessions and
            // unsent messages die with the process.
            self.nodes[node].store = None;
            self.sessions.retain(|(n, _), _| *n != node);
            self.report.crashes += 1;
            let line = format!("crash {}", self.nodes[node].name);
            self.log(line);
        }
    }

    fn restart_one(&mut self) {
        if let Some(node) = (0..self.nodes.len()).find(|&n| self.nodes[n].store.is_none()) {
            self.restart(node);
        }
    }

    fn restart(&mut self, node: usize) {
        let fresh = self.fresh_instance();
        let (store, opened) = reopen(self.nodes[node].dir.path(), self.nodes[node].kind, fresh, self.now);
        let line = format!(
            "restart {} as {:?} ({})",
            self.nodes[node].name,
            opened.instance,
            opened.fresh_instance.unwrap_or_default()
        );
        self.nodes[node].store = Some(store);
        self.log(line);
    }

    // -- properties ----------------------------------------------------------

    fn check_safety(&mut self, deep: bool) -> Result<(), Failure> {
        if let Some(message) = self.violation.take() {
            return Err(self.fail(message));
        }
        for i in 0..self.nodes.len() {
            let Some(store) = self.nodes[i].store.as_ref() else {
                continue;
            };
            let scope = &self.nodes[i].scope;
            // Counters never go back.
            let key = (i, store.instance());
            let counter = store.counter();
            if let Some(last) = self.counters.get(&key)
                && counter < *last
            {
                return Err(self.fail(format!("{}: counter went back from {last} to {counter}", self.nodes[i].name)));
            }
            self.counters.insert(key, counter);
            if !deep {
                continue;
            }
            // Nothing outside the node's scope.
            let mut outside = None;
            store
                .list(None, None, &mut |r| {
                    if !scope.may_hold(&r.key.partition, &r.key.record_type) {
                        outside = Some(r.key);
                        return false;
                    }
                    true
                })
                .map_err(|e| self.fail(e.to_string()))?;
            if let Some(key) = outside {
                return Err(self.fail(format!("{} holds {key:?} outside its scope", self.nodes[i].name)));
            }
            // No frontier entry claims a change the node cannot serve.
            let heads = store.heads(&Region::of(Filter::org(self.org))).map_err(|e| self.fail(e.to_string()))?;
            for head in heads {
                let mut found = Vec::new();
                let end = store
                    .scan_group(
                        &head.partition,
                        &head.record_type,
                        &head.instance,
                        head.counter - 1,
                        head.counter,
                        1,
                        u64::MAX,
                        &mut found,
                    )
                    .map_err(|e| self.fail(e.to_string()))?;
                // A change held back until its record is finished is held;
                // no peer ever needs it: the write that finishes the record
                // supersedes it (docs/protocol.md, "Send when finished").
                let held_back = found.is_empty() && end.held_back == 1;
                // An evicted change is claimed and never served again: no
                // peer below the eviction mark gets the triple from here.
                let evicted = store
                    .evicted(&head.partition, &head.record_type, &head.instance)
                    .map_err(|e| self.fail(e.to_string()))?
                    >= head.counter;
                if !held_back && !evicted && (found.len() != 1 || found[0].counter != head.counter) {
                    return Err(self.fail(format!(
                        "{}: frontier claims {head:?} but the store cannot serve it",
                        self.nodes[i].name
                    )));
                }
            }
        }
        Ok(())
    }

    /// What a completed session claims its peer holds (`Session::peer_holds`,
    /// which purges, evictions and bundles trust), the peer holds: every
    /// change this node would send up to the claim is reflected in the
    /// peer's copy of its record (held there, or superseded by what is).
    fn check_holds(&self, node: usize, peer: usize, holds: Option<&[engine::wire::HeadEntry]>) -> Result<(), String> {
        let (Some(holds), Some(store), Some(peer_store)) =
            (holds, self.nodes[node].store.as_ref(), self.nodes[peer].store.as_ref())
        else {
            return Ok(());
        };
        for e in holds {
            let mut ours = Vec::new();
            store
                .scan_group(&e.partition, &e.record_type, &e.instance, 0, e.counter, usize::MAX, u64::MAX, &mut ours)
                .map_err(|e| e.to_string())?;
            for change in ours {
                let key = change.record.clone();
                // A record deleted here may retain puts it held back while
                // unfinished (send-when) below the peer's frontier; the
                // delete that reaches the peer has seen them.
                let deleted_here = store.view(&key).map_err(|e| e.to_string())?.is_none_or(|v| !v.exists);
                if deleted_here {
                    continue;
                }
                let reflected =
                    peer_store.record(&key).map_err(|e| e.to_string())?.is_some_and(|r| r.vv.covers(change.dot()));
                if !reflected {
                    return Err(format!(
                        "{}: a session claims {} holds {e:?}, but it lacks {:?} of {key:?}",
                        self.nodes[node].name,
                        self.nodes[peer].name,
                        change.dot()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs one session to completion over a reliable network.
    fn sync_reliably(
        &mut self,
        a: usize,
        b: usize,
        filter: Filter,
        pull: bool,
        push: bool,
    ) -> Result<engine::SyncReport, String> {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id[..]);
        let mut config = self.config(a, b, id);
        config.filter = filter;
        config.pull = pull;
        config.push = push;
        let mut initiator = Session::initiate(config, self.now);
        let responder_config = self.config(b, a, id);
        let mut responder = Session::accept(responder_config, self.now);
        let store_a = self.nodes[a].store.as_ref().ok_or("initiator is down")?;
        let store_b = self.nodes[b].store.as_ref().ok_or("responder is down")?;
        let env_a = Env { store: store_a, auth: &self.auth, verifier: &SerialVerifier };
        let env_b = Env { store: store_b, auth: &self.auth, verifier: &SerialVerifier };
        let mut result = None;
        for _ in 0..1_000_000 {
            let mut moved = false;
            while let Some(frame) = initiator.poll_transmit() {
                responder.handle_message(self.now, &frame, &env_b);
                moved = true;
            }
            responder.handle_idle(self.now, &env_b);
            while let Some(frame) = responder.poll_transmit() {
                initiator.handle_message(self.now, &frame, &env_a);
                moved = true;
            }
            initiator.handle_idle(self.now, &env_a);
            for session in [&mut initiator, &mut responder] {
                while let Some(event) = session.poll_event() {
                    match event {
                        Event::Failed { error, .. } => {
                            return Err(format!("reliable sync failed: {error}"));
                        }
                        Event::Completed(summary) if session.role() == engine::Role::Initiator => {
                            result = Some(summary)
                        }
                        _ => {}
                    }
                }
            }
            if initiator.is_finished() && responder.is_finished() {
                let (held_by_b, held_by_a) = (initiator.peer_holds(), responder.peer_holds());
                self.check_holds(a, b, held_by_b.as_deref())?;
                self.check_holds(b, a, held_by_a.as_deref())?;
                let completed = result.ok_or_else(|| "initiator finished without a summary".to_owned())?;
                self.after_session(a, b, held_by_b);
                self.after_session(b, a, held_by_a);
                if let Some(message) = self.violation.take() {
                    return Err(message);
                }
                return Ok(completed);
            }
            if !moved {
                return Err("reliable sync stalled".into());
            }
        }
        Err("reliable sync did not finish".into())
    }

    fn converge(&mut self) -> Result<(), Failure> {
        self.log("faults stop; every pair syncs until nothing moves".into());
        self.cuts.clear();
        self.isolated.clear();
        self.net.clear();
        self.sessions.clear();
        for node in 0..self.nodes.len() {
            if self.nodes[node].store.is_none() {
                self.restart(node);
            }
        }
        let n = self.nodes.len();
        let org = Filter::org(self.org);
        for round in 0..12 {
            if self.send_when {
                self.finish_results()?;
            }
            let mut quiet = true;
            for a in 0..n {
                for b in 0..n {
                    if a == b {
                        continue;
                    }
                    let summary = self
                        .sync_reliably(a, b, org.clone(), true, true)
                        .map_err(|e| self.fail(format!("{} with {}: {e}", self.nodes[a].name, self.nodes[b].name)))?;
                    // Quiet when nothing moves. Not every quiet sync is a
                    // no-op: a write-only node's frontier can stay past its
                    // peers' where they superseded what it wrote, since
                    // their changes never flow back to it.
                    if summary.sent + summary.received > 0 {
                        quiet = false;
                    }
                    if self.send_when {
                        self.reissue_all()?;
                    }
                }
            }
            self.report.convergence_rounds = round + 1;
            if quiet {
                return self.check_convergence();
            }
        }
        Err(self.fail("syncs kept moving data after 12 rounds".into()))
    }

    fn check_convergence(&mut self) -> Result<(), Failure> {
        let n = self.nodes.len();
        let views: Vec<Vec<(RecordKey, View)>> = (0..n)
            .map(|i| {
                let mut out = Vec::new();
                self.nodes[i].store.as_ref().expect("all alive").list(None, None, &mut |r| {
                    out.push((r.key, r.view));
                    true
                })?;
                Ok(out)
            })
            .collect::<Result<_, engine::StoreError>>()
            .map_err(|e| self.fail(e.to_string()))?;
        for a in 0..n {
            for b in (a + 1)..n {
                let region = shared_region(&self.nodes[a].scope, &self.nodes[b].scope);
                let pick = |records: &[(RecordKey, View)]| {
                    records
                        .iter()
                        .filter(|(k, _)| region.contains(&k.partition, &k.record_type))
                        .cloned()
                        .collect::<Vec<_>>()
                };
                let (va, vb) = (pick(&views[a]), pick(&views[b]));
                if va != vb {
                    let mut diff = String::new();
                    for (k, v) in &va {
                        if !vb.iter().any(|(k2, v2)| k2 == k && v2 == v) {
                            let _ = write!(diff, "\n  only on {}: {k:?} {v:?}", self.nodes[a].name);
                        }
                    }
                    for (k, v) in &vb {
                        if !va.iter().any(|(k2, v2)| k2 == k && v2 == v) {
                            let _ = write!(diff, "\n  only on {}: {k:?} {v:?}", self.nodes[b].name);
                        }
                    }
                    return Err(self.fail(format!(
                        "{} and {} differ in the region both read:{diff}",
                        self.nodes[a].name, self.nodes[b].name
                    )));
                }
                let heads = |i: usize| self.nodes[i].store.as_ref().expect("alive").heads(&region);
                let (ha, hb) =
                    (heads(a).map_err(|e| self.fail(e.to_string()))?, heads(b).map_err(|e| self.fail(e.to_string()))?);
                if ha != hb {
                    return Err(self.fail(format!(
                        "{} and {} have different frontiers in the region both read",
                        self.nodes[a].name, self.nodes[b].name
                    )));
                }
            }
        }
        // Push once, then evict: the central reflects every result a
        // write-only node wrote, and once it acknowledged them all, those
        // nodes hold none.
        let result = RecordType::parse("result").expect("type");
        let central = self.nodes[0].store.as_ref().expect("alive");
        for (node, key, dot) in &self.wo_written {
            let state = central.record(key).map_err(|e| self.fail(e.to_string()))?;
            if !state.is_some_and(|s| s.vv.covers(*dot)) {
                return Err(self.fail(format!(
                    "the central lacks {dot:?} of {key:?}, which write-only {} wrote",
                    self.nodes[*node].name
                )));
            }
        }
        for i in 0..n {
            if !(self.evict && self.nodes[i].scope.mode(&result) == TypeMode::WriteOnly) {
                continue;
            }
            let mut left = Vec::new();
            self.nodes[i]
                .store
                .as_ref()
                .expect("alive")
                .list(None, Some(&result), &mut |r| {
                    left.push(r.key);
                    true
                })
                .map_err(|e| self.fail(e.to_string()))?;
            if !left.is_empty() {
                return Err(self.fail(format!(
                    "write-only {} still holds {left:?} after the central acknowledged everything",
                    self.nodes[i].name
                )));
            }
        }
        // Every retained change verifies.
        for i in 0..n {
            let store = self.nodes[i].store.as_ref().expect("alive");
            let mut keys = Vec::new();
            store
                .list(None, None, &mut |r| {
                    keys.push(r.key);
                    true
                })
                .map_err(|e| self.fail(e.to_string()))?;
            for key in keys {
                let state = store.record(&key).map_err(|e| self.fail(e.to_string()))?.expect("listed");
                for change in &state.changes {
                    if let Err(e) = store.verify_change(change) {
                        return Err(self.fail(format!(
                            "{}: stored change {:?} does not verify: {e}",
                            self.nodes[i].name,
                            change.dot()
                        )));
                    }
                }
            }
        }
        self.report.records = views[0].len();
        self.report.conflicts = views[0].iter().filter(|(_, v)| !v.conflicts.is_empty()).count();
        Ok(())
    }
}

/// Reopens a store after an in-process "crash". A killed process releases
/// sled's file lock at once; in one process, sled's background IO threads may
/// hold it a moment longer after the drop, so yield until they let go.
fn reopen(dir: &std::path::Path, kind: BackendKind, fresh: InstanceId, now: u64) -> (Store, engine::Opened) {
    let mut last = None;
    for _ in 0..200_000 {
        match Store::open(dir, kind, fresh, now) {
            Ok(opened) => return opened,
            Err(e) if e.to_string().contains("lock") => {
                last = Some(e);
                std::thread::yield_now();
            }
            Err(e) => panic!("reopen {}: {e}", dir.display()),
        }
    }
    panic!("reopen {}: the lock was never released: {last:?}", dir.display());
}

/// What two nodes may both read (and so must agree on).
fn shared_region(a: &Scope, b: &Scope) -> Region {
    let filter = a.read.intersection(&b.read);
    let excluded = a.types.iter().chain(&b.types).filter(|(_, m)| !m.may_read()).map(|(t, _)| t.clone()).collect();
    Region { filter, excluded_types: excluded, only_types: None }
}

fn short_op(op: &LocalOp) -> String {
    match op {
        LocalOp::Put { set, unset } => {
            let mut s: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            s.extend(unset.iter().map(|k| format!("-{k}")));
            format!("put {}", s.join(" "))
        }
        LocalOp::Delete => "delete".into(),
        LocalOp::Restore => "restore".into(),
        LocalOp::Reissue(dot) => format!("reissue {dot:?}"),
    }
}
