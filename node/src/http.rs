//! The HTTP API (SPEC §6.3; docs/api.md, "HTTP"): `ferry serve --http
//! ADDR` (or `http` in ferry.toml). Every route runs the same operation as
//! the command and the local API (`ops::execute`); this module only maps
//! requests to `Op`s and answers to status codes. Every `/v1/` request needs
//! `Authorization: Bearer <HOME/api-token>`: without it the answer is 401
//! and nothing is read or changed (the web console's browser sends its
//! session cookie instead: `http/console.rs`). Bodies are limited to
//! `HTTP_BODY_BYTES_MAX`; errors are `{"error": "one-line reason"}`.
//!
//! - `http/stream.rs`: `POST /v1/sync` and `feed=sse`, by server-sent events;
//! - `http/blob.rs`: `GET /v1/blobs/{hash}` with range requests;
//! - `http/console.rs`: the console's login and page (`http/console.html`).

mod blob;
mod console;
mod stream;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use engine::store::FeedError;

use crate::control::Shared;
use crate::ops::{self, Op};

/// The most bytes a request body may have (as the local API's requests).
pub const HTTP_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long a long poll waits when the request does not say.
pub const LONGPOLL_DEFAULT_MS: u64 = 30_000;

#[derive(Clone)]
struct Api {
    shared: Arc<Shared>,
    token: Arc<str>,
}

/// Binds `address` (an `IP:PORT`; loopback unless configured otherwise)
/// and serves the API until the task is aborted. Returns the base URL.
pub async fn start(
    shared: Arc<Shared>,
    address: &str,
    token: String,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot serve HTTP on {address}: give a free IP:PORT, such as 127.0.0.1:8080"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let _ = shared.http_url.set(url.clone());
    let api = Api { shared, token: token.into() };
    let v1 = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/records", get(list))
        .route("/v1/records/{type}/{id}", get(get_record).put(put_record).delete(delete_record))
        .route("/v1/changes", get(stream::changes))
        .route("/v1/sync", post(stream::sync))
        .route("/v1/history", get(history))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/resolve", post(resolve))
        .route("/v1/blobs/{hash}", get(blob::get))
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize));
    let app = v1
        .route("/metrics", get(metrics))
        .route("/console", get(console::page))
        .route("/console/login", get(console::login))
        .route("/", get(|| async { axum::response::Redirect::to("/console") }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(HTTP_BODY_BYTES_MAX))
        .with_state(api);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the HTTP API stopped: {e}");
        }
    });
    Ok((url, task))
}

fn error(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": reason.to_string() }))).into_response()
}

async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    // The console's browser: its session, and for a write the header no
    // other site's page can send (`http/console.rs`).
    if let Some(session) = console::session(request.headers())
        && api.shared.logins.valid(session)
    {
        let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
        if writes && request.headers().get(console::WRITE_HEADER).is_none() {
            return error(
                StatusCode::FORBIDDEN,
                format!("a change made with the console's cookie needs the header {}: 1", console::WRITE_HEADER),
            );
        }
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), api.token.as_bytes()) => next.run(request).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "the bearer token is not this node's: read it from HOME/api-token"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <token>, the token in HOME/api-token (made by ferry init)",
        ),
    }
}

/// Compares without stopping at the first difference, so the time taken
/// tells nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route: see docs/api.md, \"HTTP\"")
}

/// Runs `op` as the local API does (`control::run`: the same operation,
/// and the same events for watchers), and answers with its JSON.
async fn run(api: &Api, op: Op) -> Result<serde_json::Value, Response> {
    crate::control::run(&api.shared, op, &mut |_| {}).await.map_err(|e| error(status_of(&e), format!("{e:#}")))
}

/// 404 for a record or route that is not there, 500 for a failing store,
/// 400 for everything else a request can get wrong.
fn status_of(e: &anyhow::Error) -> StatusCode {
    let text = e.to_string();
    if text.starts_with("no record") {
        StatusCode::NOT_FOUND
    } else if e.downcast_ref::<engine::StoreError>().is_some() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn json_ok(value: serde_json::Value) -> Response {
    axum::Json(value).into_response()
}

/// A list as NDJSON: one JSON value a line.
fn ndjson(values: &serde_json::Value) -> Response {
    let mut body = String::new();
    for value in values.as_array().into_iter().flatten() {
        body.push_str(&value.to_string());
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

type Params = Query<HashMap<String, String>>;

/// Refuses a parameter the route does not take (a typo never goes unnoticed).
fn known(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), String> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown parameter {k:?} (this route takes {})", allowed.join(", "))),
        None => Ok(()),
    }
}

fn bad(reason: String) -> Response {
    error(StatusCode::BAD_REQUEST, reason)
}

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, String> {
    params.get(name).map(|v| v.parse::<u64>().map_err(|_| format!("{name} must be a whole number"))).transpose()
}

/// The OpenMetrics text (`metrics.rs`). Outside `/v1/`: it carries counts,
/// never data, and scrapers rarely send a token.
async fn metrics(State(api): State<Api>) -> Response {
    let status = api.shared.status.snapshot();
    let node = api.shared.node.clone();
    let text = crate::pool::blocking(move || {
        node.metrics.render(&crate::metrics::Scrape {
            store_dir: node.home.store_dir(),
            peers_known: status.peers.len(),
            peers_connected: status.peers.values().filter(|p| p.connected).count(),
            in_flight: status.sessions.len(),
            feed_cursor: node.store.feed_last().unwrap_or(0),
        })
    })
    .await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn status(State(api): State<Api>) -> Response {
    run(&api, Op::Status).await.map_or_else(|e| e, json_ok)
}

async fn list(State(api): State<Api>, Query(params): Params) -> Response {
    let op = known(&params, &["type", "partition", "org", "deleted"]).map(|()| {
        Op::List(ops::List {
            org: params.get("org").cloned(),
            record_type: params.get("type").cloned(),
            partition: params.get("partition").cloned(),
            deleted: params.get("deleted").is_some_and(|v| v == "true"),
        })
    });
    match op {
        Ok(op) => run(&api, op).await.map_or_else(|e| e, |v| ndjson(&v)),
        Err(e) => bad(e),
    }
}

fn record_ref(record_type: String, id: String, params: &HashMap<String, String>) -> ops::RecordRef {
    ops::RecordRef { record_type, id, partition: params.get("partition").cloned(), org: params.get("org").cloned() }
}

async fn get_record(State(api): State<Api>, Path((t, id)): Path<(String, String)>, Query(params): Params) -> Response {
    if let Err(e) = known(&params, &["partition", "org"]) {
        return bad(e);
    }
    run(&api, Op::Get(record_ref(t, id, &params))).await.map_or_else(|e| e, json_ok)
}

async fn delete_record(
    State(api): State<Api>,
    Path((t, id)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    if let Err(e) = known(&params, &["partition", "org"]) {
        return bad(e);
    }
    run(&api, Op::Delete(record_ref(t, id, &params))).await.map_or_else(|e| e, json_ok)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    #[serde(default)]
    set: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    unset: BTreeSet<String>,
}

async fn put_record(
    State(api): State<Api>,
    Path((t, id)): Path<(String, String)>,
    Query(params): Params,
    body: String,
) -> Response {
    if let Err(e) = known(&params, &["partition", "org"]) {
        return bad(e);
    }
    let Some(partition) = params.get("partition").cloned() else {
        return error(StatusCode::BAD_REQUEST, "PUT needs ?partition=P: the partition the record is written in");
    };
    let body: PutBody = match parse_body(&body, "{\"set\":{…},\"unset\":[…]}") {
        Ok(body) => body,
        Err(reason) => return bad(reason),
    };
    let op =
        Op::Put { org: params.get("org").cloned(), record_type: t, id, partition, set: body.set, unset: body.unset };
    run(&api, op).await.map_or_else(|e| e, json_ok)
}

/// `GET /v1/changes` with `feed=normal` (or none) or `feed=longpoll`.
async fn changes(api: Api, params: &HashMap<String, String>) -> Response {
    let (since, limit, timeout) = match (number(params, "since"), number(params, "limit"), number(params, "timeout_ms"))
    {
        (Ok(s), Ok(l), Ok(t)) => (s.unwrap_or(0), l, t),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad(e),
    };
    let longpoll = params.get("feed").is_some_and(|f| f == "longpoll");
    let ask = ops::Changes {
        org: params.get("org").cloned(),
        since,
        record_type: params.get("type").cloned(),
        partition: params.get("partition").cloned(),
        limit: limit.map(|l| l as usize),
        timeout_ms: longpoll.then(|| timeout.unwrap_or(LONGPOLL_DEFAULT_MS)),
    };
    match ops::changes(&api.shared.node, ask).await {
        Ok(page) => json_ok(page),
        Err(e) => feed_error(e),
    }
}

/// The cursor to follow from when a feed read failed because its cursor
/// is expired or foreign (the app reads the records again first).
fn gone_cursor(e: &anyhow::Error) -> Option<u64> {
    match e.downcast_ref::<FeedError>() {
        Some(FeedError::Expired { last, .. } | FeedError::Ahead { last, .. }) => Some(*last),
        _ => None,
    }
}

/// A feed read that failed: an expired or foreign cursor is 410 with the
/// cursor to follow from.
fn feed_error(e: anyhow::Error) -> Response {
    match gone_cursor(&e) {
        Some(last) => {
            (StatusCode::GONE, axum::Json(json!({ "error": e.to_string(), "last_cursor": last }))).into_response()
        }
        None => error(status_of(&e), format!("{e:#}")),
    }
}

/// A JSON request body of `shape` (said in the error): an integer beyond
/// 64 bits is refused, never read as a float.
fn parse_body<T: serde::de::DeserializeOwned>(body: &str, shape: &str) -> Result<T, String> {
    crate::json::check_integers(body)?;
    serde_json::from_str(body).map_err(|e| format!("the body must be {shape}: {e}"))
}

async fn history(State(api): State<Api>) -> Response {
    run(&api, Op::History(ops::History { records: true })).await.map_or_else(|e| e, json_ok)
}

async fn conflicts(State(api): State<Api>) -> Response {
    run(&api, Op::Conflicts).await.map_or_else(|e| e, |v| ndjson(&v))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(rename = "type")]
    record_type: String,
    id: String,
    partition: Option<String>,
    org: Option<String>,
    /// The conflict to take, as `n` in the record's `conflicts`.
    take: Option<usize>,
    #[serde(default)]
    set: BTreeMap<String, serde_json::Value>,
}

/// `POST /v1/resolve`: `ferry resolve`, `{"type","id","partition","take"}`
/// or with `"set":{…}`; answers with the record.
async fn resolve(State(api): State<Api>, body: String) -> Response {
    let body: ResolveBody = match parse_body(&body, "{\"type\",\"id\",\"partition\",\"take\":N} or with \"set\":{…}")
    {
        Ok(body) => body,
        Err(reason) => return bad(reason),
    };
    let op = Op::Resolve {
        org: body.org,
        record_type: body.record_type,
        id: body.id,
        partition: body.partition,
        take: body.take,
        set: body.set,
    };
    run(&api, op).await.map_or_else(|e| e, json_ok)
}
