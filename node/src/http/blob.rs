//! `GET /v1/blobs/{hash}`: a complete blob's bytes, whole or by an HTTP
//! range (`Range: bytes=A-B`, `A-` or `-N`; one range), so a player or a
//! download can seek and resume. Every block is checked against the blob's
//! outline before a byte of it goes out: a blob damaged on disk is never
//! served as if whole (it is removed, and the next sync fetches it again;
//! a stream that finds damage mid-way ends short, so the client sees a
//! failed transfer, never wrong bytes).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use engine::blob::{BlobHash, Outline};
use engine::limits::BLOB_BLOCK_BYTES;
use tokio::sync::mpsc;

use super::{Api, error};
use crate::blobs::{BlobState, Blobs};
use crate::node::Node;

/// The bytes asked for, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    start: u64,
    end: u64,
}

/// Reads a `Range` header against a blob of `size` bytes: `Ok(None)` for
/// the whole blob, `Err(())` for a range that cannot be served (416).
pub(super) fn range(header: Option<&str>, size: u64) -> Result<Option<Span>, ()> {
    let Some(header) = header else { return Ok(None) };
    let spec = header.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        // Several ranges would need a multipart answer: one at a time.
        return Err(());
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().map_err(|_| ());
    let span = match (first.is_empty(), last.is_empty()) {
        (true, true) => return Err(()),
        // The last N bytes.
        (true, false) => {
            let n = number(last)?;
            if n == 0 {
                return Err(());
            }
            Span { start: size.saturating_sub(n), end: size }
        }
        (false, true) => Span { start: number(first)?, end: size },
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            if b < a {
                return Err(());
            }
            Span { start: a, end: b.saturating_add(1).min(size) }
        }
    };
    if span.start >= size { Err(()) } else { Ok(Some(span)) }
}

/// Reads `span` block by block, each checked, into `out`; stops when the
/// client goes away. Runs on a blocking thread.
fn read_span(node: &Node, hash: &BlobHash, outline: &Outline, span: Span, out: &mpsc::Sender<Result<Bytes, String>>) {
    let fail = |reason: String| {
        let _ = out.blocking_send(Err(reason));
    };
    let mut file = match node.blobs.open(hash) {
        Ok(file) => file,
        Err(e) => return fail(format!("{e:#}")),
    };
    let first = span.start / BLOB_BLOCK_BYTES;
    let last = (span.end - 1) / BLOB_BLOCK_BYTES;
    for index in first..=last {
        let block = match Blobs::read_block(&mut file, outline.size, index) {
            Ok(block) => block,
            Err(e) => return fail(format!("cannot read blob {hash}: {e}")),
        };
        if let Err(e) = outline.verify_block(hash, index, &block) {
            // Removed, as an export does: a peer holds it whole.
            node.blobs.quarantine(hash);
            return fail(format!("{e}; the blob was removed, and the next sync fetches it again"));
        }
        let at = index * BLOB_BLOCK_BYTES;
        let from = span.start.saturating_sub(at) as usize;
        let to = (span.end - at).min(block.len() as u64) as usize;
        if out.blocking_send(Ok(Bytes::copy_from_slice(&block[from..to]))).is_err() {
            return;
        }
    }
}

pub(super) async fn get(State(api): State<Api>, Path(hash): Path<String>, headers: HeaderMap) -> Response {
    let Some(hash) = BlobHash::parse(&hash) else {
        return error(StatusCode::BAD_REQUEST, format!("{hash:?} is not a blob hash (64 hex digits)"));
    };
    let node = api.shared.node.clone();
    let size = match node.blobs.state(&hash) {
        BlobState::Complete { size } => size,
        BlobState::Partial { bytes } => {
            return error(
                StatusCode::NOT_FOUND,
                format!("blob {hash} is still arriving ({bytes} bytes so far): sync with a peer that holds it"),
            );
        }
        BlobState::Missing => {
            return error(
                StatusCode::NOT_FOUND,
                format!("blob {hash} is not held here: sync with a peer that holds it"),
            );
        }
    };
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let span = match range(asked, size) {
        Ok(span) => span,
        Err(()) => {
            let mut answer = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range {asked:?} is not one range inside the blob's {size} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                answer.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return answer;
        }
    };
    let outline = {
        let node = node.clone();
        match crate::pool::blocking(move || node.blobs.outline(&hash)).await {
            Ok(outline) => Arc::new(outline),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }
    };
    let whole = Span { start: 0, end: size };
    let serve = span.unwrap_or(whole);
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, String>>(4);
    if serve.end > serve.start {
        tokio::task::spawn_blocking(move || read_span(&node, &hash, &outline, serve, &tx));
    } else {
        drop(tx);
    }
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(|r| r.map_err(std::io::Error::other))));
    let mut answer = Response::new(Body::from_stream(stream));
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(serve.end - serve.start));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", hash.to_hex())) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(span) = span {
        *answer.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", span.start, span.end - 1)) {
            answer.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_rfc_9110_says() {
        let span = |start, end| Ok(Some(Span { start, end }));
        assert_eq!(range(None, 100), Ok(None));
        assert_eq!(range(Some("bytes=0-9"), 100), span(0, 10));
        assert_eq!(range(Some("bytes=90-"), 100), span(90, 100));
        assert_eq!(range(Some("bytes=-10"), 100), span(90, 100));
        assert_eq!(range(Some("bytes=-500"), 100), span(0, 100), "a suffix longer than the blob is all of it");
        assert_eq!(range(Some("bytes=95-500"), 100), span(95, 100), "an end past the blob stops at its end");
        assert_eq!(range(Some("bytes=100-"), 100), Err(()), "a start past the end");
        assert_eq!(range(Some("bytes=5-2"), 100), Err(()));
        assert_eq!(range(Some("bytes=0-1,5-6"), 100), Err(()), "one range at a time");
        assert_eq!(range(Some("items=0-1"), 100), Err(()));
        assert_eq!(range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(range(Some("bytes=x-1"), 100), Err(()));
    }
}
