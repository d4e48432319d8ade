//! Request bodies on their way upstream: streamed chunk by chunk through the
//! DLP [`BodyScanner`]; a finding turns the stream into an error, which makes
//! hyper abort the upstream request, and is left in a shared slot so the
//! proxy can answer the client with a 403 naming the rule.
//!
//! The last scan window of bytes is held back until the next chunk (or the end of
//! the body) has been scanned: a secret split across two chunks is caught before
//! any of it leaves. Everything else streams.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::dlp::{BodyScanner, Finding};
use crate::live::LivePolicy;

/// Errors crossing body boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a body yields when DLP stops it.
#[derive(Debug, thiserror::Error)]
#[error("request body blocked by DLP rule {rule}")]
pub struct DlpAbort {
    /// The rule that fired.
    pub rule: String,
}

/// Where a body finding is left for the proxy to report.
pub type FindingSlot = Arc<Mutex<Option<Finding>>>;

/// A request body that is scanned as it streams.
pub struct ScannedBody {
    inner: Option<Incoming>,
    scan: Option<(BodyScanner, Arc<LivePolicy>)>,
    finding: FindingSlot,
    /// Scanned bytes not yet released (at most the scan window).
    held: Bytes,
    /// How many trailing bytes to hold back.
    hold: usize,
    /// Trailers that arrived while bytes were held: sent right after them.
    trailers: Option<Frame<Bytes>>,
}

impl ScannedBody {
    /// Wraps `inner`; scans it if the policy's DLP is on.
    pub fn new(inner: Incoming, policy: Arc<LivePolicy>, dest_host: &str) -> (Self, FindingSlot) {
        let finding = FindingSlot::default();
        let scan = policy
            .dlp
            .enabled()
            .then(|| (BodyScanner::new(&policy.dlp, dest_host), policy.clone()));
        let hold = if scan.is_some() {
            policy.dlp.overlap_window()
        } else {
            0
        };
        let body = Self {
            inner: Some(inner),
            scan,
            finding: finding.clone(),
            held: Bytes::new(),
            hold,
            trailers: None,
        };
        (body, finding)
    }

    /// An empty body (for requests the proxy makes without a client body).
    pub fn empty() -> Self {
        Self {
            inner: None,
            scan: None,
            finding: FindingSlot::default(),
            held: Bytes::new(),
            hold: 0,
            trailers: None,
        }
    }
}

impl Body for ScannedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // The whole body was scanned: release what was held back.
                    this.inner = None;
                    let rest = std::mem::take(&mut this.held);
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers: the held bytes go first, the trailers right after.
                        Err(frame) => {
                            if this.held.is_empty() {
                                return Poll::Ready(Some(Ok(frame)));
                            }
                            this.trailers = Some(frame);
                            let held = std::mem::take(&mut this.held);
                            return Poll::Ready(Some(Ok(Frame::data(held))));
                        }
                    };
                    if let Some((scanner, policy)) = this.scan.as_mut()
                        && let Some(finding) = scanner.push(&policy.dlp, &frame)
                    {
                        let rule = finding.rule.clone();
                        if let Ok(mut slot) = this.finding.lock() {
                            *slot = Some(finding);
                        }
                        this.inner = None;
                        this.held = Bytes::new();
                        return Poll::Ready(Some(Err(Box::new(DlpAbort { rule }))));
                    }
                    let mut pending = Vec::with_capacity(this.held.len() + frame.len());
                    pending.extend_from_slice(&this.held);
                    pending.extend_from_slice(&frame);
                    let release = pending.len().saturating_sub(this.hold);
                    let mut pending = Bytes::from(pending);
                    this.held = pending.split_off(release);
                    if !pending.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(pending))));
                    }
                    // Everything is held back so far: read on.
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty()
            && self.trailers.is_none()
            && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}
