//! Request bodies on their way upstream: streamed chunk by chunk through the
//! DLP [`BodyScanner`]; a finding turns the stream into an error, which makes
//! hyper abort the upstream request, and is left in a shared slot so the
//! proxy can answer the client with a 403 naming the rule.

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
}

impl ScannedBody {
    /// Wraps `inner`; scans it if the policy's DLP is on.
    pub fn new(inner: Incoming, policy: Arc<LivePolicy>, dest_host: &str) -> (Self, FindingSlot) {
        let finding = FindingSlot::default();
        let scan = policy
            .dlp
            .enabled()
            .then(|| (BodyScanner::new(&policy.dlp, dest_host), policy.clone()));
        let body = Self {
            inner: Some(inner),
            scan,
            finding: finding.clone(),
        };
        (body, finding)
    }

    /// An empty body (for requests the proxy makes without a client body).
    pub fn empty() -> Self {
        Self {
            inner: None,
            scan: None,
            finding: FindingSlot::default(),
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((scanner, policy))) =
                    (frame.data_ref(), this.scan.as_mut())
                    && let Some(finding) = scanner.push(&policy.dlp, data)
                {
                    let rule = finding.rule.clone();
                    if let Ok(mut slot) = this.finding.lock() {
                        *slot = Some(finding);
                    }
                    this.inner = None;
                    return Poll::Ready(Some(Err(Box::new(DlpAbort { rule }))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}
