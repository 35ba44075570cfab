//! The web console (SPEC §6.3): one page, `console.html`, compiled into
//! the binary, with its styles and script inline, so it works with no
//! internet and no build step. It reads and acts only through the `/v1/`
//! routes, as any app does.
//!
//! Login: `ferry console` prints `/console/login?code=…`; the code works
//! once, and the browser gets a session cookie instead (HttpOnly,
//! SameSite=Strict). The `/v1/` routes take that cookie as they take the
//! bearer token, but a request that changes something must also carry the
//! header `X-Ferry-Console: 1`, which another site's page cannot send
//! without a CORS answer this server never gives.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::{Api, Params};

pub(super) const COOKIE: &str = "ferry_console";
/// The header a cookie-authenticated request that writes must carry.
pub(super) const WRITE_HEADER: &str = "x-ferry-console";

const PAGE: &str = include_str!("console.html");

/// The console's session id in a request's cookies, if any.
pub(super) fn session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
}

fn logged_in(api: &Api, headers: &HeaderMap) -> bool {
    session(headers).is_some_and(|s| api.shared.logins.valid(s))
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>ferry: {title}</title><body style=\"font:16px system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em\">\
         <h1 style=\"font-size:1.4em\">{title}</h1><p>{text}</p></body></html>"
    );
    (status, Html(page)).into_response()
}

/// `GET /console/login?code=…`: trades the code for a session cookie.
pub(super) async fn login(State(api): State<Api>, Query(params): Params) -> Response {
    let Some(session) = params.get("code").and_then(|code| api.shared.logins.redeem(code)) else {
        return message(
            StatusCode::UNAUTHORIZED,
            "This login link does not work",
            "It was used already, or it is more than ten minutes old. Run <code>ferry console</code> on the node's machine for a new one.",
        );
    };
    let cookie = format!(
        "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        crate::logins::SESSION_TTL.as_secs()
    );
    let mut answer = Redirect::to("/console").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, v);
    }
    answer
}

/// `GET /console`: the page, for a logged-in browser.
pub(super) async fn page(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !logged_in(&api, &headers) {
        return message(
            StatusCode::UNAUTHORIZED,
            "Log in to this ferry node",
            "Run <code>ferry console</code> on the node's machine and open the link it prints.",
        );
    }
    let mut answer = Html(PAGE).into_response();
    let headers = answer.headers_mut();
    // Everything the page needs is in it: nothing else may load or run.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_read_from_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; ferry_consoleX=no"));
        assert_eq!(session(&headers), None, "a cookie whose name only starts the same is not it");
        headers.append(header::COOKIE, HeaderValue::from_static("b=2; ferry_console=abc; c=3"));
        assert_eq!(session(&headers), Some("abc"));
    }
}
