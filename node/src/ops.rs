//! The operations of the `ferry` command and of the local API, as one enum.
//! The command line builds an `Op`; then either runs it here (no node is
//! serving this home) or sends it over the control socket to the node that
//! is (`control.rs`), which runs it here too. Either way the same code does
//! the work and produces the same JSON.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use engine::{Direction, Event};
use partitions::{Filter, OrgId, Partition};
use serde_json::json;

use std::sync::Arc;

use crate::json as j;
use crate::net::Net;

mod request;
use crate::node::Node;
pub use request::*;

/// What an operation may use.
pub struct Ctx<'a> {
    pub node: &'a Arc<Node>,
    /// The serving node's network, if serving.
    pub net: Option<&'a Net>,
    pub enrol_lock: &'a Arc<std::sync::Mutex<()>>,
    /// The serving node's status board, if serving.
    pub status: Option<&'a Arc<crate::status::StatusBoard>>,
}

fn filter(node: &Node, org: OrgId, filters: &[String]) -> anyhow::Result<Filter> {
    if filters.is_empty() {
        return Ok(Filter::org(org));
    }
    let prefixes = filters
        .iter()
        .flat_map(|f| f.split(','))
        .filter(|f| !f.trim().is_empty())
        .map(|f| Partition::resolve(org, f.trim()))
        .collect::<Result<Vec<_>, _>>()
        .context("--filter")?;
    // A prefix outside what this node may read or write would sync nothing
    // and look like "in sync": say so instead.
    let (scope, _, _) = node.local_scope(org)?;
    if let Some(outside) = prefixes.iter().find(|p| !scope.read.overlaps(p) && !scope.write.overlaps(p)) {
        let names = |f: &Filter| {
            f.prefixes()
                .iter()
                .map(|p| if p.relative().is_empty() { "the whole org" } else { p.relative() })
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "--filter {} is outside this node's read scope ({}): nothing there would sync",
            if outside.relative().is_empty() { outside.to_string() } else { outside.relative().to_owned() },
            names(&scope.read)
        );
    }
    Ok(Filter::try_new(prefixes)?)
}

/// Runs an operation. `out` receives progress and streamed lines. What
/// needs the network runs here; everything else runs on the blocking pool
/// (`execute_local`), off tokio's worker threads.
pub async fn execute(ctx: &Ctx<'_>, op: Op, out: &mut (dyn FnMut(Line) + Send)) -> anyhow::Result<serde_json::Value> {
    let node = ctx.node;
    let org = |given: &Option<String>| node.org(given.as_deref());
    Ok(match op {
        Op::EnrollToken(EnrollToken { org: o, read, write, types, ttl_s, uses, days, can_issue, authority }) => {
            let net =
                ctx.net.context("the issuer must be serving to hand out tokens: start `ferry serve` on this home")?;
            let addresses = net.dialable();
            if addresses.is_empty() {
                bail!("this node listens on no address; check `listen` in ferry.toml");
            }
            // tokens.json is rewritten whole, here and by a redemption: one
            // at a time, or a spent use comes back or a new token is lost.
            let org = org(&o)?;
            let (node, lock) = (node.clone(), ctx.enrol_lock.clone());
            crate::pool::blocking(move || {
                let _guard = lock.lock().map_err(|_| anyhow::anyhow!("enrolment lock poisoned"))?;
                let (read, write) = (read.unwrap_or_default(), write.unwrap_or_default());
                node.create_token(org, &read, &write, &types, ttl_s, uses, days, can_issue, authority, addresses)
            })
            .await?
        }
        Op::Enroll { token, name } => {
            let net = ctx.net.context("enrolment needs the network")?;
            let name = name.unwrap_or_else(|| format!("node {}", node.identity.peer_id()));
            crate::protocols::enroll(node, net, &token, &name).await?
        }
        Op::Sync(Sync { peer, org: o, filters, pull, push, types, skip_types }) => {
            let net = ctx.net.context("sync needs the network")?;
            let org = org(&o)?;
            let filter = filter(node, org, &filters)?;
            let types = crate::config::type_rules((!types.is_empty()).then_some(&types[..]), &skip_types)?;
            // Progress of records and of blobs goes out on the same lines.
            let out = std::sync::Mutex::new(out);
            let line = |l: Line| {
                if let Ok(mut out) = out.lock() {
                    (*out)(l)
                }
            };
            let mut on_event = |event: &Event| {
                if let Event::Progress { direction, changes_done, changes_total, .. } = event {
                    let what = match direction {
                        Direction::Outgoing => "sent",
                        Direction::Incoming => "received",
                    };
                    line(Line::Progress { what: what.into(), done: *changes_done, total: *changes_total });
                }
            };
            let mut on_blob = |what: &str, done: u64, total: u64| {
                line(Line::Progress { what: what.into(), done, total });
            };
            let outcome = crate::protocols::sync(
                node,
                net,
                &peer,
                org,
                crate::protocols::SyncAsk { filter: Some(filter), pull, push, types },
                ctx.status,
                &mut on_event,
                &mut on_blob,
            )
            .await?;
            outcome.to_json()
        }
        Op::Peers => {
            let net = ctx.net.context("listing peers needs the network")?;
            serde_json::Value::Array(crate::meet::peers(node, net).await)
        }
        Op::Changes(ask) => changes(node, ask).await?,
        Op::Watch => bail!("watch is only served over the control socket of a running node"),
        Op::Console => bail!(
            "the console is served by a running node: start `ferry serve --http 127.0.0.1:8080` on this home, then run `ferry console`"
        ),
        Op::Status => {
            let board = ctx.status.context(
                "the status is kept by a serving node: start `ferry serve` on this home (`ferry id` and `ferry history` work without it)",
            )?;
            let status = board.snapshot();
            let node = node.clone();
            crate::pool::blocking(move || status_details(&node, status)).await?
        }
        op => {
            // Only `id` shows where the serving node listens.
            let listening = match (&op, ctx.net) {
                (Op::Id, Some(net)) => net.dialable(),
                _ => Vec::new(),
            };
            let imports = matches!(op, Op::BundleImport(_));
            let node = node.clone();
            let answer = {
                let node = node.clone();
                crate::pool::blocking_reporting(move |out| execute_local(&node, op, listening, out), out).await?
            };
            // A bundle's batches are commits from elsewhere, as a sync's.
            if imports {
                crate::hooks::after_apply(&node).await;
            }
            answer
        }
    })
}

/// The longest a long poll of the feed waits.
pub const FEED_WAIT_MS_MAX: u64 = 300_000;

/// A page of the change feed; with `timeout_ms`, waits for a commit when
/// nothing follows the cursor (a long poll), and answers with no entries
/// once the time is up. Shared by the local API and HTTP.
pub async fn changes(node: &Arc<Node>, ask: Changes) -> anyhow::Result<serde_json::Value> {
    let wait = std::time::Duration::from_millis(ask.timeout_ms.unwrap_or(0).min(FEED_WAIT_MS_MAX));
    let deadline = tokio::time::Instant::now() + wait;
    let mut told = node.feed.subscribe();
    loop {
        told.borrow_and_update();
        let reader = node.clone();
        let asked = ask.clone();
        let page = crate::pool::blocking(move || {
            let org = reader.org(asked.org.as_deref())?;
            reader.changes(&crate::node::feed::FeedAsk {
                org,
                since: asked.since,
                record_type: asked.record_type.as_deref(),
                partition: asked.partition.as_deref(),
                limit: asked.limit,
            })
        })
        .await?;
        let empty = page["entries"].as_array().is_none_or(Vec::is_empty);
        let moved = page["last_cursor"].as_u64() != Some(ask.since);
        if !empty || moved || tokio::time::Instant::now() >= deadline {
            return Ok(page);
        }
        // Nothing yet: wait for the next commit that adds to the feed.
        match tokio::time::timeout_at(deadline, told.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Ok(page),
        }
    }
}

/// A status snapshot with what the board does not keep: the feed's
/// cursor, the orgs, the certificates with their expiry, and each peer's
/// lag (a peer id that does not parse, or whose lag cannot be read, shows
/// none).
fn status_details(node: &Node, mut status: crate::status::Status) -> anyhow::Result<serde_json::Value> {
    let chains = node.own_chains()?;
    status.feed_cursor = node.store.feed_last()?;
    let orgs: std::collections::BTreeSet<OrgId> = chains.iter().map(|(c, _)| c.org()).collect();
    status.orgs = orgs.iter().map(ToString::to_string).collect();
    status.certificates = chains.iter().map(|(c, _)| node.certificate(c, true)).collect();
    for (peer, at) in status.peers.iter_mut() {
        let Some(key) = crate::identity::parse_peer_id(peer).ok().and_then(|p| crate::identity::key_of(&p)) else {
            continue;
        };
        let key = engine::AuthorKey(key);
        at.lag = node.lag(&key).ok().flatten();
        at.name = node.store.chains_of(&key).ok().and_then(|chains| {
            chains.iter().find_map(|bytes| certs::Chain::decode(bytes).ok().map(|c| c.leaf().info().name.clone()))
        });
    }
    Ok(serde_json::to_value(status)?)
}

/// The operations that need only the store and the home, run on the
/// blocking pool. `listening`: the addresses the serving node dials on
/// (given for `id` only).
fn execute_local(
    node: &Node,
    op: Op,
    listening: Vec<String>,
    out: &mut dyn FnMut(Line),
) -> anyhow::Result<serde_json::Value> {
    let org = |given: &Option<String>| node.org(given.as_deref());
    Ok(match op {
        Op::Id => {
            let certificates: Vec<serde_json::Value> =
                node.own_chains()?.iter().map(|(chain, _)| node.describe(chain, true)).collect();
            let instances: Vec<serde_json::Value> = node
                .store
                .instances()?
                .into_iter()
                .map(|(id, at, reason)| json!({ "instance_id": id.to_string(), "since": crate::node::iso8601_ms(at), "reason": reason }))
                .collect();
            json!({
                "peer_id": node.identity.peer_id().to_string(),
                "instance_id": node.store.instance().to_string(),
                "listening": listening,
                "certificates": certificates,
                "instances": instances,
                "store": node.store.kind().name(),
            })
        }
        Op::OrgCreate(OrgCreate { name, authority }) => node.org_create(&name, authority)?,
        Op::CertIssue(CertIssue {
            org: o,
            subject,
            read,
            write,
            types,
            days,
            can_issue,
            authority,
            name,
            out: path,
        }) => {
            let (read, write) = (read.unwrap_or_default(), write.unwrap_or_default());
            let (chain, described) =
                node.cert_issue(org(&o)?, &subject, &read, &write, &types, days, can_issue, authority, name)?;
            crate::home::write_atomic(&path, certs::pem::encode_chain(&chain).as_bytes())?;
            let mut described = described;
            described["file"] = json!(path.display().to_string());
            described
        }
        Op::CertImport { pem } => node.cert_import(&pem)?,
        Op::CertList => serde_json::to_value(node.cert_list()?)?,
        Op::CertRevoke(CertRevoke { id }) => node.cert_revoke(&id)?,
        Op::Put { org: o, record_type, id, partition, set, unset } => {
            let set = json_fields(&set)?;
            node.put(org(&o)?, &record_type, &id, &partition, set, unset)?.to_json()
        }
        Op::Get(RecordRef { org: o, record_type, id, partition }) => {
            node.get(org(&o)?, &record_type, &id, partition.as_deref())?.to_json()
        }
        Op::Delete(RecordRef { org: o, record_type, id, partition }) => {
            node.delete(org(&o)?, &record_type, &id, partition.as_deref())?.to_json()
        }
        Op::List(List { org: o, record_type, partition, deleted }) => {
            let org = match (&o, &partition) {
                (None, Some(p)) if OrgId::parse(p.split(':').next().unwrap_or("")).is_ok() => None,
                (None, None) if node.orgs()?.len() != 1 => None,
                _ => Some(org(&o)?),
            };
            let listed = node.list(org, record_type.as_deref(), partition.as_deref(), deleted)?;
            listed.iter().map(|r| j::record(&r.key, &r.view)).collect()
        }
        Op::Import(Import { org: o, path }) => {
            let org = org(&o)?;
            let open = || std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()));
            // One quick pass for the total, so progress has one; only a
            // regular file can be read twice (not a pipe a client names).
            let total = if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                std::io::BufRead::lines(std::io::BufReader::new(open()?))
                    .filter(|l| l.as_ref().is_ok_and(|l| !l.trim().is_empty()))
                    .count() as u64
            } else {
                0
            };
            let mut reader = std::io::BufReader::new(open()?);
            let report = node.import(org, &mut reader, &mut |records| {
                out(Line::Progress { what: "records".into(), done: records, total })
            })?;
            serde_json::to_value(report)?
        }
        Op::Export(Export { org: o, record_type, partition }) => {
            let org = org(&o)?;
            let mut lines = Vec::new();
            let count = node.export(org, record_type.as_deref(), partition.as_deref(), &mut lines)?;
            for line in String::from_utf8_lossy(&lines).lines() {
                out(Line::Record(serde_json::from_str(line)?));
            }
            json!({ "exported": count })
        }
        Op::Conflicts => node.conflicts()?.iter().map(|r| j::record(&r.key, &r.view)).collect(),
        Op::Check(Check { repair }) => j::check(&node.check(repair)?, repair),
        Op::Resolve { org: o, record_type, id, partition, take, set } => {
            let set = json_fields(&set)?;
            node.resolve(org(&o)?, &record_type, &id, partition.as_deref(), take, set)?.to_json()
        }
        Op::History(_) => node.history()?.iter().map(j::ledger_entry).collect(),
        Op::EnrollToken { .. }
        | Op::Enroll { .. }
        | Op::Sync { .. }
        | Op::Peers
        | Op::Changes(_)
        | Op::Watch
        | Op::Console
        | Op::Status => {
            unreachable!("network operations run in `execute`")
        }
        Op::BundleExport(BundleExport { org: o, out: path, for_peer, since, filters }) => {
            let org = org(&o)?;
            let filter = filter(node, org, &filters)?;
            let since = match (&for_peer, &since) {
                (Some(_), Some(_)) => bail!("give --for or --since, not both"),
                (Some(peer), None) => {
                    let peer = crate::identity::parse_peer_id(peer)?;
                    crate::bundle::Since::Peer(engine::AuthorKey(crate::identity::key_of(&peer).expect("checked")))
                }
                (None, Some(file)) => crate::bundle::Since::File(file),
                (None, None) => crate::bundle::Since::Nothing,
            };
            serde_json::to_value(crate::bundle::export(node, org, filter, since, &path)?)?
        }
        Op::BundleImport(BundleImport { path }) => {
            let imported = crate::bundle::import(node, &path, &mut |done, total| {
                out(Line::Progress { what: "received".into(), done, total })
            })?;
            if let Ok(org) = node.org(None)
                && let Err(e) = node.reissue_held_back(org)
            {
                tracing::warn!("cannot write again the changes held back until their records were finished: {e}");
            }
            // The bundle may have carried a revocation of this node's
            // certificate, or a profile that names this node a reader.
            node.check_scopes();
            node.publish_sealing_keys();
            let mut summary = j::report(&imported.exporter.to_string(), &imported.report);
            j::add_fields(
                &mut summary,
                json!({ "blobs_received": imported.blobs_received, "blob_bytes_received": imported.blob_bytes_received }),
            );
            summary
        }
        Op::BundleFrontier(BundleFrontier { org: o, out: path, filters }) => {
            let org = org(&o)?;
            let filter = filter(node, org, &filters)?;
            serde_json::to_value(crate::bundle::write_frontier(node, org, filter, &path)?)?
        }
        Op::BlobGet(BlobGet { hash, out: path }) => {
            let hash = engine::blob::BlobHash::parse(&hash)
                .with_context(|| format!("{hash:?} is not a blob hash (64 hex digits, as `ferry blob list` shows)"))?;
            let size = node.blobs.export(&hash, &path)?;
            json!({ "hash": hash.to_hex(), "size": size, "out": path.display().to_string() })
        }
        Op::BlobList => serde_json::to_value(node.blob_list()?)?,
        Op::ProfileSet(ProfileSet {
            org: o,
            record_type,
            policy,
            delete_wins,
            update_wins,
            local,
            send_when,
            evict_after_ack,
            sealed,
            readers,
        }) => {
            let delete = match (delete_wins, update_wins) {
                (true, true) => bail!("give --delete-wins or --update-wins, not both"),
                (true, false) => Some(engine::policy::DeletePolicy::DeleteWins),
                (false, true) => Some(engine::policy::DeletePolicy::UpdateWins),
                (false, false) => None,
            };
            if policy.is_none()
                && delete.is_none()
                && local.is_none()
                && send_when.is_none()
                && evict_after_ack.is_none()
                && sealed.is_none()
                && readers.is_none()
            {
                bail!(
                    "say what to set: --policy newest|authority:TAG|skip, --delete-wins, --update-wins, --local F,…, --send-when FIELD=VALUE, --evict-after-ack TAG, or --sealed F,… with --readers TAG"
                );
            }
            let readers = tag_flag("--readers", readers.as_deref())?;
            let evict_after_ack = tag_flag("--evict-after-ack", evict_after_ack.as_deref())?;
            let sealed = sealed.as_deref().map(field_list);
            let local = local.as_deref().map(field_list);
            let send_when = match send_when.as_deref().map(str::trim) {
                None => None,
                Some("") => Some(None),
                Some(given) => {
                    let (field, value) = given.split_once('=').with_context(|| {
                        format!("--send-when {given:?}: expected FIELD=VALUE, such as completed=true")
                    })?;
                    let value =
                        crate::json::parse_cli_value(value).map_err(|e| anyhow::anyhow!("--send-when {field}: {e}"))?;
                    if engine::policy::send_when_text(&value).is_none() {
                        bail!("--send-when {given:?}: the value must be true, false, a whole number or a text");
                    }
                    Some(Some((field.trim().to_owned(), value)))
                }
            };
            let changes = crate::node::ProfileChanges {
                policy: policy.as_deref(),
                delete,
                local,
                send_when,
                evict_after_ack,
                sealed,
                readers,
            };
            node.profile_set(org(&o)?, &record_type, changes)?
        }
        Op::ProfileShow(ProfileShow { org: o }) => node.profile_show(org(&o)?)?,
        Op::SealingKey(SealingKey { org: o, rotate }) => {
            let org = org(&o)?;
            if rotate { node.rotate_sealing_key(org)? } else { node.sealing_keys(org)? }
        }
        Op::BlobGc => serde_json::to_value(node.blob_gc(std::time::Duration::ZERO)?)?,
    })
}

/// `--set` fields as values, refusing what a value cannot hold exactly.
fn json_fields(set: &BTreeMap<String, serde_json::Value>) -> anyhow::Result<BTreeMap<String, engine::Value>> {
    set.iter()
        .map(|(k, v)| Ok((k.clone(), crate::json::from_json(v).map_err(|e| anyhow::anyhow!("field {k:?}: {e}"))?)))
        .collect()
}

/// A flag naming an authority tag: `""` clears it (`Some(None)`).
fn tag_flag(flag: &str, given: Option<&str>) -> anyhow::Result<Option<Option<String>>> {
    Ok(match given.map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(tag) if engine::policy::is_tag(tag) => Some(Some(tag.to_owned())),
        Some(tag) => {
            bail!("{flag} {tag:?} is not an authority tag: use letters, digits, '-', '_' and '.', as in central")
        }
    })
}

/// A comma-separated list of fields (`""`: none).
fn field_list(list: &str) -> std::collections::BTreeSet<String> {
    list.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from).collect()
}
