//! The routes that answer as they go, by server-sent events: `POST
//! /v1/sync` (progress, then the summary) and `GET /v1/changes?feed=sse`
//! (every change as it commits).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Api, Params, bad, error, known, number};
use crate::ops::{self, Line, Op};

/// How often an idle stream says it is alive (a proxy or a client may
/// close a silent connection).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long one wait of the SSE feed lasts before it reads again.
const FEED_WAIT_MS: u64 = 15_000;

fn events(queue: mpsc::UnboundedReceiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(queue, |mut queue| async move { queue.recv().await.map(|e| (Ok(e), queue)) })
}

fn sse(queue: mpsc::UnboundedReceiver<Event>) -> Response {
    Sse::new(events(queue)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

fn event(name: &str, data: &serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// One filter or several (`"filter": "P"` or `["P", …]`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncBody {
    peer: String,
    org: Option<String>,
    filter: Option<OneOrMany>,
    #[serde(default = "yes")]
    pull: bool,
    #[serde(default = "yes")]
    push: bool,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    skip_types: Vec<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/sync`: the same sync as `ferry sync`. Answers with events
/// `progress` (`{"what","done","total"}`), then `done` (the summary) or
/// `failed` (`{"error"}`); with `Accept: application/json`, only the
/// summary, as JSON, once the sync ends. The sync runs to its end even if
/// the client goes away.
pub(super) async fn sync(State(api): State<Api>, headers: HeaderMap, body: String) -> Response {
    let shape = "{\"peer\":\"ADDRESS or PEER_ID\",\"filter\":…,\"pull\":…,\"push\":…,\"types\":[…]}";
    let body: SyncBody = match super::parse_body(&body, shape) {
        Ok(body) => body,
        Err(reason) => return bad(reason),
    };
    let filters = match body.filter {
        None => Vec::new(),
        Some(OneOrMany::One(f)) => vec![f],
        Some(OneOrMany::Many(f)) => f,
    };
    if !body.pull && !body.push {
        return bad("pull and push are both false: nothing would move".to_owned());
    }
    let op = Op::Sync(ops::Sync {
        peer: body.peer,
        org: body.org,
        filters,
        pull: body.pull,
        push: body.push,
        types: body.types,
        skip_types: body.skip_types,
    });
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") && !v.contains("text/event-stream"));
    if wants_json {
        return match crate::control::run(&api.shared, op, &mut |_| {}).await {
            Ok(summary) => axum::Json(summary).into_response(),
            Err(e) => error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
        };
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = api.shared.clone();
    tokio::spawn(async move {
        let progress = tx.clone();
        let mut sink = move |line: Line| {
            if let Line::Progress { what, done, total } = line {
                let _ = progress.send(event("progress", &json!({ "what": what, "done": done, "total": total })));
            }
        };
        let last = match crate::control::run(&shared, op, &mut sink).await {
            Ok(summary) => event("done", &summary),
            Err(e) => event("failed", &json!({ "error": format!("{e:#}") })),
        };
        let _ = tx.send(last);
    });
    sse(rx)
}

/// `GET /v1/changes?feed=sse`: each entry as an event `change` whose id is
/// its cursor, so a browser's `EventSource` that reconnects sends
/// `Last-Event-ID` and goes on after the last entry it got. A cursor the
/// feed no longer holds ends the stream with an event `gone`
/// (`{"error","last_cursor"}`): read the records again, then follow from
/// `last_cursor`.
pub(super) async fn feed(
    api: Api,
    headers: &HeaderMap,
    params: &std::collections::HashMap<String, String>,
) -> Response {
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::parse::<u64>);
    let since = match (resumed, number(params, "since")) {
        (Some(Ok(c)), _) => c,
        (Some(Err(_)), _) => return bad("Last-Event-ID must be a cursor (a whole number)".to_owned()),
        (None, Ok(s)) => s.unwrap_or(0),
        (None, Err(e)) => return bad(e),
    };
    let limit = match number(params, "limit") {
        Ok(l) => l.map(|l| l as usize),
        Err(e) => return bad(e),
    };
    let ask = ops::Changes {
        org: params.get("org").cloned(),
        since,
        record_type: params.get("type").cloned(),
        partition: params.get("partition").cloned(),
        limit,
        timeout_ms: Some(FEED_WAIT_MS),
    };
    // The first page is read before answering, so a bad cursor or filter
    // is a status code, not an event.
    let first = match ops::changes(&api.shared.node, ask.clone()).await {
        Ok(page) => page,
        Err(e) => return super::feed_error(e),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let node = api.shared.node.clone();
    tokio::spawn(async move {
        let mut ask = ask;
        let mut page = first;
        loop {
            for entry in page["entries"].as_array().into_iter().flatten() {
                let id = entry["cursor"].as_u64().unwrap_or(0).to_string();
                if tx.send(event("change", entry).id(id)).is_err() {
                    return;
                }
            }
            ask.since = page["last_cursor"].as_u64().unwrap_or(ask.since);
            if tx.is_closed() {
                return;
            }
            page = match ops::changes(&node, ask.clone()).await {
                Ok(page) => page,
                Err(e) => {
                    let last = super::gone_cursor(&e);
                    let _ = tx.send(event("gone", &json!({ "error": format!("{e:#}"), "last_cursor": last })));
                    return;
                }
            };
        }
    });
    sse(rx)
}

/// `GET /v1/changes` in any mode.
pub(super) async fn changes(State(api): State<Api>, headers: HeaderMap, Query(params): Params) -> Response {
    if let Err(e) = known(&params, &["since", "type", "partition", "org", "limit", "feed", "timeout_ms"]) {
        return bad(e);
    }
    match params.get("feed").map(String::as_str) {
        Some("sse") => feed(api, &headers, &params).await,
        None | Some("normal") | Some("longpoll") => super::changes(api, &params).await,
        Some(other) => error(StatusCode::BAD_REQUEST, format!("feed={other}: use normal, longpoll or sse")),
    }
}
