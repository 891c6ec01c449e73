//! Who may use the web view, and what every response tells the browser.
//!
//! Every request passes [`guard`], in this order:
//! 1. **Host** must be one the server is reached by (its bound address, `localhost`, the
//!    loopback addresses at its port, or a name given with `--allow-host`): a page of another
//!    site that rebinds its DNS name to 127.0.0.1 is refused (403).
//! 2. **Token** (when the server has one): `Authorization: Bearer TOKEN`, or the `regrpo_token`
//!    cookie. A first visit with `?token=TOKEN` sets that cookie (HttpOnly, SameSite=Strict)
//!    and redirects to the same page without the token, so it leaves the address bar and the
//!    history. Missing: 401; wrong: 403. Compared in constant time; never logged.
//! 3. **State changes** (every method but GET and HEAD) need an `Origin` of this server and the
//!    CSRF token of this process, as the `X-CSRF-Token` header or a `csrf` form field (403
//!    otherwise). A script authenticating with the bearer header sends no cookie a browser could
//!    be tricked into sending, so it needs neither.
//!
//! Every response carries a Content-Security-Policy of `default-src 'self'` (no inline script,
//! no inline style, no eval), `frame-ancestors 'none'`, `nosniff` and `same-origin` referrers (a form post keeps its Origin).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;

use crate::App;

/// The cookie a `?token=` visit sets.
const COOKIE: &str = "regrpo_token";
/// The largest form a state change may post (bulk filters, a reason).
const MAX_FORM: usize = 64 << 10;

/// Why the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "{addr} is not a loopback address: anyone who reaches it could read and review the data. \
         Give a token (--token-file) to serve beyond this machine, or bind 127.0.0.1"
    )]
    OpenWithoutToken { addr: SocketAddr },
    #[error("the token must be at least 16 characters (it is {len})")]
    WeakToken { len: usize },
}

/// Refuses a non-loopback address without a token, and a short token.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), AccessError> {
    if let Some(t) = token
        && t.len() < 16
    {
        return Err(AccessError::WeakToken { len: t.len() });
    }
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(AccessError::OpenWithoutToken { addr });
    }
    Ok(())
}

/// 32 random bytes, hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Equal without telling, by timing, how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Host` values this server answers to.
fn allowed_hosts(app: &App) -> Vec<String> {
    let addr = app.cfg.addr;
    let port = addr.port();
    let mut hosts = vec![
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        match addr.ip() {
            IpAddr::V4(ip) => format!("{ip}:{port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        },
    ];
    hosts.extend(app.cfg.allowed_hosts.iter().cloned());
    hosts
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{why}\n")).into_response()
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// The query string without its `token` pair.
fn without_token(query: &str) -> String {
    query.split('&').filter(|kv| !kv.starts_with("token=") && !kv.is_empty()).collect::<Vec<_>>().join("&")
}

/// The security layer every request passes (see the module's documentation).
pub(crate) async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut resp = check(&app, req, next).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn check(app: &App, req: Request, next: Next) -> Response {
    let hosts = allowed_hosts(app);
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return refuse(StatusCode::FORBIDDEN, "this server does not answer to that Host");
    }
    let host = host.to_string();
    let mut by_bearer = false;
    if let Some(token) = &app.cfg.token {
        let given_query =
            req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token="))).map(str::to_string);
        if let Some(given) = given_query {
            if req.method() != Method::GET || !same(given.as_bytes(), token.as_bytes()) {
                return refuse(StatusCode::FORBIDDEN, "wrong token");
            }
            let rest = without_token(req.uri().query().unwrap_or(""));
            let to =
                if rest.is_empty() { req.uri().path().to_string() } else { format!("{}?{rest}", req.uri().path()) };
            let mut resp = Redirect::to(&to).into_response();
            let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            return resp;
        }
        let (b, c) = (bearer(req.headers()), cookie_token(req.headers()));
        match b.or(c) {
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "this server needs its token: open the address it printed (with ?token=…), or send Authorization: Bearer",
                );
            }
            Some(given) if !same(given.as_bytes(), token.as_bytes()) => {
                return refuse(StatusCode::FORBIDDEN, "wrong token");
            }
            Some(_) => by_bearer = b.is_some(),
        }
    }
    if req.method() == Method::GET || req.method() == Method::HEAD || by_bearer {
        return next.run(req).await;
    }
    // A state change from a browser: its Origin must be this server, and it must carry this
    // process's CSRF token.
    let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("");
    let origin_ok = origin.strip_prefix("http://").is_some_and(|o| o.eq_ignore_ascii_case(&host));
    if !origin_ok {
        return refuse(StatusCode::FORBIDDEN, "a state change must come from this server's own pages (Origin)");
    }
    let header_csrf = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    };
    let form_csrf = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    let given = header_csrf.or(form_csrf).unwrap_or_default();
    if !same(given.as_bytes(), app.csrf.as_bytes()) {
        return refuse(StatusCode::FORBIDDEN, "missing or stale CSRF token: reload the page and try again");
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_beyond_loopback_needs_a_strong_token() {
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(matches!(check_bind(open, None), Err(AccessError::OpenWithoutToken { .. })));
        assert!(matches!(check_bind(open, Some("short")), Err(AccessError::WeakToken { len: 5 })));
        assert!(check_bind(open, Some("0123456789abcdef")).is_ok());
        assert!(check_bind(local, None).is_ok());
    }

    #[test]
    fn the_token_leaves_the_query_and_cookies_are_found_among_others() {
        assert_eq!(without_token("token=abc&error_type=ArgInvalid"), "error_type=ArgInvalid");
        assert_eq!(without_token("token=abc"), "");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; regrpo_token=xyz; b=2"));
        assert_eq!(cookie_token(&h), Some("xyz"));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
