//! HTTP-level tests of the dashboard against an in-test backend: every endpoint,
//! authentication, Host and CSRF checks, the live event stream, and agent text that
//! tries to become HTML.

mod fake;
mod http;

use fake::{Call, Fake};
use http::Client;

const HOSTILE_REASON: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

#[tokio::test]
async fn without_the_token_every_endpoint_is_refused() {
    let (fake, client) = Client::start(Fake::with_bottle()).await;
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/app.js"),
        ("GET", "/style.css"),
        ("GET", "/api/state"),
        ("GET", "/api/events"),
        ("POST", "/api/bottles/dev-1/down"),
        ("POST", "/api/requests/x/decide"),
    ] {
        let response = client.raw(method, path, &[], "").await;
        assert_eq!(response.status, 401, "{method} {path}");
        response.assert_secure_headers();
        let response = client
            .raw(
                method,
                path,
                &[("cookie", &client.cookie_with("0".repeat(64)))],
                "",
            )
            .await;
        assert_eq!(response.status, 401, "{method} {path} with a wrong cookie");
        let response = client
            .raw(method, &format!("{path}?token=nope"), &[], "")
            .await;
        assert_eq!(response.status, 401, "{method} {path} with a wrong token");
    }
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn the_token_in_the_url_becomes_a_strict_http_only_cookie() {
    let (_fake, client) = Client::start(Fake::with_bottle()).await;
    let response = client
        .raw("GET", &format!("/?token={}", client.token), &[], "")
        .await;
    assert_eq!(response.status, 303);
    assert_eq!(response.header("location"), Some("/"));
    let cookie = response.header("set-cookie").unwrap();
    assert_eq!(
        cookie,
        format!(
            "bottle_dashboard_{}={}; HttpOnly; SameSite=Strict; Path=/",
            client.port, client.token
        )
    );
    let page = client.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    page.assert_secure_headers();
    assert!(page.body.contains("<meta name=\"csrf-token\" content=\""));
    assert!(
        !page.body.contains(&client.token),
        "the access token is not in the page"
    );
    for path in ["/app.js", "/style.css", "/api/state"] {
        let response = client.get(path).await;
        assert_eq!(response.status, 200, "{path}");
        response.assert_secure_headers();
    }
    assert!(
        client
            .get("/app.js")
            .await
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test]
async fn another_host_name_is_refused_even_with_the_token() {
    let (_fake, client) = Client::start(Fake::with_bottle()).await;
    let cookie = client.cookie();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{}", client.port),
        format!("127.0.0.1:{}", client.port + 1),
        format!("127.0.0.1.nip.io:{}", client.port),
    ] {
        let response = client
            .raw_with_host("GET", "/api/state", Some(&host), &[("cookie", &cookie)], "")
            .await;
        assert_eq!(response.status, 421, "{host}");
    }
    let response = client
        .raw_with_host("GET", "/api/state", None, &[("cookie", &cookie)], "")
        .await;
    assert_eq!(response.status, 421, "no Host header");
    let response = client
        .raw_with_host(
            "GET",
            "/api/state",
            Some(&format!("localhost:{}", client.port)),
            &[("cookie", &cookie)],
            "",
        )
        .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn a_post_needs_the_csrf_token_and_this_origin() {
    let (fake, client) = Client::start(Fake::with_bottle()).await;
    let cookie = client.cookie();
    let csrf = client.csrf().await;
    let path = "/api/bottles/dev-1/down";
    let refused: [Vec<(&str, &str)>; 4] = [
        vec![("cookie", &cookie)],
        vec![("cookie", &cookie), ("x-csrf-token", "0000")],
        vec![
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", "http://evil.example"),
        ],
        vec![
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", "null"),
        ],
    ];
    for headers in refused {
        let response = client.raw("POST", path, &headers, "{}").await;
        assert_eq!(response.status, 403, "{headers:?}");
    }
    assert!(fake.calls().is_empty(), "nothing reached the backend");
    let origin = format!("http://127.0.0.1:{}", client.port);
    let response = client
        .raw(
            "POST",
            path,
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", &origin),
            ],
            "{}",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(fake.calls(), [Call::Down("dev-1".into())]);
}

#[tokio::test]
async fn down_and_egress_call_the_backend_with_what_was_asked() {
    let (fake, client) = Client::start(Fake::with_bottle()).await;
    let response = client.post("/api/bottles/dev-1/down", "{}").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["ok"], true);
    let response = client
        .post(
            "/api/bottles/dev-1/egress",
            r#"{"action":"allow","host":"Example.org:8443"}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["version"], "v-allow");
    let response = client
        .post(
            "/api/bottles/dev-1/egress",
            r#"{"action":"deny","host":"*.example.net"}"#,
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        fake.calls(),
        [
            Call::Down("dev-1".into()),
            Call::Egress(
                "dev-1".into(),
                backend_api::PolicyChange::Allow {
                    host: "example.org".into(),
                    port: Some(8443),
                    methods: None
                }
            ),
            Call::Egress(
                "dev-1".into(),
                backend_api::PolicyChange::Deny {
                    host: "*.example.net".into(),
                    port: None
                }
            ),
        ]
    );
    // What the backend refuses comes back with its status; bad input never reaches it.
    let response = client
        .post(
            "/api/bottles/nope-1/egress",
            r#"{"action":"allow","host":"x.org"}"#,
        )
        .await;
    assert_eq!(response.status, 404);
    for body in [
        r#"{"action":"open","host":"x.org"}"#,
        r#"{"action":"allow","host":"a b"}"#,
        r#"{"action":"allow"}"#,
        "not json",
    ] {
        let response = client.post("/api/bottles/dev-1/egress", body).await;
        assert_eq!(response.status, 400, "{body}");
    }
    assert_eq!(fake.calls().len(), 3);
}

#[tokio::test]
async fn a_decision_calls_decide_and_moves_the_request_to_history() {
    let fake = Fake::with_bottle();
    fake.add_request("req-1", "example.org", HOSTILE_REASON);
    let (fake, client) = Client::start(fake).await;
    client
        .wait_state(|s| s["requests"][0]["id"] == "req-1")
        .await;
    let response = client
        .post(
            "/api/requests/req-1/decide",
            r#"{"approve":true,"note":"  go ahead "}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        fake.calls(),
        [Call::Decide("req-1".into(), true, Some("go ahead".into()))]
    );
    let state = client.state().await;
    assert_eq!(state["requests"].as_array().unwrap().len(), 0);
    assert_eq!(state["history"][0]["outcome"], "approved");
    assert_eq!(state["history"][0]["note"], "go ahead");
    // Gone from the queue: a second decision is refused before the backend.
    let response = client
        .post("/api/requests/req-1/decide", r#"{"approve":false}"#)
        .await;
    assert_eq!(response.status, 404);
    let long = format!(r#"{{"approve":false,"note":"{}"}}"#, "x".repeat(3000));
    fake.add_request("req-2", "example.com", "why");
    client
        .wait_state(|s| s["requests"][0]["id"] == "req-2")
        .await;
    assert_eq!(
        client
            .post("/api/requests/req-2/decide", &long)
            .await
            .status,
        400
    );
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn a_request_decided_elsewhere_goes_to_history_as_gone() {
    let fake = Fake::with_bottle();
    fake.add_request("req-9", "example.org", "r");
    let (fake, client) = Client::start(fake).await;
    client
        .wait_state(|s| s["requests"][0]["id"] == "req-9")
        .await;
    fake.clear_requests();
    client
        .wait_state(|s| s["history"][0]["outcome"] == "gone")
        .await;
}

#[tokio::test]
async fn approve_always_shows_a_diff_and_writes_it_only_when_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("bottle.yaml");
    let text = "bottles:\n  dev:\n    image: {ref: a}\n    egress:\n      allow:\n        - host: pypi.org\nagents:\n  coder:\n    bottle: dev\n";
    std::fs::write(&manifest, text).unwrap();
    let fake = Fake::with_bottle_from(&manifest, "coder");
    fake.add_request("req-a", "example.org", "docs");
    let (fake, client) = Client::start(fake).await;
    client
        .wait_state(|s| s["requests"][0]["id"] == "req-a")
        .await;
    let response = client.post("/api/requests/req-a/always", "{}").await;
    assert_eq!(response.status, 200, "{}", response.body);
    let proposal = response.json();
    assert!(
        proposal["diff"]
            .as_str()
            .unwrap()
            .contains("+        - host: \"example.org\"\n+          methods: [GET]\n"),
        "{}",
        proposal["diff"]
    );
    assert_eq!(proposal["bottle"], "dev");
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        text,
        "nothing written yet"
    );
    assert!(fake.calls().is_empty());
    let response = client
        .post("/api/requests/req-a/always/confirm", r#"{"sha256":"00"}"#)
        .await;
    assert_eq!(response.status, 409);
    assert!(fake.calls().is_empty());
    let body = format!(r#"{{"sha256":"{}"}}"#, proposal["sha256"].as_str().unwrap());
    let response = client
        .post("/api/requests/req-a/always/confirm", &body)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(fake.calls(), [Call::Decide("req-a".into(), true, None)]);
    let written = std::fs::read_to_string(&manifest).unwrap();
    assert!(written.contains("        - host: pypi.org\n        - host: \"example.org\"\n          methods: [GET]\nagents:"), "{written}");
    assert_eq!(
        client.state().await["history"][0]["outcome"],
        "approved_always"
    );
}

#[tokio::test]
async fn the_event_stream_delivers_new_traffic_and_new_requests() {
    let fake = Fake::with_bottle();
    fake.add_audit(r#"{"time":"2026-12-01T10:00:00.000Z","event":"http","method":"GET","host":"old.example","port":443,"path":"/","rule":"allow","action":"allow","reason":""}"#);
    let (fake, client) = Client::start(fake).await;
    let mut events = client.events().await;
    events.read_until("event: snapshot").await;
    events.read_until("old.example").await;
    fake.add_audit(r#"{"time":"2026-12-01T10:00:01.000Z","event":"http","method":"POST","host":"denied.example","port":443,"path":"/x","rule":"no-rule","action":"deny","reason":"host not in the allowlist"}"#);
    let seen = events.read_until("denied.example").await;
    assert!(seen.contains("event: traffic"));
    assert!(seen.contains(r#""verdict":"denied""#));
    fake.add_request("req-live", "new.example", HOSTILE_REASON);
    let seen = events.read_until("req-live").await;
    assert!(seen.contains("event: requests"));
}

#[tokio::test]
async fn agent_text_never_reaches_the_page_as_markup() {
    let fake = Fake::with_bottle();
    fake.add_request("req-x", "evil.example", HOSTILE_REASON);
    fake.add_audit(&format!(
        r#"{{"time":"t","event":"http","method":"GET","host":"h.example","port":443,"path":"/{}","rule":"r","action":"deny","reason":"{}"}}"#,
        "%3Cscript%3E",
        HOSTILE_REASON.replace('"', "\\\"")
    ));
    fake.add_audit("<img src=x onerror=alert(3)> not json");
    let (_fake, client) = Client::start(fake).await;
    let state = client
        .wait_state(|s| {
            s["requests"][0]["id"] == "req-x"
                && s["traffic"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    // The data arrives as JSON data, exactly as the agent wrote it...
    assert_eq!(state["requests"][0]["reason"], HOSTILE_REASON);
    assert_eq!(
        state["traffic"][1]["entry"]["raw"],
        "<img src=x onerror=alert(3)> not json"
    );
    let response = client.get("/api/state").await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    // ...and the HTML shell holds none of it: the script renders it with textContent.
    let page = client.get("/").await.body;
    for needle in ["alert(", "onerror", "evil.example", "req-x"] {
        assert!(!page.contains(needle), "{needle} in the page");
    }
}

#[tokio::test]
async fn unknown_paths_methods_and_big_bodies_are_refused() {
    let (fake, client) = Client::start(Fake::with_bottle()).await;
    assert_eq!(client.get("/nope").await.status, 404);
    assert_eq!(client.post("/api/nope", "{}").await.status, 404);
    assert_eq!(
        client.post("/api/bottles/dev-1/explode", "{}").await.status,
        404
    );
    let cookie = client.cookie();
    assert_eq!(
        client
            .raw("PUT", "/", &[("cookie", &cookie)], "")
            .await
            .status,
        405
    );
    let big = "x".repeat(100 * 1024);
    assert_eq!(
        client.post("/api/bottles/dev-1/down", &big).await.status,
        413
    );
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn a_backend_that_cannot_follow_audit_logs_is_reported_not_fatal() {
    let fake = Fake::with_bottle();
    fake.set_audit_unsupported();
    fake.add_request("req-k", "example.org", "r");
    let (_fake, client) = Client::start(fake).await;
    let state = client
        .wait_state(|s| s["problem"].as_str().is_some_and(|p| p.contains("audit")))
        .await;
    assert_eq!(state["requests"][0]["id"], "req-k");
}
