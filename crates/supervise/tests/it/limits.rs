//! Limits that keep the queue readable: a cap on pending requests, a rate limit on
//! new ones, and abandoned requests leaving the queue.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use supervise::host;
use supervise::{Decision, Outcome};

use crate::harness::{self, Bottle};

async fn ask_egress(bottle: &Bottle, host: &str, timeout_secs: u64) -> Value {
    bottle
        .call(
            "request_egress",
            json!({"host": host, "reason": "the task needs it", "timeout_secs": timeout_secs}),
        )
        .await
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap()
}

fn pending_count(bottle: &Bottle) -> usize {
    host::pending_requests(&bottle.dir()).unwrap().len()
}

/// Polls until `check` holds (10 s at most).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_pending_queue_is_capped() {
    let bottle = Bottle::start_with(30, |config| {
        config.max_pending = 3;
        config.max_requests_per_minute = 100;
    })
    .await;
    let mut ids = Vec::new();
    for host in ["a.example", "b.example", "c.example"] {
        let result = ask_egress(&bottle, host, 0).await;
        assert_eq!(result["isError"], false, "{result}");
        assert_eq!(result["structuredContent"]["outcome"], "pending");
        ids.push(result["structuredContent"]["request_id"].clone());
    }
    let refused = ask_egress(&bottle, "d.example", 0).await;
    assert_eq!(refused["isError"], true, "{refused}");
    assert_eq!(
        text(&refused),
        "request_egress: too many pending requests (3 of at most 3): wait for the human to \
         answer the ones you asked; asking again for something already pending joins it"
    );
    assert_eq!(refused["structuredContent"]["outcome"], "refused");
    assert_eq!(refused["structuredContent"]["limit"], "max_pending");
    // Questions count against the same cap.
    let question = bottle
        .call(
            "ask_human",
            json!({"question": "Which branch?", "timeout_secs": 0}),
        )
        .await;
    assert_eq!(question["isError"], true, "{question}");
    assert!(text(&question).starts_with("ask_human: too many pending requests"));
    // Asking again for something pending still joins it.
    let again = ask_egress(&bottle, "b.example", 0).await;
    assert_eq!(again["isError"], false, "{again}");
    assert_eq!(again["structuredContent"]["request_id"], ids[1]);
    assert_eq!(pending_count(&bottle), 3);
    // Once the human answers one, there is room again.
    let id = ids[0].as_str().unwrap();
    host::write_decision(&bottle.dir(), &Decision::now(id, Outcome::Denied, None)).unwrap();
    let result = ask_egress(&bottle, "d.example", 0).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(pending_count(&bottle), 3);
    let refusals: Vec<Value> = bottle
        .audit_lines()
        .into_iter()
        .filter(|line| line["event"] == "refused")
        .collect();
    assert_eq!(refusals.len(), 1, "one line, then counted: {refusals:?}");
    assert_eq!(refusals[0]["host"], "d.example");
    assert_eq!(refusals[0]["outcome"], "refused");
    // The refusal counted since is audited when the sidecar stops.
    let audit = bottle.stop_and_read_audit().await;
    let refusals: Vec<&Value> = audit.iter().filter(|l| l["event"] == "refused").collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(refusals[1]["kind"], "question");
}

#[tokio::test]
async fn new_requests_are_rate_limited() {
    let bottle = Bottle::start_with(30, |config| {
        config.max_pending = 100;
        config.max_requests_per_minute = 5;
    })
    .await;
    for i in 0..5 {
        let result = ask_egress(&bottle, &format!("h{i}.example"), 0).await;
        assert_eq!(result["isError"], false, "{result}");
    }
    let refused = ask_egress(&bottle, "h5.example", 0).await;
    assert_eq!(refused["isError"], true, "{refused}");
    let message = text(&refused);
    assert!(
        message.starts_with(
            "request_egress: slow down: 5 requests in the last minute (at most 5 a minute); \
             try again in "
        ),
        "{message}"
    );
    let retry = refused["structuredContent"]["retry_after_secs"]
        .as_u64()
        .unwrap();
    assert!((50..=60).contains(&retry), "{retry}");
    assert_eq!(
        refused["structuredContent"]["limit"],
        "max_requests_per_minute"
    );
    // Joining is not a new request.
    let again = ask_egress(&bottle, "h0.example", 0).await;
    assert_eq!(again["isError"], false, "{again}");
    assert_eq!(pending_count(&bottle), 5);
    bottle.stop().await;
}

#[tokio::test]
async fn a_flood_of_asks_leaves_a_readable_queue() {
    let bottle = Bottle::start(30).await;
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let addr = bottle.addr;
            tokio::spawn(async move {
                harness::call_at(
                    addr,
                    "request_egress",
                    json!({"host": format!("flood{i}.example"), "reason": "x", "timeout_secs": 0}),
                )
                .await
            })
        })
        .collect();
    let mut accepted = 0;
    let mut refused = 0;
    for call in calls {
        let result = call.await.unwrap();
        if result["isError"] == true {
            assert!(text(&result).contains("slow down"), "{result}");
            refused += 1;
        } else {
            accepted += 1;
        }
    }
    // The defaults: 10 new requests a minute, 16 pending.
    assert_eq!((accepted, refused), (10, 30));
    assert_eq!(pending_count(&bottle), 10);
    let audit = bottle.audit_lines();
    let refusal_lines = audit.iter().filter(|l| l["event"] == "refused").count();
    assert_eq!(
        refusal_lines, 1,
        "refusals are counted, not logged one by one"
    );
    bottle.stop().await;
}

#[tokio::test]
async fn abandoned_requests_leave_the_queue() {
    let bottle = Bottle::start_with(30, |config| config.abandon_after_secs = 1).await;
    // Asked with timeout 0 and never again: it expires.
    let result = ask_egress(&bottle, "gone.example", 0).await;
    let id = result["structuredContent"]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text(&result).ends_with("it expires if nobody asks about it for 1 s)."),
        "{result}"
    );
    assert_eq!(pending_count(&bottle), 1);
    eventually("the abandoned request expires", || {
        pending_count(&bottle) == 0
    })
    .await;
    assert!(
        !host::queue_dir(&bottle.dir())
            .join(format!("{id}.json"))
            .exists()
    );
    let expired = bottle
        .audit_lines()
        .into_iter()
        .find(|line| line["event"] == "expired")
        .expect("an expired line");
    assert_eq!(expired["id"], id.as_str());
    assert_eq!(expired["outcome"], "expired");
    // The human is too late, and told so.
    let late = host::write_decision(&bottle.dir(), &Decision::now(&id, Outcome::Approved, None));
    assert!(
        matches!(late, Err(supervise::Error::NoSuchRequest(_))),
        "{late:?}"
    );
    bottle.stop().await;
}

#[tokio::test]
async fn a_waited_on_request_does_not_expire() {
    let bottle = Bottle::start_with(30, |config| config.abandon_after_secs = 1).await;
    let call = tokio::spawn({
        let addr = bottle.addr;
        async move {
            harness::call_at(
                addr,
                "request_egress",
                json!({"host": "slow.example", "reason": "x", "timeout_secs": 3}),
            )
            .await
        }
    });
    harness::wait_for_pending(&bottle.dir()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(pending_count(&bottle), 1, "expired while a call waited");
    let result = call.await.unwrap();
    assert_eq!(result["structuredContent"]["outcome"], "pending");
    // Polling keeps it alive too.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = ask_egress(&bottle, "slow.example", 0).await;
        assert_eq!(
            again["structuredContent"]["request_id"],
            result["structuredContent"]["request_id"]
        );
    }
    // Then nobody asks any more.
    eventually("the request expires once nobody asks", || {
        pending_count(&bottle) == 0
    })
    .await;
    bottle.stop().await;
}

#[tokio::test]
async fn requests_left_by_an_earlier_sidecar_expire_by_age() {
    let bottle = Bottle::start_with(30, |config| config.abandon_after_secs = 1).await;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = "0123456789abcdef0123456789abcdef";
    let fresh = "fedcba9876543210fedcba9876543210";
    for (id, created) in [(old, created - 120), (fresh, created + 3600)] {
        harness::write_atomic(
            &host::queue_dir(&bottle.dir()).join(format!("{id}.json")),
            &json!({"id": id, "bottle_slug": "it-bottle", "created": created,
                    "kind": "question", "question": "left over?"}),
        );
    }
    eventually("the old request expires", || {
        host::pending_requests(&bottle.dir())
            .unwrap()
            .iter()
            .all(|r| r.id != old)
    })
    .await;
    let pending = host::pending_requests(&bottle.dir()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, fresh);
    bottle.stop().await;
}
