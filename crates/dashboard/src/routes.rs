//! The HTTP surface: a hand-written router over hyper. Every request passes the
//! Host and token checks first; every POST the CSRF check. The JSON endpoints return
//! data only: the page builds its DOM from it with `textContent`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` (`?token=` once: sets the cookie, redirects) | the page |
//! | GET | `/app.js`, `/style.css` | its script and style |
//! | GET | `/api/state` | everything, as JSON |
//! | GET | `/api/events` | server-sent events: `snapshot`, then changes |
//! | POST | `/api/bottles/{slug}/down` | `Backend::down` |
//! | POST | `/api/bottles/{slug}/egress` `{action, host}` | `Backend::apply_egress` |
//! | POST | `/api/requests/{id}/decide` `{approve, note}` | `Backend::decide` |
//! | POST | `/api/requests/{id}/always` | the manifest diff that would allow the host for good |
//! | POST | `/api/requests/{id}/always/confirm` `{sha256, note}` | `Backend::decide`, then the diff written |

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backend_api::{PendingRequest, PolicyChange, RequestKind};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::always::{self, AlwaysError};
use crate::assets;
use crate::auth::{Refusal, Tokens, query_param};
use crate::events::Hub;
use crate::lanes::Lanes;
use crate::views::Outcome;

/// A response body: whole, or a stream of events.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest note a human may attach to a decision.
pub const MAX_NOTE_CHARS: usize = 2000;
/// How long `egress allow|deny` waits for the proxy to confirm, as the CLI does.
const EGRESS_TIMEOUT: Duration = Duration::from_secs(15);
/// How often an idle event stream gets a comment (proxies, dead peers).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// What every request handler shares.
pub struct App {
    /// The tokens and the port.
    pub tokens: Tokens,
    /// The backend's threads.
    pub lanes: Lanes,
    /// The live state.
    pub hub: Hub,
}

impl App {
    /// The app around `tokens` and `lanes`, with an empty state.
    pub fn new(tokens: Tokens, lanes: Lanes) -> Self {
        Self {
            tokens,
            lanes,
            hub: Hub::default(),
        }
    }
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn forbidden() -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        "missing or wrong CSRF token, or another origin",
    )
}

/// Why an action was refused: its status and words (a response once it is sent).
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
}

fn fail(status: StatusCode, message: impl std::fmt::Display) -> Failure {
    Failure {
        status,
        message: message.to_string(),
    }
}

/// The headers every response carries: no inline script, no sniffing, no framing,
/// no referrer, no caching.
fn secure(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Answers one request.
pub async fn handle(app: &App, request: Request<Incoming>) -> Response<Body> {
    secure(route(app, request).await)
}

async fn route(app: &App, request: Request<Incoming>) -> Response<Body> {
    let query_token = query_param(request.uri().query(), "token");
    match app.tokens.check(request.headers(), query_token) {
        Err(Refusal::WrongHost) => {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                "this dashboard answers on 127.0.0.1 and localhost only",
            );
        }
        Err(Refusal::Unauthenticated) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "open the URL `bottle dashboard` printed (it carries the access token)",
            );
        }
        Err(Refusal::Forbidden) => return forbidden(),
        Ok(()) => {}
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if query_token.is_some() && method == Method::GET {
        // The token leaves the address bar (and history) for a cookie.
        let mut response = full(StatusCode::SEE_OTHER, "text/plain", "");
        let headers = response.headers_mut();
        headers.insert(LOCATION, HeaderValue::from_static("/"));
        if let Ok(cookie) = HeaderValue::from_str(&app.tokens.set_cookie()) {
            headers.insert(SET_COOKIE, cookie);
        }
        return response;
    }
    if method == Method::POST {
        if app.tokens.check_post(request.headers()).is_err() {
            return forbidden();
        }
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        return post(app, &path, &body).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "GET or POST only");
    }
    match path.as_str() {
        "/" => full(
            StatusCode::OK,
            "text/html; charset=utf-8",
            assets::index(app.tokens.csrf()),
        ),
        "/app.js" => full(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            assets::APP_JS,
        ),
        "/style.css" => full(StatusCode::OK, "text/css; charset=utf-8", assets::STYLE_CSS),
        "/api/state" => full(StatusCode::OK, "application/json", app.hub.snapshot_json()),
        "/api/events" => events(app),
        _ => error(StatusCode::NOT_FOUND, "no such page"),
    }
}

/// A stream of server-sent events: the snapshot, then every change.
struct EventStream(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn events(app: &App) -> Response<Body> {
    let (snapshot, mut changes) = app.hub.subscribe();
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if sender.send(Bytes::from(snapshot.framed())).await.is_err() {
            return;
        }
        loop {
            let frame = tokio::select! {
                change = changes.recv() => match change {
                    Ok(event) => event.framed(),
                    // Too slow to keep up: tell the page to fetch everything again.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        "event: resync\ndata: null\n\n".to_owned()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_owned(),
            };
            if sender.send(Bytes::from(frame)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(BoxBody::new(EventStream(receiver)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressBody {
    action: String,
    host: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    approve: bool,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    sha256: String,
    #[serde(default)]
    note: Option<String>,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| fail(StatusCode::BAD_REQUEST, e))
}

fn note(note: Option<String>) -> Result<Option<String>, Failure> {
    match note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()) {
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => Err(fail(
            StatusCode::BAD_REQUEST,
            format!("a note is at most {MAX_NOTE_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

/// The status a backend error answers with.
fn backend_error(e: &backend_api::Error) -> Failure {
    use backend_api::Error as E;
    let status = match e {
        E::UnknownBottle { .. } => StatusCode::NOT_FOUND,
        E::BadPolicyChange(_) | E::AlreadyAllowed { .. } => StatusCode::CONFLICT,
        E::ServiceNotRunning { .. } | E::Incomplete { .. } => StatusCode::CONFLICT,
        E::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        E::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    fail(status, e)
}

fn gone(e: crate::Error) -> Failure {
    fail(StatusCode::SERVICE_UNAVAILABLE, e)
}

fn always_error(e: &AlwaysError) -> Failure {
    let status = match e {
        AlwaysError::Changed { .. } => StatusCode::CONFLICT,
        AlwaysError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    fail(status, e)
}

async fn post(app: &App, path: &str, body: &[u8]) -> Response<Body> {
    let parts: Vec<&str> = path
        .strip_prefix("/api/")
        .unwrap_or("")
        .split('/')
        .collect();
    let result = match parts.as_slice() {
        ["bottles", slug, "down"] => down(app, slug).await,
        ["bottles", slug, "egress"] => egress(app, slug, body).await,
        ["requests", id, "decide"] => decide(app, id, body).await,
        ["requests", id, "always"] => always(app, id).await,
        ["requests", id, "always", "confirm"] => confirm(app, id, body).await,
        _ => Err(fail(StatusCode::NOT_FOUND, "no such action")),
    };
    result.unwrap_or_else(|f| error(f.status, f.message))
}

type Handled = Result<Response<Body>, Failure>;

async fn down(app: &App, slug: &str) -> Handled {
    let slug = slug.to_owned();
    let problems = app
        .lanes
        .act(move |backend| {
            backend
                .down(&slug)
                .map(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())
                .map_err(|e| backend_error(&e))
        })
        .await
        .map_err(gone)??;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "ok": problems.is_empty(), "problems": problems }),
    ))
}

async fn egress(app: &App, slug: &str, body: &[u8]) -> Handled {
    let body: EgressBody = parse(body)?;
    let (host, port) =
        backend_api::parse_host_port(&body.host).map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    let change = match body.action.as_str() {
        "allow" => PolicyChange::Allow {
            host,
            port,
            methods: None,
        },
        "deny" => PolicyChange::Deny { host, port },
        _ => return Err(fail(StatusCode::BAD_REQUEST, "action: `allow` or `deny`")),
    };
    let slug = slug.to_owned();
    let version = app
        .lanes
        .act(move |backend| {
            backend
                .apply_egress(&slug, &change, EGRESS_TIMEOUT)
                .map_err(|e| backend_error(&e))
        })
        .await
        .map_err(gone)??;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "ok": true, "version": version }),
    ))
}

/// The pending request with exactly this id.
fn pending(app: &App, id: &str) -> Result<PendingRequest, Failure> {
    app.hub
        .pending(id)
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "no such pending request"))
}

async fn decide_on_lane(
    app: &App,
    request: &PendingRequest,
    approve: bool,
    note: Option<String>,
) -> Result<(), Failure> {
    let id = request.id.clone();
    app.lanes
        .act(move |backend| {
            backend
                .decide(&id, approve, note)
                .map(drop)
                .map_err(|e| backend_error(&e))
        })
        .await
        .map_err(gone)?
}

async fn decide(app: &App, id: &str, body: &[u8]) -> Handled {
    let body: DecideBody = parse(body)?;
    let note = note(body.note)?;
    let request = pending(app, id)?;
    decide_on_lane(app, &request, body.approve, note.clone()).await?;
    let outcome = if body.approve {
        Outcome::Approved
    } else {
        Outcome::Denied
    };
    app.hub.decided(request, outcome, note);
    Ok(json_response(StatusCode::OK, &json!({ "ok": true })))
}

/// The proposal for request `id`: its bottle's manifest, found through the backend.
async fn proposal(app: &App, request: &PendingRequest) -> Result<always::Proposal, Failure> {
    if request.kind != RequestKind::Egress {
        return Err(always_error(&AlwaysError::NotEgress));
    }
    let slug = request.slug.clone();
    let bottle = app
        .lanes
        .act(move |backend| backend.find(&slug).map_err(|e| backend_error(&e)))
        .await
        .map_err(gone)??;
    let no_manifest = || {
        always_error(&AlwaysError::NoManifest {
            slug: request.slug.clone(),
        })
    };
    let (path, _) = bottle.manifest.clone().ok_or_else(no_manifest)?;
    let agent = bottle.agent.clone().ok_or_else(no_manifest)?;
    let host = request.host.clone().unwrap_or_default();
    let port = request.port;
    let methods = request.methods.clone();
    tokio::task::spawn_blocking(move || {
        always::propose_for_file(&path, &agent, &host, port, methods.as_deref())
    })
    .await
    .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e))?
    .map_err(|e| always_error(&e))
}

async fn always(app: &App, id: &str) -> Handled {
    let request = pending(app, id)?;
    let proposal = proposal(app, &request).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "manifest": proposal.manifest.display().to_string(),
            "bottle": proposal.bottle,
            "diff": proposal.diff,
            "sha256": proposal.after_sha256,
        }),
    ))
}

async fn confirm(app: &App, id: &str, body: &[u8]) -> Handled {
    let body: ConfirmBody = parse(body)?;
    let note = note(body.note)?;
    let request = pending(app, id)?;
    let proposal = proposal(app, &request).await?;
    if proposal.after_sha256 != body.sha256 {
        return Err(always_error(&AlwaysError::Changed {
            path: proposal.manifest,
        }));
    }
    decide_on_lane(app, &request, true, note.clone()).await?;
    app.hub.decided(request, Outcome::ApprovedAlways, note);
    let written = tokio::task::spawn_blocking(move || always::commit(&proposal))
        .await
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    match written {
        Ok(()) => Ok(json_response(StatusCode::OK, &json!({ "ok": true }))),
        Err(e) => Err(fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("approved for this bottle, but the manifest was not changed: {e}"),
        )),
    }
}
