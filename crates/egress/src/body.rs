//! Request bodies on their way upstream: streamed chunk by chunk through the
//! [`BodyScanner`], which looks for the bottle's placeholders always and for
//! DLP findings when DLP is on; a finding turns the stream into an error,
//! which makes hyper abort the upstream request, and is left in a shared slot
//! so the proxy can answer the client with a 403 naming the rule. Trailers
//! are checked for placeholders too.
//!
//! The last scan window of bytes is held back until the next chunk (or the end of
//! the body) has been scanned: a secret or placeholder split across two chunks is
//! caught before any of it leaves. Everything else streams. With DLP off and no
//! placeholders, nothing is scanned or held.
//!
//! A body sent with `Content-Encoding: gzip` or `deflate` is also decoded as it
//! streams ([`crate::decode`]) and the decoded bytes are scanned the same way,
//! while the compressed bytes go upstream as sent. The decoder consumes each
//! chunk whole before the chunk's bytes may be released, and a secret's
//! compressed form is far shorter than the hold-back window, so no complete
//! secret leaves compressed either. This is DLP's work: with DLP off,
//! compressed bodies are passed as they are. A compressed body that is corrupt or
//! decodes past [`DecodeBound::REQUEST`] (64 MiB, or 200x its compressed size
//! past 8 MiB) is refused as unscannable ([`BodyFinding::Unscannable`]); with
//! DLP on, a body in a coding the proxy cannot decode is refused before it is
//! sent (see [`crate::proxy`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::decode::{Coding, DecodeBound, FeedError, StreamDecoder};
use crate::dlp::{Action, BodyScanner, Budget, Finding, ScanPart};
use crate::live::LivePolicy;
use crate::placeholder::{Location, PlaceholderId};

/// The audit rule of a request body refused because DLP cannot decode it to scan it.
pub const UNSCANNABLE_BODY_RULE: &str = "dlp-unscannable-body";

/// Errors crossing body boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Chunks at least this long are scanned in two halves side by side
/// ([`BodyScanner::push_split`]): each half is long enough that the
/// hand-over to the helper thread costs little next to its scan.
pub const SPLIT_CHUNK: usize = 32 << 10;

/// The error a body yields when a scan stops it.
#[derive(Debug, thiserror::Error)]
#[error("request body blocked: {what}")]
pub struct BodyAbort {
    /// What was found (a rule name, never the value).
    pub what: String,
}

/// What stopped a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFinding {
    /// A DLP rule fired.
    Dlp(Finding),
    /// A placeholder was in the body or a trailer.
    Placeholder(PlaceholderId, Location),
    /// The compressed body could not be decoded to be scanned (why, in words).
    Unscannable(String),
    /// A DLP rule fired on a host in `audit` mode: the body went on; the
    /// proxy logs the rule. A blocking finding later replaces it.
    Audited(Finding),
}

/// Where a body finding is left for the proxy to report.
pub type FindingSlot = Arc<Mutex<Option<BodyFinding>>>;

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
    /// A compressed body's decoder and the scanner of its decoded bytes.
    decoded: Option<(StreamDecoder, BodyScanner)>,
    /// The first released frame, read ahead by [`ScannedBody::scan_ahead`].
    ready: Option<Frame<Bytes>>,
}

impl ScannedBody {
    /// Wraps `inner`; scans it for placeholders, and for secrets if the
    /// policy's DLP is on.
    pub fn new(inner: Incoming, policy: Arc<LivePolicy>, dest_host: &str) -> (Self, FindingSlot) {
        let finding = FindingSlot::default();
        let dlp_window = if policy.dlp.enabled() {
            policy.dlp.overlap_window()
        } else {
            0
        };
        let hold = dlp_window.max(policy.placeholders.window());
        let scan = (hold > 0).then(|| (BodyScanner::with_window(hold, dest_host), policy.clone()));
        let body = Self {
            inner: Some(inner),
            scan,
            finding: finding.clone(),
            held: Bytes::new(),
            hold,
            trailers: None,
            decoded: None,
            ready: None,
        };
        (body, finding)
    }

    /// Also scans the body decoded (for placeholders and DLP findings alike),
    /// if it is sent in `coding` (gzip or deflate) and DLP is on.
    pub fn decoding(mut self, coding: &Coding) -> Self {
        if let Some((scanner, policy)) = &self.scan
            && policy.dlp.enabled()
            && let Some(decoder) = StreamDecoder::new(coding, DecodeBound::REQUEST)
        {
            let scanner = BodyScanner::with_window(self.hold, scanner.dest_host());
            self.decoded = Some((decoder, scanner));
        }
        self
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
            decoded: None,
            ready: None,
        }
    }

    /// Reads and scans the body up to its first released bytes (a body that
    /// fits in the hold-back window: all of it) and keeps them for the
    /// upstream. The proxy calls this before it contacts the upstream, so a
    /// body refused there never reaches it: not its head, not a connection.
    /// An error is the body's own (the finding is in the slot) or the client's.
    pub async fn scan_ahead(&mut self) -> Result<(), BoxError> {
        if self.is_end_stream() {
            return Ok(());
        }
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                self.ready = Some(frame);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }
}

/// One scan window: placeholders first (whatever the DLP setting), then DLP.
/// An audit-mode finding is left in `slot` (if nothing is there yet) and
/// the body goes on.
fn scan_chunk(
    policy: &LivePolicy,
    slot: &FindingSlot,
    buffer: &[u8],
    dest_host: &str,
    budget: &mut Budget,
) -> Option<BodyFinding> {
    if let Some(id) = policy.placeholders.find(buffer) {
        return Some(BodyFinding::Placeholder(id, Location::Body));
    }
    if !policy.dlp.enabled() {
        return None;
    }
    let finding = policy
        .dlp
        .scan_budgeted(buffer, ScanPart::Body, dest_host, budget)?;
    if finding.action == Action::Audit {
        if let Ok(mut slot) = slot.lock()
            && slot.is_none()
        {
            *slot = Some(BodyFinding::Audited(finding));
        }
        return None;
    }
    Some(BodyFinding::Dlp(finding))
}

impl ScannedBody {
    /// Leaves `finding` for the proxy, drops what is held and ends the stream.
    fn stop(&mut self, finding: BodyFinding) -> BoxError {
        let what = match &finding {
            BodyFinding::Dlp(f) => format!("DLP rule {}", f.rule),
            BodyFinding::Placeholder(_, location) => format!("a placeholder in {location}"),
            BodyFinding::Unscannable(why) => format!("compressed body not scannable: {why}"),
            BodyFinding::Audited(f) => format!("DLP rule {} (audit)", f.rule),
        };
        if let Ok(mut slot) = self.finding.lock() {
            *slot = Some(finding);
        }
        self.inner = None;
        self.held = Bytes::new();
        self.trailers = None;
        self.decoded = None;
        Box::new(BodyAbort { what })
    }

    /// Decodes `chunk` (compressed) and scans what comes out.
    fn scan_decoded(&mut self, chunk: &[u8], end: bool) -> Option<BodyFinding> {
        let (Some((decoder, scanner)), Some((_, policy))) =
            (self.decoded.as_mut(), self.scan.as_ref())
        else {
            return None;
        };
        let slot = &self.finding;
        let scan = |scanner: &mut BodyScanner, output: Vec<u8>| match scanner
            .push_with(&output, |buffer, dest_host, budget| {
                scan_chunk(policy, slot, buffer, dest_host, budget)
            }) {
            Some(finding) => Err(finding),
            None => Ok(()),
        };
        let result = decoder.feed(chunk, |output| scan(scanner, output));
        let result = result.and_then(|()| {
            if end {
                let rest = decoder.finish().map_err(FeedError::Decode)?;
                scan(scanner, rest).map_err(FeedError::Sink)
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => None,
            Err(FeedError::Sink(finding)) => Some(finding),
            Err(FeedError::Decode(e)) => Some(BodyFinding::Unscannable(e.to_string())),
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
        if let Some(frame) = this.ready.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
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
                    // A compressed body must also end where its coding says.
                    if let Some(finding) = this.scan_decoded(&[], true) {
                        return Poll::Ready(Some(Err(this.stop(finding))));
                    }
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
                            if let Some((_, policy)) = this.scan.as_ref()
                                && let Some((id, location)) = frame
                                    .trailers_ref()
                                    .and_then(|t| policy.placeholders.find_in_trailers(t))
                            {
                                return Poll::Ready(Some(Err(
                                    this.stop(BodyFinding::Placeholder(id, location))
                                )));
                            }
                            if let Some(finding) = this.scan_decoded(&[], true) {
                                return Poll::Ready(Some(Err(this.stop(finding))));
                            }
                            if this.held.is_empty() {
                                return Poll::Ready(Some(Ok(frame)));
                            }
                            this.trailers = Some(frame);
                            let held = std::mem::take(&mut this.held);
                            return Poll::Ready(Some(Ok(Frame::data(held))));
                        }
                    };
                    let slot = &this.finding;
                    if let Some((scanner, policy)) = this.scan.as_mut()
                        && let Some(finding) = if frame.len() >= SPLIT_CHUNK && policy.dlp.enabled()
                        {
                            let (policy, slot) = (policy.clone(), slot.clone());
                            scanner.push_split(&frame, move |buffer, dest_host, budget| {
                                scan_chunk(&policy, &slot, buffer, dest_host, budget)
                            })
                        } else {
                            scanner.push_with(&frame, |buffer, dest_host, budget| {
                                scan_chunk(policy, slot, buffer, dest_host, budget)
                            })
                        }
                    {
                        return Poll::Ready(Some(Err(this.stop(finding))));
                    }
                    if let Some(finding) = this.scan_decoded(&frame, false) {
                        return Poll::Ready(Some(Err(this.stop(finding))));
                    }
                    if frame.len() >= this.hold {
                        // The new window lies within this chunk: what was held goes
                        // now, the rest of the chunk right after, without copying.
                        let earlier = std::mem::take(&mut this.held);
                        let cut = frame.len() - this.hold;
                        this.held = frame.slice(cut..);
                        let fresh = frame.slice(..cut);
                        match (earlier.is_empty(), fresh.is_empty()) {
                            (true, true) => continue,
                            (true, false) => return Poll::Ready(Some(Ok(Frame::data(fresh)))),
                            (false, true) => return Poll::Ready(Some(Ok(Frame::data(earlier)))),
                            (false, false) => {
                                this.ready = Some(Frame::data(fresh));
                                return Poll::Ready(Some(Ok(Frame::data(earlier))));
                            }
                        }
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
        self.ready.is_none()
            && self.held.is_empty()
            && self.trailers.is_none()
            && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self
            .inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0));
        // Bytes already read from the client but not yet released count too.
        let ready = self
            .ready
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, Bytes::len);
        let buffered = (self.held.len() + ready) as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + buffered);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}
