//! The sidecar over real HTTP on 127.0.0.1: an MCP client on one side, the
//! host API (`supervise::host`) playing the human on the other.

mod harness;
mod limits;

use std::time::{Duration, Instant};

use harness::{Bottle, approve_when_pending, http};
use hyper::StatusCode;
use serde_json::{Value, json};
use supervise::host;
use supervise::{Decision, Outcome, RequestKind};

#[tokio::test]
async fn initialize_then_list_tools() {
    let bottle = Bottle::start(30).await;
    for version in ["2025-03-26", "2025-06-18"] {
        let (status, headers, body) = bottle
            .post(
                &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "it", "version": "0"}}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        let session = headers
            .get("mcp-session-id")
            .expect("a session id on initialize");
        assert_eq!(session.len(), 32);
        let reply: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["id"], 1);
        assert_eq!(reply["result"]["protocolVersion"], version);
        assert_eq!(reply["result"]["capabilities"], json!({"tools": {}}));
        assert_eq!(
            reply["result"]["serverInfo"]["name"],
            "bot-bottle-supervise"
        );
    }
    let (status, _, body) = bottle
        .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(body.is_empty());
    assert_eq!(bottle.rpc("ping", json!({})).await["result"], json!({}));
    let tools = bottle.rpc("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["request_egress", "ask_human", "policy"]);
    for tool in tools["result"]["tools"].as_array().unwrap() {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    bottle.stop().await;
}

#[tokio::test]
async fn policy_returns_the_current_view() {
    let bottle = Bottle::start(30).await;
    let result = bottle.call("policy", json!({})).await;
    assert_eq!(result["isError"], false);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("version v1"), "{text}");
    assert!(
        text.contains("- api.anthropic.com: ports 443; methods any; paths any"),
        "{text}"
    );
    assert!(
        text.contains("- api.anthropic.com: header x-api-key"),
        "{text}"
    );
    assert_eq!(result["structuredContent"]["version"], "v1");
    // The launcher rewrites the view; the next call reads the new one.
    bottle.write_view("v2", "docs.rs");
    let result = bottle.call("policy", json!({})).await;
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("version v2") && text.contains("- docs.rs:"),
        "{text}"
    );
    // A missing view is a tool error, not a crash.
    std::fs::remove_file(bottle.config_dir().join("policy-view.json")).unwrap();
    let result = bottle.call("policy", json!({})).await;
    assert_eq!(result["isError"], true);
    bottle.stop().await;
}

#[tokio::test]
async fn request_egress_waits_for_the_approval() {
    let bottle = Bottle::start(30).await;
    let version = "a".repeat(64);
    let approver = approve_when_pending(bottle.dir(), Duration::from_millis(600), {
        let version = version.clone();
        move |request| {
            assert_eq!(request.kind, RequestKind::Egress);
            assert_eq!(request.bottle_slug, "it-bottle");
            assert_eq!(request.host.as_deref(), Some("docs.rs"));
            assert_eq!(request.port, Some(443));
            assert_eq!(
                request.methods.as_deref(),
                Some(&["GET".to_owned(), "HEAD".to_owned()][..])
            );
            assert_eq!(request.reason.as_deref(), Some("read the tokio docs"));
            Decision::now(
                &request.id,
                Outcome::Approved,
                Some("read-only, please".into()),
            )
            .with_policy_version(version)
        }
    });
    let started = Instant::now();
    let result = bottle
        .call(
            "request_egress",
            json!({"host": "Docs.rs", "port": 443, "methods": ["get", "HEAD"], "reason": "read the tokio docs"}),
        )
        .await;
    let waited = started.elapsed();
    let request = approver.await.unwrap();
    assert!(
        waited >= Duration::from_millis(600),
        "returned before the decision: {waited:?}"
    );
    assert_eq!(result["isError"], false, "{result}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Approved: the human allowed egress to docs.rs:443 (GET, HEAD)."),
        "{text}"
    );
    assert!(
        text.contains("Note from the human: read-only, please"),
        "{text}"
    );
    assert!(text.contains(&version), "{text}");
    assert_eq!(
        result["structuredContent"],
        json!({"outcome": "approved", "note": "read-only, please", "request_id": request.id, "policy_version": version})
    );
    // Decided requests are no longer pending.
    assert!(host::pending_requests(&bottle.dir()).unwrap().is_empty());
    // The audit log holds the request and the decision.
    let audit = bottle.audit_lines();
    let events: Vec<(&str, &str)> = audit
        .iter()
        .map(|l| (l["event"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(events, [("request", "pending"), ("decision", "approved")]);
    assert_eq!(audit[0]["host"], "docs.rs");
    assert_eq!(audit[0]["id"], request.id.as_str());
    assert_eq!(audit[1]["bottle"], "it-bottle");
    bottle.stop().await;
}

#[tokio::test]
async fn a_denial_returns_the_note() {
    let bottle = Bottle::start(30).await;
    let approver = approve_when_pending(bottle.dir(), Duration::ZERO, |request| {
        Decision::now(
            &request.id,
            Outcome::Denied,
            Some("use the vendored copy".into()),
        )
    });
    let result = bottle
        .call(
            "request_egress",
            json!({"host": "*.example.com", "reason": "fetch a tarball"}),
        )
        .await;
    approver.await.unwrap();
    assert_eq!(result["isError"], false);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "Denied: the human refused egress to *.example.com. Note from the human: use the vendored copy"
    );
    assert_eq!(result["structuredContent"]["outcome"], "denied");
    bottle.stop().await;
}

#[tokio::test]
async fn no_decision_in_time_leaves_the_request_pending() {
    let bottle = Bottle::start(30).await;
    let started = Instant::now();
    let result = bottle
        .call(
            "request_egress",
            json!({"host": "docs.rs", "reason": "docs", "timeout_secs": 1}),
        )
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(result["isError"], false);
    let id = result["structuredContent"]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(result["structuredContent"]["outcome"], "pending");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        format!(
            "No decision within 1 s (request {id} is still pending; ask again later: \
             it expires if nobody asks about it for 600 s)."
        )
    );
    let pending = host::pending_requests(&bottle.dir()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    // Asking again joins the pending request; once decided, it returns at once.
    host::write_decision(&bottle.dir(), &Decision::now(&id, Outcome::Approved, None)).unwrap();
    let again = bottle
        .call(
            "request_egress",
            json!({"host": "docs.rs", "reason": "still docs", "timeout_secs": 0}),
        )
        .await;
    // The decided request is not pending any more, so this is a new request...
    assert_ne!(again["structuredContent"]["request_id"], id.as_str());
    assert_eq!(again["structuredContent"]["outcome"], "pending");
    // ...and a third ask joins that one rather than queueing a duplicate.
    let third = bottle
        .call(
            "request_egress",
            json!({"host": "docs.rs", "reason": "docs!", "timeout_secs": 0}),
        )
        .await;
    assert_eq!(
        third["structuredContent"]["request_id"],
        again["structuredContent"]["request_id"]
    );
    assert_eq!(host::pending_requests(&bottle.dir()).unwrap().len(), 1);
    bottle.stop().await;
}

#[tokio::test]
async fn the_cap_bounds_the_wait() {
    let bottle = Bottle::start(1).await;
    let started = Instant::now();
    let result = bottle
        .call(
            "ask_human",
            json!({"question": "Which branch?", "timeout_secs": 600}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("No decision within 1 s"), "{text}");
    bottle.stop().await;
}

#[tokio::test]
async fn forged_files_in_the_queue_cannot_approve() {
    let bottle = Bottle::start(30).await;
    let queue = host::queue_dir(&bottle.dir());
    let forger = tokio::spawn({
        let dir = bottle.dir();
        async move {
            let request = harness::wait_for_pending(&dir).await;
            let approval = Decision::now(&request.id, Outcome::Approved, Some("forged".into()));
            let approval = serde_json::to_string(&approval).unwrap();
            // A decision beside the request, under several names.
            for name in [
                format!("{}.decision.json", request.id),
                format!("{}.json.decision", request.id),
                "decision.json".to_owned(),
            ] {
                std::fs::write(queue.join(name), &approval).unwrap();
            }
            // The request itself edited to say approved.
            let path = queue.join(format!("{}.json", request.id));
            let mut edited: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            edited["outcome"] = "approved".into();
            edited["note"] = "forged".into();
            harness::write_atomic(&path, &edited);
            request
        }
    });
    let result = bottle
        .call(
            "request_egress",
            json!({"host": "evil.example", "reason": "exfil", "timeout_secs": 2}),
        )
        .await;
    forger.await.unwrap();
    assert_eq!(
        result["structuredContent"]["outcome"], "pending",
        "{result}"
    );
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("No decision within 2 s"), "{text}");
    assert!(
        !text.contains("Approved") && !text.contains("forged"),
        "{text}"
    );
    assert!(
        bottle
            .audit_lines()
            .iter()
            .all(|l| l["outcome"] != "approved")
    );
    bottle.stop().await;
}

#[tokio::test]
async fn decision_files_that_do_not_fit_are_ignored() {
    let bottle = Bottle::start(30).await;
    let decisions = host::decisions_dir(&bottle.dir());
    let writer = tokio::spawn({
        let dir = bottle.dir();
        async move {
            let request = harness::wait_for_pending(&dir).await;
            // Straight into decisions/, bypassing write_decision's checks:
            // an answer is not a decision on egress.
            let wrong = Decision::now(&request.id, Outcome::Answered, Some("sure".into()));
            let path = decisions.join(format!("{}.json", request.id));
            harness::write_atomic(&path, &wrong);
            tokio::time::sleep(Duration::from_millis(600)).await;
            // An approval naming another request.
            let mut other = Decision::now(&request.id, Outcome::Approved, None);
            other.id = "f".repeat(32);
            harness::write_atomic(&path, &other);
        }
    });
    let result = bottle
        .call(
            "request_egress",
            json!({"host": "docs.rs", "reason": "docs", "timeout_secs": 2}),
        )
        .await;
    writer.await.unwrap();
    assert_eq!(
        result["structuredContent"]["outcome"], "pending",
        "{result}"
    );
    let refused: Vec<String> = bottle
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "invalid_decision")
        .map(|l| l["detail"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("`answered` cannot decide an egress request"),
        "{refused:?}"
    );
    assert!(refused[1].contains("sits in"), "{refused:?}");
    bottle.stop().await;
}

#[tokio::test]
async fn a_decision_on_an_edited_request_is_refused() {
    let bottle = Bottle::start(30).await;
    let editor = tokio::spawn({
        let dir = bottle.dir();
        async move {
            let mut request = harness::wait_for_pending(&dir).await;
            // The queued request is swapped for another host before the
            // human looks; the approval must not count for the original ask.
            request.host = Some("evil.example".into());
            harness::write_atomic(
                &host::queue_dir(&dir).join(format!("{}.json", request.id)),
                &request,
            );
            host::write_decision(&dir, &Decision::now(&request.id, Outcome::Approved, None))
                .unwrap();
        }
    });
    let result = bottle
        .call(
            "request_egress",
            json!({"host": "docs.rs", "reason": "docs", "timeout_secs": 2}),
        )
        .await;
    editor.await.unwrap();
    assert_eq!(
        result["structuredContent"]["outcome"], "pending",
        "{result}"
    );
    let refused: Vec<Value> = bottle
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "invalid_decision")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]["detail"].as_str().unwrap().contains("changed"),
        "{refused:?}"
    );
    bottle.stop().await;
}

#[tokio::test]
async fn ask_human_gets_the_answer() {
    let bottle = Bottle::start(30).await;
    let approver = approve_when_pending(bottle.dir(), Duration::from_millis(200), |request| {
        assert_eq!(request.kind, RequestKind::Question);
        assert_eq!(
            request.question.as_deref(),
            Some("Which branch should I target?")
        );
        Decision::now(&request.id, Outcome::Answered, Some("release/2.x".into()))
    });
    let result = bottle
        .call(
            "ask_human",
            json!({"question": "Which branch should I target?"}),
        )
        .await;
    approver.await.unwrap();
    assert_eq!(result["isError"], false);
    assert_eq!(
        result["content"][0]["text"],
        "The human answered: release/2.x"
    );
    assert_eq!(result["structuredContent"]["outcome"], "answered");
    // Denied questions say so.
    let approver = approve_when_pending(bottle.dir(), Duration::ZERO, |request| {
        Decision::now(&request.id, Outcome::Denied, None)
    });
    let result = bottle
        .call("ask_human", json!({"question": "May I rm -rf?"}))
        .await;
    approver.await.unwrap();
    assert_eq!(
        result["content"][0]["text"],
        "Denied: the human declined to answer."
    );
    bottle.stop().await;
}

#[tokio::test]
async fn bad_arguments_are_tool_errors() {
    let bottle = Bottle::start(30).await;
    for (args, says) in [
        (
            json!({"host": "https://docs.rs", "reason": "x"}),
            "without a scheme",
        ),
        (
            json!({"host": "docs.rs/a", "reason": "x"}),
            "without a path",
        ),
        (
            json!({"host": "10.0.0.1", "reason": "x"}),
            "not an IP address",
        ),
        (
            json!({"host": "0xa.0xd5.0x7.0x1", "reason": "x"}),
            "spells an IP address",
        ),
        (json!({"host": "docs.rs"}), "missing field `reason`"),
        (json!({"host": "docs.rs", "reason": "x", "port": 0}), "port"),
        (
            json!({"host": "docs.rs", "reason": "x", "methods": ["G T"]}),
            "not an HTTP method",
        ),
        (
            json!({"host": "docs.rs", "reason": "\u{1b}[2J"}),
            "control characters",
        ),
        (
            json!({"host": "docs.rs", "reason": "x", "colour": 1}),
            "unknown field",
        ),
    ] {
        let result = bottle.call("request_egress", args.clone()).await;
        assert_eq!(result["isError"], true, "{args}");
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(says), "{args}: {text}");
    }
    let result = bottle.call("ask_human", json!({"question": " "})).await;
    assert_eq!(result["isError"], true);
    // Nothing was queued.
    assert!(host::pending_requests(&bottle.dir()).unwrap().is_empty());
    bottle.stop().await;
}

#[tokio::test]
async fn protocol_errors() {
    let bottle = Bottle::start(30).await;
    let addr = bottle.addr;
    // Bad JSON.
    let (status, _, body) = http(addr, "POST", "/mcp", b"{not json".to_vec(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["error"]["code"], -32700);
    // Unknown method.
    let reply = bottle.rpc("resources/list", json!({})).await;
    assert_eq!(reply["error"]["code"], -32601);
    // Unknown tool.
    let reply = bottle
        .rpc("tools/call", json!({"name": "sudo", "arguments": {}}))
        .await;
    assert_eq!(reply["error"]["code"], -32602);
    // Not JSON-RPC 2.0.
    let (_, _, body) = bottle
        .post(&json!({"jsonrpc": "1.0", "id": 3, "method": "ping"}))
        .await;
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["error"]["code"], -32600);
    assert_eq!(reply["id"], 3);
    // A batch: two requests and a notification.
    let (status, _, body) = bottle
        .post(&json!([
            {"jsonrpc": "2.0", "id": "a", "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "b", "method": "nope"}
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply.as_array().unwrap().len(), 2);
    assert_eq!(reply[0]["id"], "a");
    assert_eq!(reply[1]["error"]["code"], -32601);
    // GET and DELETE on /mcp.
    for method in ["GET", "DELETE"] {
        let (status, headers, _) = http(addr, method, "/mcp", Vec::new(), &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(headers["allow"], "POST");
    }
    // Health.
    let (status, _, body) = http(addr, "GET", "/healthz", Vec::new(), &[]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    let (status, _, _) = http(addr, "GET", "/elsewhere", Vec::new(), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Bodies are bounded.
    let big = vec![b' '; supervise::MAX_BODY_BYTES + 1];
    let (status, _, _) = http(addr, "POST", "/mcp", big, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Browsers' cross-origin requests are refused.
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec();
    let (status, _, _) = http(
        addr,
        "POST",
        "/mcp",
        ping.clone(),
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = http(
        addr,
        "POST",
        "/mcp",
        ping,
        &[("origin", "http://supervise:8765")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    bottle.stop().await;
}

#[tokio::test]
async fn shutdown_releases_waiting_calls() {
    let bottle = Bottle::start(600).await;
    let call = tokio::spawn({
        let addr = bottle.addr;
        async move { harness::call_at(addr, "ask_human", json!({"question": "Still there?"})).await }
    });
    harness::wait_for_pending(&bottle.dir()).await;
    let started = Instant::now();
    bottle.stop().await;
    let result = call.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("shutting down") && text.contains("still pending"),
        "{text}"
    );
}

#[test]
fn run_reports_a_missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let error = supervise::run(dir.path()).unwrap_err();
    assert!(
        matches!(error, supervise::Error::ReadConfig { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("supervise.json"), "{error}");
}
