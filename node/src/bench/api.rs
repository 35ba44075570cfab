//! The HTTP API's figures (SPEC §5 and §6.3): how soon a change reaches a
//! client waiting on a long poll of the change feed, and how many requests
//! a second the API answers for one record (GET and PUT). A device serves
//! HTTP on 127.0.0.1; the central writes one record at a time, and the
//! device syncs it in while a client waits on `feed=longpoll`. The clients
//! are plain HTTP/1.1 over `std::net::TcpStream`, keeping the connection
//! open, as an app with a standard library would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use engine::BackendKind;
use serde_json::Value as Json;

use super::{Figure, Proc, district, sync_op};
use crate::ops::Op;

/// One kept-open connection to the API.
struct Client {
    reader: BufReader<TcpStream>,
    host: String,
    token: String,
}

impl Client {
    fn connect(url: &str, token: &str) -> anyhow::Result<Client> {
        let host = url.strip_prefix("http://").context("an http:// URL")?.to_owned();
        let stream = TcpStream::connect(&host)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Client { reader: BufReader::new(stream), host, token: token.to_owned() })
    }

    /// One request; returns the status and the body (read by its length).
    fn call(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.token,
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut status = 0;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the API closed the connection");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).context("a status line")?;
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8(body)?))
    }

    fn json(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<Json> {
        let (status, text) = self.call(method, path, body)?;
        if status != 200 {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The figures: feed latency after a sync, after a local write, and GET
/// and PUT requests per second.
pub(super) async fn api(root: &Path, backend: BackendKind, rounds: u64, requests: u64) -> anyhow::Result<Vec<Figure>> {
    let dir = root.join(format!("{}-api", backend.name()));
    let (central_home, _org, homes) = district(&dir, backend, 1)?;
    let central = Proc::start(&central_home)?;
    let device = Proc::start_with(&homes[0], &["--http", "127.0.0.1:0"])?;
    let url = device.http.clone().context("the device serves no HTTP")?;
    let token = homes[0].api_token()?;
    let sync = sync_op(&central.address, true, false);
    device.op(&sync).await?;

    // A change applied by a sync, to a client waiting on a long poll.
    let mut after_sync = Vec::new();
    let mut sync_ms = Vec::new();
    let mut after_put = Vec::new();
    let mut cursor = Client::connect(&url, &token)?.json("GET", "/v1/status", "")?["feed_cursor"].as_u64().unwrap_or(0);
    for round in 0..rounds {
        let (tx, rx) = std::sync::mpsc::channel();
        let (poll_url, poll_token) = (url.clone(), token.clone());
        let waiting = std::thread::spawn(move || -> anyhow::Result<(Instant, u64)> {
            let mut client = Client::connect(&poll_url, &poll_token)?;
            let _ = tx.send(());
            let path = format!("/v1/changes?since={cursor}&feed=longpoll&timeout_ms=30000");
            let page = client.json("GET", &path, "")?;
            let woke = Instant::now();
            if page["entries"].as_array().is_none_or(Vec::is_empty) {
                bail!("the long poll ended with no change");
            }
            Ok((woke, page["last_cursor"].as_u64().unwrap_or(0)))
        });
        rx.recv_timeout(Duration::from_secs(10)).context("the long-poll client did not connect")?;
        // The request is in: the node waits on the feed before we go on.
        std::thread::sleep(Duration::from_millis(20));
        central
            .op(&Op::Put {
                org: None,
                record_type: "result".into(),
                id: format!("api-{round}"),
                partition: "results".into(),
                set: [("n".to_owned(), serde_json::json!(round))].into(),
                unset: Default::default(),
            })
            .await?;
        let asked = Instant::now();
        let summary = device.op(&sync).await?;
        let (woke, next) = waiting.join().map_err(|_| anyhow::anyhow!("the long-poll client panicked"))??;
        after_sync.push(woke.duration_since(asked).as_secs_f64() * 1000.0);
        sync_ms.push(summary["duration_ms"].as_f64().unwrap_or(0.0));
        cursor = next;

        // A local write through the API, to the same kind of client.
        let (tx, rx) = std::sync::mpsc::channel();
        let (poll_url, poll_token) = (url.clone(), token.clone());
        let waiting = std::thread::spawn(move || -> anyhow::Result<(Instant, u64)> {
            let mut client = Client::connect(&poll_url, &poll_token)?;
            let _ = tx.send(());
            let page = client.json("GET", &format!("/v1/changes?since={cursor}&feed=longpoll&timeout_ms=30000"), "")?;
            Ok((Instant::now(), page["last_cursor"].as_u64().unwrap_or(0)))
        });
        rx.recv_timeout(Duration::from_secs(10)).context("the long-poll client did not connect")?;
        std::thread::sleep(Duration::from_millis(20));
        let mut writer = Client::connect(&url, &token)?;
        let body = format!("{{\"set\":{{\"n\":{round}}}}}");
        let started = Instant::now();
        writer.json("PUT", &format!("/v1/records/result/local-{round}?partition=results"), &body)?;
        let (woke, next) = waiting.join().map_err(|_| anyhow::anyhow!("the long-poll client panicked"))??;
        after_put.push(woke.saturating_duration_since(started).as_secs_f64() * 1000.0);
        cursor = next;
    }
    let mut figures = Vec::new();
    let latency = |scenario: &str, values: &mut Vec<f64>, note: String| Figure {
        scenario: scenario.to_owned(),
        backend: backend.name().to_owned(),
        changes: values.len() as u64,
        duration_ms: median(values),
        note,
        ..Figure::default()
    };
    let sync_median = median(&mut sync_ms);
    figures.push(latency(
        "feed: sync to long poll",
        &mut after_sync,
        format!(
            "median of {rounds}, from asking a one-change sync to the waiting client's answer (the whole sync included: it took {sync_median:.1} ms by its own count)"
        ),
    ));
    figures.push(latency(
        "feed: PUT to long poll",
        &mut after_put,
        format!("median of {rounds}, from sending a PUT to the waiting client's answer"),
    ));

    // Requests per second for one record, one client on one connection.
    let mut client = Client::connect(&url, &token)?;
    client.json("PUT", "/v1/records/result/hot?partition=results", "{\"set\":{\"n\":0}}")?;
    for (scenario, method) in [("API: GET one record", "GET"), ("API: PUT one record", "PUT")] {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            for i in 0..requests {
                let body = if method == "PUT" { format!("{{\"set\":{{\"n\":{i}}}}}") } else { String::new() };
                client.json(method, "/v1/records/result/hot?partition=results", &body)?;
            }
            rates.push(requests as f64 / started.elapsed().as_secs_f64());
        }
        let rate = median(&mut rates);
        figures.push(Figure {
            scenario: scenario.to_owned(),
            backend: backend.name().to_owned(),
            changes: requests,
            duration_ms: 1000.0 * requests as f64 / rate,
            rss_b_kb: device.peak_rss_kb(),
            note: format!("{rate:.0} requests/s, median of 3 runs of {requests} on one kept-open connection"),
            ..Figure::default()
        });
    }
    device.stop();
    central.stop();
    Ok(figures)
}
