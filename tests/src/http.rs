//! A minimal HTTP/1.1 client over `std::net::TcpStream`, as an app with only
//! a standard library would write one: one request per connection
//! (`Connection: close`), the answer read to the end, or, for server-sent
//! events, read event by event while they come.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An answer: the status code, the headers (lower-cased names) and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text (bytes that are not UTF-8 show as U+FFFD).
    pub body: String,
    /// The body's bytes.
    pub raw: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The body as NDJSON lines.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as server-sent events.
    pub fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        let mut parser = Events::default();
        for line in self.body.split('\n') {
            if let Some(event) = parser.line(line) {
                out.push(event);
            }
        }
        out
    }
}

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub name: String,
    pub id: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// Builds events from lines (comments, such as keep-alives, are skipped).
#[derive(Default)]
struct Events {
    at: Event,
}

impl Events {
    fn line(&mut self, line: &str) -> Option<Event> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.at);
            return (!event.data.is_empty() || !event.name.is_empty()).then(|| {
                let mut event = event;
                if event.name.is_empty() {
                    event.name = "message".into();
                }
                event
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.at.name = value.to_owned(),
            "id" => self.at.id = Some(value.to_owned()),
            "data" => {
                if !self.at.data.is_empty() {
                    self.at.data.push('\n');
                }
                self.at.data.push_str(value);
            }
            _ => {}
        }
        None
    }
}

fn connect(url: &str) -> (TcpStream, String) {
    let host = url.strip_prefix("http://").expect("an http:// URL").to_owned();
    let stream = TcpStream::connect(&host).expect("connect to the HTTP API");
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    (stream, host)
}

/// Bodies larger than this are sent after the server's `100 Continue`.
const EXPECT_CONTINUE_BYTES: usize = 64 * 1024;

/// The request line and headers of a request whose body of `len` bytes
/// follows later.
fn send_head(
    stream: &mut TcpStream,
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    len: usize,
) {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"));
    stream.write_all(text.as_bytes()).expect("send the request");
}

fn send(
    stream: &mut TcpStream,
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "PUT" || method == "POST" {
        text.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).expect("send the request");
}

/// The status line and headers of an answer.
fn head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut status = None;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read the answer's head");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        match status {
            None => status = line.split(' ').nth(1).and_then(|s| s.parse().ok()),
            Some(_) => {
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
        }
    }
    (status.expect("a status line"), headers)
}

fn chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
}

/// The next chunk of a chunked body, or `None` at its end.
fn chunk(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size = String::new();
    if reader.read_line(&mut size).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut data = vec![0u8; size + 2];
    reader.read_exact(&mut data).ok()?;
    data.truncate(size);
    Some(data)
}

/// Sends one request to `url` (`http://IP:PORT`) and reads the answer.
/// Bodies are read to the close of the connection, or by Content-Length.
pub fn request(url: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    request_with(url, method, path, token, &[], body)
}

/// `request` with more headers (`Range`, `Cookie`, `Accept`, …).
pub fn request_with(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let (mut stream, host) = connect(url);
    // A large body waits for the server's go-ahead (RFC 9110, 100-continue):
    // a server that refuses it at once (413) closes the connection, and
    // writing the rest into the closed socket fails with a broken pipe.
    let large = body.is_some_and(|b| b.len() > EXPECT_CONTINUE_BYTES);
    let (status, headers, reader) = if large {
        let mut with_expect = headers.to_vec();
        with_expect.push(("Expect", "100-continue"));
        send_head(&mut stream, &host, method, path, token, &with_expect, body.unwrap_or("").len());
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let (status, headers) = head(&mut reader);
        if status == 100 {
            stream.write_all(body.unwrap_or("").as_bytes()).expect("send the body");
            let (status, headers) = head(&mut reader);
            (status, headers, reader)
        } else {
            (status, headers, reader)
        }
    } else {
        send(&mut stream, &host, method, path, token, headers, body);
        let mut reader = BufReader::new(stream);
        let (status, headers) = head(&mut reader);
        (status, headers, reader)
    };
    let mut reader = reader;
    let mut raw = Vec::new();
    if chunked(&headers) {
        while let Some(data) = chunk(&mut reader) {
            raw.extend(data);
        }
    } else if let Some(length) = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()) {
        // By its length: not every server closes at once (ChromeDriver).
        // A body that ends short is kept as it came: the caller sees less.
        let _ = reader.take(length).read_to_end(&mut raw);
    } else {
        reader.read_to_end(&mut raw).expect("read the answer");
    }
    let body = String::from_utf8_lossy(&raw).into_owned();
    Answer { status, headers, body, raw }
}

/// Opens a stream of server-sent events and hands each to `on_event` as it
/// arrives, until `on_event` returns false or the stream ends. Returns the
/// status and headers (for an answer that is not a stream, its body is
/// the one event's data).
pub fn events(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    on_event: &mut dyn FnMut(&Event) -> bool,
) -> (u16, Vec<(String, String)>) {
    events_with(url, method, path, token, &[], body, on_event)
}

/// `events` with more headers (`Last-Event-ID`, …).
pub fn events_with(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
    on_event: &mut dyn FnMut(&Event) -> bool,
) -> (u16, Vec<(String, String)>) {
    let (mut stream, host) = connect(url);
    let mut all = vec![("Accept", "text/event-stream")];
    all.extend_from_slice(headers);
    send(&mut stream, &host, method, path, token, &all, body);
    let mut reader = BufReader::new(stream);
    let (status, headers) = head(&mut reader);
    let mut parser = Events::default();
    let mut pending = String::new();
    let is_chunked = chunked(&headers);
    loop {
        let data = if is_chunked {
            chunk(&mut reader)
        } else {
            let mut buffer = vec![0u8; 8192];
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buffer[..n].to_vec()),
            }
        };
        let Some(data) = data else { break };
        pending.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(event) = parser.line(line.trim_end_matches('\n'))
                && !on_event(&event)
            {
                return (status, headers);
            }
        }
    }
    (status, headers)
}
