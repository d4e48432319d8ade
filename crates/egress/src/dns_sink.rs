//! The DNS sink: the agent's resolver points here, and every query gets
//! NXDOMAIN, so no lookup of an outside name leaves the bottle even on
//! engines whose embedded DNS would forward it. Query names are
//! audit-logged, at most [`DNS_LOG_PER_SEC`] a second after a burst of
//! [`DNS_LOG_BURST`] (a token bucket): the queries over that are answered
//! all the same, counted, and reported in one summary line
//! (`"repeated": N`) every [`DNS_SUMMARY_EVERY`], before the next logged
//! query, and at shutdown. UDP and TCP (length-prefixed) are both served.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use crate::audit::{AuditLog, AuditRecord};
use crate::error::Error;

const HEADER_LEN: usize = 12;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_FORMERR: u8 = 1;

/// The question of a query, as far as the sink cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Dotted name, lower-cased, without the root dot (`example.com`).
    pub name: String,
    /// QTYPE (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
}

/// A parsed query: its question and the response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkAnswer {
    /// The question, if the query had a readable one.
    pub question: Option<Question>,
    /// The response bytes (NXDOMAIN, or FORMERR for unreadable queries).
    pub response: Vec<u8>,
}

/// Builds the sink's answer to one DNS message; `None` if it is too short to
/// even carry an ID, or is itself a response (never answer answers).
pub fn answer_query(query: &[u8]) -> Option<SinkAnswer> {
    if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let parsed = (qdcount == 1)
        .then(|| parse_question(&query[HEADER_LEN..]))
        .flatten();
    let (rcode, question_bytes, question) = match parsed {
        Some((question, len)) => (
            RCODE_NXDOMAIN,
            &query[HEADER_LEN..HEADER_LEN + len],
            Some(question),
        ),
        None => (RCODE_FORMERR, &query[..0], None),
    };
    let mut response = Vec::with_capacity(HEADER_LEN + question_bytes.len());
    response.extend_from_slice(&query[0..2]);
    // QR=1, keep OPCODE and RD; RA=1; RCODE.
    response.push(0x80 | (query[2] & 0x79));
    response.push(0x80 | rcode);
    response.extend_from_slice(&(u16::from(question.is_some())).to_be_bytes());
    response.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    response.extend_from_slice(question_bytes);
    Some(SinkAnswer { question, response })
}

/// Parses QNAME + QTYPE + QCLASS; returns the question and its byte length.
/// Compression pointers are not valid in a query's question and are refused.
fn parse_question(bytes: &[u8]) -> Option<(Question, usize)> {
    let mut labels = Vec::new();
    let mut pos = 0;
    loop {
        let len = usize::from(*bytes.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = bytes.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
        if pos > 255 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]);
    bytes.get(pos + 2..pos + 4)?;
    Some((
        Question {
            name: labels.join("."),
            qtype,
        },
        pos + 4,
    ))
}

fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A".to_owned(),
        28 => "AAAA".to_owned(),
        5 => "CNAME".to_owned(),
        15 => "MX".to_owned(),
        16 => "TXT".to_owned(),
        33 => "SRV".to_owned(),
        65 => "HTTPS".to_owned(),
        12 => "PTR".to_owned(),
        other => format!("TYPE{other}"),
    }
}

/// Queries logged one by one per second, on average.
pub const DNS_LOG_PER_SEC: u32 = 20;
/// Queries logged one by one in a burst.
pub const DNS_LOG_BURST: u32 = 200;
/// How often the count of queries not logged one by one is reported.
pub const DNS_SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// A token bucket for the sink's audit lines, and the count of queries it
/// kept out of the log.
#[derive(Debug)]
pub struct DnsLogLimit {
    per_sec: u32,
    burst: u32,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Queries not logged since the last summary, and when the first was.
    suppressed: u64,
    since: Option<Instant>,
}

impl DnsLogLimit {
    /// `per_sec` lines a second on average, `burst` at once; a full bucket.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_sec,
            burst: burst.max(1),
            state: Mutex::new(Bucket {
                tokens: f64::from(burst.max(1)),
                refilled: now,
                suppressed: 0,
                since: None,
            }),
        }
    }

    /// True if a query at `now` may be logged; otherwise it is counted.
    pub fn admit(&self, now: Instant) -> bool {
        let mut bucket = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * f64::from(self.per_sec))
            .min(f64::from(self.burst));
        bucket.refilled = bucket.refilled.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            bucket.suppressed += 1;
            bucket.since.get_or_insert(now);
            false
        }
    }

    /// The summary record of the queries not logged since the last one, if any.
    pub fn take_summary(&self, now: Instant) -> Option<AuditRecord> {
        let (count, since) = {
            let mut bucket = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let count = std::mem::take(&mut bucket.suppressed);
            (count, bucket.since.take()?)
        };
        let span = now.saturating_duration_since(since);
        let secs = (span.as_secs() + u64::from(span.subsec_nanos() > 0)).max(1);
        let mut record = AuditRecord::now("dns", "deny");
        record.rule = "dns-sink".to_owned();
        record.port = 53;
        record.reason = format!(
            "{count} more queries in {secs} s answered NXDOMAIN but not logged one by one \
             (DNS log rate limit: {}/s, burst {})",
            self.per_sec, self.burst
        );
        record.repeated = Some(count);
        Some(record)
    }
}

fn audit_answer(audit: &AuditLog, limit: &DnsLogLimit, answer: &SinkAnswer, transport: &str) {
    let now = Instant::now();
    if !limit.admit(now) {
        return;
    }
    if let Some(summary) = limit.take_summary(now) {
        audit.write(&summary);
    }
    let mut record = AuditRecord::now("dns", "deny");
    record.rule = "dns-sink".to_owned();
    match &answer.question {
        Some(q) => {
            record.method = qtype_name(q.qtype);
            record.host = q.name.clone();
            record.port = 53;
            record.reason =
                format!("NXDOMAIN over {transport}: the bottle resolves no outside names");
        }
        None => record.reason = format!("malformed query over {transport}: FORMERR"),
    }
    audit.write(&record);
}

/// The bound sink sockets.
pub struct DnsSink {
    /// UDP address.
    pub udp_addr: SocketAddr,
    /// TCP address.
    pub tcp_addr: SocketAddr,
}

/// Binds UDP and TCP on `listen` and serves until `shutdown` flips.
pub async fn start(
    listen: SocketAddr,
    audit: Arc<AuditLog>,
    shutdown: watch::Receiver<bool>,
) -> Result<(DnsSink, Vec<tokio::task::JoinHandle<()>>), Error> {
    let udp = UdpSocket::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let sink = DnsSink {
        udp_addr: udp.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?,
        tcp_addr: tcp.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?,
    };
    let limit = Arc::new(DnsLogLimit::new(
        DNS_LOG_PER_SEC,
        DNS_LOG_BURST,
        Instant::now(),
    ));
    let udp_task = tokio::spawn(serve_udp(
        udp,
        audit.clone(),
        limit.clone(),
        shutdown.clone(),
    ));
    let tcp_task = tokio::spawn(serve_tcp(
        tcp,
        audit.clone(),
        limit.clone(),
        shutdown.clone(),
    ));
    let summary_task = tokio::spawn(report_suppressed(audit, limit, shutdown));
    Ok((sink, vec![udp_task, tcp_task, summary_task]))
}

/// Writes the count of queries not logged one by one every
/// [`DNS_SUMMARY_EVERY`], and once more at shutdown.
async fn report_suppressed(
    audit: Arc<AuditLog>,
    limit: Arc<DnsLogLimit>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(DNS_SUMMARY_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.changed() => true,
            _ = ticks.tick() => false,
        };
        if let Some(summary) = limit.take_summary(Instant::now()) {
            audit.write(&summary);
        }
        if stopping {
            return;
        }
    }
}

async fn serve_udp(
    socket: UdpSocket,
    audit: Arc<AuditLog>,
    limit: Arc<DnsLogLimit>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            _ = shutdown.changed() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let Ok((len, peer)) = received else { continue };
        if let Some(answer) = answer_query(&buf[..len]) {
            audit_answer(&audit, &limit, &answer, "udp");
            let _ = socket.send_to(&answer.response, peer).await;
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    audit: Arc<AuditLog>,
    limit: Arc<DnsLogLimit>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        if let Ok((stream, _)) = accepted {
            let audit = audit.clone();
            let limit = limit.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    serve_tcp_client(stream, &audit, &limit),
                )
                .await;
            });
        }
    }
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    audit: &AuditLog,
    limit: &DnsLogLimit,
) -> std::io::Result<()> {
    loop {
        let len = usize::from(stream.read_u16().await?);
        let mut query = vec![0u8; len];
        stream.read_exact(&mut query).await?;
        let Some(answer) = answer_query(&query) else {
            return Ok(());
        };
        audit_answer(audit, limit, &answer, "tcp");
        let response_len = u16::try_from(answer.response.len()).unwrap_or(u16::MAX);
        stream.write_u16(response_len).await?;
        stream.write_all(&answer.response).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standard recursive query for `name` with the given QTYPE.
    pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn every_query_gets_nxdomain_with_its_question_echoed() {
        let q = query(0xbeef, "Example.COM", 28);
        let answer = answer_query(&q).unwrap();
        assert_eq!(
            answer.question,
            Some(Question {
                name: "example.com".to_owned(),
                qtype: 28
            })
        );
        let r = &answer.response;
        assert_eq!(&r[0..2], &[0xbe, 0xef]);
        assert_eq!(r[2] & 0x80, 0x80, "QR set");
        assert_eq!(r[2] & 0x01, 0x01, "RD copied");
        assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN);
        assert_eq!(&r[4..6], &[0, 1]);
        assert_eq!(&r[6..12], &[0; 6]);
        assert_eq!(&r[12..], &q[12..]);
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        assert_eq!(answer_query(&[0; 5]), None);
        let mut response = query(1, "a.test", 1);
        response[2] |= 0x80;
        assert_eq!(answer_query(&response), None, "responses are not answered");
        let mut truncated = query(7, "example.com", 1);
        truncated.truncate(20);
        let answer = answer_query(&truncated).unwrap();
        assert_eq!(answer.question, None);
        assert_eq!(answer.response[3] & 0x0f, RCODE_FORMERR);
        let mut pointer = query(7, "example.com", 1);
        pointer[12] = 0xc0;
        assert_eq!(
            answer_query(&pointer).unwrap().response[3] & 0x0f,
            RCODE_FORMERR
        );
    }

    #[test]
    fn the_log_rate_is_a_token_bucket_and_nothing_goes_uncounted() {
        let t0 = Instant::now();
        let limit = DnsLogLimit::new(10, 50, t0);
        assert!(limit.take_summary(t0).is_none());
        // The burst passes, the rest of a flood is counted.
        let admitted = (0..1000).filter(|_| limit.admit(t0)).count();
        assert_eq!(admitted, 50);
        // A second later, ten more tokens.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..1000).filter(|_| limit.admit(t1)).count();
        assert_eq!(admitted, 10);
        let summary = limit.take_summary(t1 + Duration::from_millis(10)).unwrap();
        assert_eq!(summary.repeated, Some(1940));
        assert_eq!(summary.event, "dns");
        assert_eq!(summary.rule, "dns-sink");
        assert!(
            summary
                .reason
                .starts_with("1940 more queries in 2 s answered NXDOMAIN"),
            "{}",
            summary.reason
        );
        // Counted once: the next summary is empty.
        assert!(limit.take_summary(t1).is_none());
        // Refilling stops at the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..1000).filter(|_| limit.admit(t2)).count(), 50);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_get_a_bounded_answer_with_the_same_id(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Some(answer) = answer_query(&bytes) {
                    prop_assert_eq!(&answer.response[0..2], &bytes[0..2]);
                    prop_assert!(answer.response.len() <= bytes.len().max(HEADER_LEN));
                }
            }
        }
    }
}
