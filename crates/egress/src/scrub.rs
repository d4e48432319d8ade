//! The real credential never comes back: responses from a credential route's
//! host are scrubbed of the bottle's route secrets before anything reaches
//! the agent, whatever the DLP setting.
//!
//! An allowed route host that echoes request headers (a debug endpoint, an
//! error page, httpbin-style `/headers`) would otherwise hand the injected
//! token straight back to the agent. So for every response from a host that
//! has a route (any path, any scheme), the proxy looks for every route's real
//! secret in every spelling DLP knows ([`crate::dlp::encoded_form_list`]:
//! raw, base64, base64url, hex, percent-encoded, base32, reversed, rot13; ASCII
//! case ignored) in the status line's reason phrase, every header name and
//! value, the body and the trailers, and replaces each occurrence by the same
//! spelling of the route's placeholder (or of [`SCRUBBED_MARKER`] for a route
//! without one).
//!
//! - **Lengths are kept**: a replacement is cut or padded with `x` to the
//!   length of what it replaces (generated placeholders have the token's
//!   length anyway), so `Content-Length` stays right and identity responses
//!   keep their framing. The few bits of a secret's first and last byte that
//!   share a base64 or base32 character with their neighbours stay.
//! - **Streaming, never buffered**: the body is scrubbed chunk by chunk; only
//!   the longest tail of what came so far that could still begin a secret's
//!   spelling is held back until the next chunk (so a secret split across
//!   chunks is still caught, and clean streams such as SSE are not delayed).
//! - **Compressed bodies** (`gzip`, `x-gzip`, `deflate`) are decoded as they
//!   stream within [`DecodeBound::RESPONSE`] (256 MiB, or 200x the compressed
//!   size past 8 MiB), scrubbed and passed on decoded: `Content-Encoding` and
//!   `Content-Length` are removed (HTTP/1.1 clients get a chunked body) and a
//!   strong `ETag` is made weak. Requests to a route host only offer the
//!   codings the proxy can decode (`Accept-Encoding` is narrowed to gzip and
//!   deflate, or `identity`) and go without `Range`: a reflected secret fetched
//!   a few bytes per range would come in pieces too short to recognise, so
//!   answers from a route host come whole (a resumed download starts over).
//! - **What cannot be scanned is refused, never passed**: a response from a
//!   route host in any other coding (`br`, `zstd`, stacked codings), or a byte
//!   range of a compressed body, is answered with a 502 that says why (audit
//!   rule `response-unscannable`). A body that turns out corrupt or exceeds
//!   the bound mid-stream is cut off there (the client sees a truncated
//!   response) and audited the same way.
//! - **Audited, never quoted**: a response that was scrubbed gets its own
//!   audit line when its body ends, rule `credential-scrubbed:SECRET_ENV`,
//!   reason "credential scrubbed from response: ..." naming where (header
//!   names, counts in the body), never the value.
//!
//! Responses from hosts without a route are not touched and cost nothing.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::audit::{AuditLog, AuditRecord};
use crate::body::BoxError;
use crate::decode::{Coding, DecodeBound, DecodeError, StreamDecoder};
use crate::dlp::encoded_form_list;
use crate::secret::SecretValue;

/// What stands in for a route's secret when the route declares no placeholder.
pub const SCRUBBED_MARKER: &str = "bottle-scrubbed";

/// The audit rule prefix of a scrubbed response.
pub const RULE_PREFIX: &str = "credential-scrubbed";

/// The audit rule of a response refused or cut off because it could not be scanned.
pub const UNSCANNABLE_RULE: &str = "response-unscannable";

/// One route's secret, as the scrubber needs it.
#[derive(Debug, Clone)]
pub struct ScrubSecret {
    /// The sidecar variable holding it (named in the audit, not secret).
    pub name: String,
    /// The real token.
    pub value: SecretValue,
    /// What the agent holds instead, if declared.
    pub placeholder: Option<String>,
    /// The route's normalized host.
    pub host: String,
}

/// The compiled scrubber of one policy version.
pub struct ResponseScrubber {
    hosts: Vec<String>,
    names: Vec<String>,
    automaton: Option<AhoCorasick>,
    patterns: Vec<Vec<u8>>,
    replacements: Vec<Vec<u8>>,
    secret_of: Vec<usize>,
    longest: usize,
    first_bytes: [bool; 256],
}

impl std::fmt::Debug for ResponseScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseScrubber")
            .field("hosts", &self.hosts)
            .field("names", &self.names)
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

/// `source` cut or padded with `x` to exactly `len` bytes.
fn fit(source: &[u8], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = source.iter().copied().take(len).collect();
    out.resize(len, b'x');
    out
}

impl ResponseScrubber {
    /// Compiles the scrubber for the routes' secrets.
    pub fn new(secrets: &[ScrubSecret]) -> Result<Self, String> {
        let mut hosts = Vec::new();
        let mut names = Vec::new();
        let mut patterns = Vec::new();
        let mut replacements = Vec::new();
        let mut secret_of = Vec::new();
        for secret in secrets {
            let index = names.len();
            hosts.push(secret.host.clone());
            names.push(secret.name.clone());
            if secret.value.expose().is_empty() {
                continue;
            }
            let stand_in = secret
                .placeholder
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or(SCRUBBED_MARKER);
            let stand_in_forms = encoded_form_list(stand_in);
            for (i, form) in encoded_form_list(secret.value.expose())
                .into_iter()
                .enumerate()
            {
                // The same kind of spelling of the stand-in (forms line up by index).
                let source = stand_in_forms.get(i).unwrap_or(&stand_in_forms[0]);
                replacements.push(fit(source, form.len()));
                patterns.push(form);
                secret_of.push(index);
            }
        }
        hosts.sort();
        hosts.dedup();
        let automaton = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .map_err(|e| format!("cannot index the route secrets for scrubbing: {e}"))?,
            )
        };
        let mut first_bytes = [false; 256];
        for pattern in &patterns {
            if let Some(&b) = pattern.first() {
                first_bytes[usize::from(b.to_ascii_lowercase())] = true;
                first_bytes[usize::from(b.to_ascii_uppercase())] = true;
            }
        }
        Ok(Self {
            hosts,
            names,
            automaton,
            longest: patterns.iter().map(Vec::len).max().unwrap_or(0),
            patterns,
            replacements,
            secret_of,
            first_bytes,
        })
    }

    /// Whether responses from `host` (normalized) are scrubbed: it has a route.
    pub fn covers(&self, host: &str) -> bool {
        self.automaton.is_some() && self.hosts.iter().any(|h| h == host)
    }

    /// Whether `data` holds any secret's spelling.
    pub fn finds(&self, data: &[u8]) -> bool {
        self.automaton.as_ref().is_some_and(|ac| ac.is_match(data))
    }

    /// Replaces every spelling in `data` (same length); returns where the last
    /// replacement ended (0 if none).
    fn replace_in_place(
        &self,
        data: &mut [u8],
        place: Place<'_>,
        report: &mut ScrubReport,
    ) -> usize {
        let Some(ac) = &self.automaton else {
            return 0;
        };
        let found: Vec<(usize, usize, usize)> = ac
            .find_iter(&*data)
            .map(|m| (m.start(), m.end(), m.pattern().as_usize()))
            .collect();
        let mut end = 0;
        for (start, stop, pattern) in found {
            data[start..stop].copy_from_slice(&self.replacements[pattern]);
            report.record(self.secret_of[pattern], place);
            end = stop;
        }
        end
    }

    /// `data` with every spelling replaced, or `None` if it holds none.
    pub fn scrub_bytes(
        &self,
        data: &[u8],
        place: Place<'_>,
        report: &mut ScrubReport,
    ) -> Option<Vec<u8>> {
        if !self.finds(data) {
            return None;
        }
        let mut out = data.to_vec();
        self.replace_in_place(&mut out, place, report);
        Some(out)
    }

    /// The length of the longest tail of `data` that could still begin a
    /// spelling (so it must wait for the next chunk).
    fn pending_prefix_len(&self, data: &[u8]) -> usize {
        let start = data.len().saturating_sub(self.longest.saturating_sub(1));
        for i in start..data.len() {
            if !self.first_bytes[usize::from(data[i])] {
                continue;
            }
            let tail = &data[i..];
            if self
                .patterns
                .iter()
                .any(|p| p.len() > tail.len() && p[..tail.len()].eq_ignore_ascii_case(tail))
            {
                return tail.len();
            }
        }
        0
    }

    /// Scrubs header names and values (a header whose name holds a secret,
    /// or whose scrubbed value is not a valid value, is dropped).
    pub fn scrub_headers(&self, headers: &mut HeaderMap, trailers: bool, report: &mut ScrubReport) {
        if !headers.iter().any(|(name, value)| {
            self.finds(name.as_str().as_bytes()) || self.finds(value.as_bytes())
        }) {
            return;
        }
        let old = std::mem::take(headers);
        let mut current = None;
        for (name, value) in old {
            if let Some(name) = name {
                current = Some(name);
            }
            let Some(name) = current.clone() else {
                continue;
            };
            if let Some(ac) = &self.automaton
                && let Some(hit) = ac.find(name.as_str().as_bytes())
            {
                report.record(self.secret_of[hit.pattern().as_usize()], Place::HeaderName);
                continue;
            }
            let place = if trailers {
                Place::Trailer(name.as_str())
            } else {
                Place::Header(name.as_str())
            };
            match self.scrub_bytes(value.as_bytes(), place, report) {
                None => {
                    headers.append(name, value);
                }
                Some(scrubbed) => {
                    if let Ok(mut new_value) = HeaderValue::from_bytes(&scrubbed) {
                        new_value.set_sensitive(value.is_sensitive());
                        headers.append(name, new_value);
                    }
                }
            }
        }
    }
}

/// Where a secret was found in a response.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// The status line's reason phrase.
    ReasonPhrase,
    /// A header name (the header is dropped; its name is never logged).
    HeaderName,
    /// A header value.
    Header(&'a str),
    /// The body.
    Body,
    /// A trailer value.
    Trailer(&'a str),
}

#[derive(Debug, Default, Clone)]
struct SecretHits {
    reason_phrase: bool,
    header_names: u64,
    headers: BTreeSet<String>,
    trailers: BTreeSet<String>,
    body: u64,
}

impl SecretHits {
    fn is_empty(&self) -> bool {
        !self.reason_phrase
            && self.header_names == 0
            && self.headers.is_empty()
            && self.trailers.is_empty()
            && self.body == 0
    }

    fn describe(&self, name: &str) -> String {
        let mut places = Vec::new();
        if self.reason_phrase {
            places.push("the status line".to_owned());
        }
        for header in &self.headers {
            places.push(format!("header `{header}`"));
        }
        if self.header_names > 0 {
            places.push(format!("{} header name(s) (dropped)", self.header_names));
        }
        if self.body > 0 {
            places.push(format!("{} time(s) in the body", self.body));
        }
        for trailer in &self.trailers {
            places.push(format!("trailer `{trailer}`"));
        }
        format!("{name} in {}", places.join(", "))
    }
}

/// What was scrubbed from one response, per secret (places and counts, never values).
#[derive(Debug, Clone)]
pub struct ScrubReport {
    names: Vec<String>,
    hits: Vec<SecretHits>,
}

impl ScrubReport {
    /// An empty report for `scrubber`'s secrets.
    pub fn new(scrubber: &ResponseScrubber) -> Self {
        Self {
            names: scrubber.names.clone(),
            hits: vec![SecretHits::default(); scrubber.names.len()],
        }
    }

    fn record(&mut self, secret: usize, place: Place<'_>) {
        let Some(hits) = self.hits.get_mut(secret) else {
            return;
        };
        match place {
            Place::ReasonPhrase => hits.reason_phrase = true,
            Place::HeaderName => hits.header_names += 1,
            Place::Header(name) => {
                hits.headers.insert(name.to_owned());
            }
            Place::Body => hits.body += 1,
            Place::Trailer(name) => {
                hits.trailers.insert(name.to_owned());
            }
        }
    }

    /// Whether nothing was scrubbed.
    pub fn is_empty(&self) -> bool {
        self.hits.iter().all(SecretHits::is_empty)
    }

    /// How many times a secret was replaced in the body.
    pub fn body_hits(&self) -> u64 {
        self.hits.iter().map(|h| h.body).sum()
    }

    /// The audit rule: `credential-scrubbed:NAME[,NAME]`.
    pub fn rule(&self) -> String {
        let names: Vec<&str> = self
            .names
            .iter()
            .zip(&self.hits)
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, _)| n.as_str())
            .collect();
        format!("{RULE_PREFIX}:{}", names.join(","))
    }

    /// The audit reason: where each secret was found.
    pub fn reason(&self) -> String {
        let parts: Vec<String> = self
            .names
            .iter()
            .zip(&self.hits)
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| h.describe(n))
            .collect();
        format!(
            "credential scrubbed from response: {}; replaced by the placeholder",
            parts.join("; ")
        )
    }
}

/// The body side of the scrub: holds back only what could still begin a spelling.
#[derive(Debug, Default)]
pub struct StreamScrub {
    held: Vec<u8>,
}

impl StreamScrub {
    /// Scrubs the next chunk; returns what may be released now.
    pub fn push(
        &mut self,
        scrubber: &ResponseScrubber,
        chunk: Bytes,
        report: &mut ScrubReport,
    ) -> Bytes {
        if chunk.is_empty() {
            return chunk;
        }
        let mut buffer = if self.held.is_empty() {
            if !scrubber.finds(&chunk) {
                // The common case: nothing to replace, no copy.
                let keep = scrubber.pending_prefix_len(&chunk);
                let release = chunk.len() - keep;
                if keep > 0 {
                    self.held = chunk[release..].to_vec();
                }
                return chunk.slice(..release);
            }
            chunk.to_vec()
        } else {
            let mut buffer = std::mem::take(&mut self.held);
            buffer.extend_from_slice(&chunk);
            buffer
        };
        let done = scrubber.replace_in_place(&mut buffer, Place::Body, report);
        let keep = scrubber.pending_prefix_len(&buffer[done..]);
        let release = buffer.len() - keep;
        self.held = buffer.split_off(release);
        Bytes::from(buffer)
    }

    /// The body ended: what is still held (it cannot begin a secret any more).
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.held))
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Why a response from a route host was refused rather than passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unscannable {
    /// A content coding the proxy cannot decode.
    #[error(
        "the response is encoded with `{0}`, which the proxy cannot decode to check it for the \
         route's credential (it decodes gzip and deflate)"
    )]
    Coding(String),
    /// A byte range of a compressed body cannot be decoded on its own.
    #[error(
        "the response is a byte range of a {0}-compressed body, which cannot be decoded on its \
         own to check it for the route's credential"
    )]
    CompressedRange(String),
}

impl Unscannable {
    /// The 502 body.
    pub fn response_body(&self, what: &str) -> String {
        format!(
            "bot-bottle egress: refused the response to {what}\nreason: {self}\nrule: \
             {UNSCANNABLE_RULE}\nresponses from a credential route's host reach the agent only \
             after the proxy has scanned them for the real credential, and a response it cannot \
             scan is refused, not passed; ask for it uncompressed (or gzip) and whole\n"
        )
    }
}

/// Where a scrubbed body writes its audit lines.
pub struct ScrubAudit {
    /// The log.
    pub log: Arc<AuditLog>,
    /// The request's record (method, host, port, path), copied into each line.
    pub record: AuditRecord,
}

impl ScrubAudit {
    fn write(&self, action: &'static str, rule: String, reason: String) {
        let mut record = self.record.clone();
        let now = AuditRecord::now("http", action);
        record.time = now.time;
        record.event = now.event;
        record.action = action;
        record.rule = rule;
        record.reason = reason;
        record.dlp = None;
        self.log.write(&record);
    }
}

/// A response body from a route host, scrubbed (and decoded) as it streams.
pub struct ScrubBody<B> {
    inner: Option<B>,
    scrubber: Arc<ResponseScrubber>,
    stream: StreamScrub,
    decoder: Option<StreamDecoder>,
    /// Compressed bytes not yet consumed by the decoder.
    pending: Bytes,
    /// Whether the end of the body was handled (decoder finished, tail released).
    finished: bool,
    /// Scrubbed trailers, sent after the last data.
    trailers: Option<HeaderMap>,
    report: ScrubReport,
    audit: Option<ScrubAudit>,
}

impl<B> ScrubBody<B> {
    fn new(
        inner: B,
        scrubber: Arc<ResponseScrubber>,
        decoder: Option<StreamDecoder>,
        report: ScrubReport,
        audit: Option<ScrubAudit>,
    ) -> Self {
        Self {
            inner: Some(inner),
            scrubber,
            stream: StreamScrub::default(),
            decoder,
            pending: Bytes::new(),
            finished: false,
            trailers: None,
            report,
            audit,
        }
    }

    /// What was scrubbed so far.
    pub fn report(&self) -> &ScrubReport {
        &self.report
    }

    /// Ends the body with an error (the client sees a cut-off response) and audits why.
    fn cut_off(&mut self, error: &DecodeError) -> BoxError {
        self.inner = None;
        self.decoder = None;
        self.pending = Bytes::new();
        self.stream = StreamScrub::default();
        self.trailers = None;
        self.finished = true;
        let reason = format!("{error}; the response was cut off before the agent got all of it");
        if let Some(audit) = &self.audit {
            audit.write("deny", UNSCANNABLE_RULE.to_owned(), reason.clone());
        }
        format!("response from a credential route's host not scannable: {reason}").into()
    }
}

impl<B> std::fmt::Debug for ScrubBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubBody")
            .field("decoder", &self.decoder)
            .field("held", &self.stream.held.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<B> Drop for ScrubBody<B> {
    fn drop(&mut self) {
        if let Some(audit) = &self.audit
            && !self.report.is_empty()
        {
            audit.write("allow", self.report.rule(), self.report.reason());
        }
    }
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            // Compressed input waiting: decode one step of it.
            if !this.pending.is_empty()
                && let Some(decoder) = this.decoder.as_mut()
            {
                match decoder.step(&this.pending) {
                    Ok((consumed, output)) => {
                        this.pending.advance(consumed);
                        let released =
                            this.stream
                                .push(&this.scrubber, Bytes::from(output), &mut this.report);
                        if !released.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(released))));
                        }
                        continue;
                    }
                    Err(e) => return Poll::Ready(Some(Err(this.cut_off(&e)))),
                }
            }
            let Some(inner) = this.inner.as_mut() else {
                if !this.finished {
                    this.finished = true;
                    let mut rest = Vec::new();
                    if let Some(decoder) = this.decoder.as_mut() {
                        match decoder.finish() {
                            Ok(output) => {
                                let released = this.stream.push(
                                    &this.scrubber,
                                    Bytes::from(output),
                                    &mut this.report,
                                );
                                rest.extend_from_slice(&released);
                            }
                            Err(e) => return Poll::Ready(Some(Err(this.cut_off(&e)))),
                        }
                    }
                    rest.extend_from_slice(&this.stream.finish());
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                    }
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.inner = None,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if this.decoder.is_some() {
                            this.pending = data;
                            continue;
                        }
                        let released = this.stream.push(&this.scrubber, data, &mut this.report);
                        if !released.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(released))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            this.scrubber
                                .scrub_headers(&mut trailers, true, &mut this.report);
                            this.trailers = Some(trailers);
                            this.inner = None;
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty()
            && self.stream.is_empty()
            && self.trailers.is_none()
            && (self.decoder.is_none() || self.finished)
            && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.decoder) {
            // Replacements keep lengths: an identity body's size is unchanged.
            (Some(inner), None) if self.stream.is_empty() => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

/// Scrubs a response from a route host: its head now, its body as it streams.
/// `bodiless` (HEAD, 1xx, 204, 304) leaves the coding alone: there is no body
/// to decode. `Err` when the response cannot be scanned: refuse it.
pub fn scrub_response<B>(
    scrubber: &Arc<ResponseScrubber>,
    response: Response<B>,
    bodiless: bool,
    audit: Option<ScrubAudit>,
) -> Result<Response<ScrubBody<B>>, Unscannable> {
    let (mut parts, body) = response.into_parts();
    let mut report = ScrubReport::new(scrubber);
    scrubber.scrub_headers(&mut parts.headers, false, &mut report);
    if let Some(reason) = parts.extensions.get::<hyper::ext::ReasonPhrase>()
        && let Some(ac) = &scrubber.automaton
        && let Some(hit) = ac.find(reason.as_bytes())
    {
        report.record(
            scrubber.secret_of[hit.pattern().as_usize()],
            Place::ReasonPhrase,
        );
        parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    }
    let coding = if bodiless {
        Coding::Identity
    } else {
        Coding::of(&parts.headers)
    };
    let decoder = match coding {
        Coding::Identity => None,
        Coding::Unsupported(coding) => return Err(Unscannable::Coding(coding)),
        coding => {
            let name = if coding == Coding::Gzip {
                "gzip"
            } else {
                "deflate"
            };
            if parts.status == StatusCode::PARTIAL_CONTENT {
                return Err(Unscannable::CompressedRange(name.to_owned()));
            }
            parts.headers.remove(header::CONTENT_ENCODING);
            parts.headers.remove(header::CONTENT_LENGTH);
            // The decoded body is another representation: a strong validator
            // of the compressed one would be a lie.
            if let Some(etag) = parts.headers.get(header::ETAG)
                && !etag.as_bytes().starts_with(b"W/")
            {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(etag.as_bytes());
                if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                    parts.headers.insert(header::ETAG, weak);
                }
            }
            StreamDecoder::new(&coding, DecodeBound::RESPONSE)
        }
    };
    Ok(Response::from_parts(
        parts,
        ScrubBody::new(body, scrubber.clone(), decoder, report, audit),
    ))
}

/// Readies a request to a route host for a scannable answer: narrows
/// `Accept-Encoding` ([`restrict_accept_encoding`]) and removes `Range` and
/// `If-Range`, so the answer comes whole (a reflected secret fetched a few bytes
/// per range would be in pieces too short to recognise).
pub fn prepare_route_request(headers: &mut HeaderMap) {
    restrict_accept_encoding(headers);
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
}

/// Narrows a request's `Accept-Encoding` to what the scrubber can decode:
/// the client's gzip and deflate (not refused with `q=0`), else `identity`.
pub fn restrict_accept_encoding(headers: &mut HeaderMap) {
    let mut kept: Vec<String> = Vec::new();
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for item in text.split(',') {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = params.any(|p| {
                let p = p.trim();
                p.get(..2).is_some_and(|k| k.eq_ignore_ascii_case("q="))
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            if !refused
                && matches!(coding.as_str(), "gzip" | "x-gzip" | "deflate")
                && !kept.contains(&coding)
            {
                kept.push(coding);
            }
        }
    }
    let value = if kept.is_empty() {
        "identity".to_owned()
    } else {
        kept.join(", ")
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::ACCEPT_ENCODING, value);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::io::Write as _;

    use base64::Engine as _;
    use http_body_util::BodyExt;

    use super::*;
    use crate::dlp::base32_no_pad;

    const SECRET: &str = "real-Token_value-0123456789abcdefXYZ";
    const PLACEHOLDER: &str = "bottle-placeholderxxxxxxxxxxxxxxxxxx";
    const OTHER_SECRET: &str = "second-route-secret-0987654321";

    fn scrubber() -> Arc<ResponseScrubber> {
        Arc::new(
            ResponseScrubber::new(&[
                ScrubSecret {
                    name: "API_TOKEN".to_owned(),
                    value: SecretValue::new(SECRET),
                    placeholder: Some(PLACEHOLDER.to_owned()),
                    host: "api.test".to_owned(),
                },
                ScrubSecret {
                    name: "OTHER_TOKEN".to_owned(),
                    value: SecretValue::new(OTHER_SECRET),
                    placeholder: None,
                    host: "other-api.test".to_owned(),
                },
            ])
            .unwrap(),
        )
    }

    /// Every spelling of the secret the scrubber must catch.
    fn spellings(secret: &str) -> Vec<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        vec![
            secret.to_owned(),
            secret.to_ascii_uppercase(),
            hex::encode(secret),
            hex::encode_upper(secret),
            b64.encode(secret),
            b64.encode(format!("x{secret}")),
            b64url.encode(format!("xy{secret}tail")),
            base32_no_pad(secret.as_bytes()),
            base32_no_pad(format!("abc{secret}").as_bytes()).to_ascii_lowercase(),
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
            secret.chars().rev().collect(),
            secret
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' => char::from((b - b'a' + 13) % 26 + b'a'),
                    b'A'..=b'Z' => char::from((b - b'A' + 13) % 26 + b'A'),
                    _ => char::from(b),
                })
                .collect(),
        ]
    }

    fn scrub_all(s: &ResponseScrubber, data: &[u8]) -> (Vec<u8>, ScrubReport) {
        let mut report = ScrubReport::new(s);
        let out = s
            .scrub_bytes(data, Place::Body, &mut report)
            .unwrap_or_else(|| data.to_vec());
        (out, report)
    }

    #[test]
    fn every_spelling_is_replaced_in_place_by_the_placeholder() {
        let s = scrubber();
        for spelling in spellings(SECRET) {
            let body = format!("{{\"echo\": \"{spelling}\", \"n\": 1}}");
            let (out, report) = scrub_all(&s, body.as_bytes());
            assert_eq!(out.len(), body.len(), "{spelling}");
            assert!(!s.finds(&out), "{spelling} left a spelling behind");
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains(SECRET), "{spelling}");
            assert!(text.starts_with("{\"echo\": \"") && text.ends_with("\", \"n\": 1}"));
            assert_eq!(report.body_hits(), 1, "{spelling}");
        }
        let (out, _) = scrub_all(&s, format!("Bearer {SECRET}").as_bytes());
        assert_eq!(out, format!("Bearer {PLACEHOLDER}").as_bytes());
        let (out, _) = scrub_all(&s, hex::encode(SECRET).as_bytes());
        assert_eq!(out, hex::encode(PLACEHOLDER).as_bytes());
    }

    #[test]
    fn a_route_without_placeholder_gets_the_marker() {
        let s = scrubber();
        let (out, report) = scrub_all(&s, format!("k={OTHER_SECRET};").as_bytes());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("k={SCRUBBED_MARKER}")), "{text}");
        assert_eq!(text.len(), OTHER_SECRET.len() + 3);
        assert_eq!(report.rule(), "credential-scrubbed:OTHER_TOKEN");
    }

    #[test]
    fn clean_data_is_untouched_and_only_route_hosts_are_covered() {
        let s = scrubber();
        let body = b"{\"model\":\"claude\",\"content\":\"a real answer about tokens\"}";
        let mut report = ScrubReport::new(&s);
        assert!(s.scrub_bytes(body, Place::Body, &mut report).is_none());
        assert!(report.is_empty());
        assert!(s.covers("api.test"));
        assert!(s.covers("other-api.test"));
        assert!(!s.covers("elsewhere.test"));
        assert!(!ResponseScrubber::new(&[]).unwrap().covers("api.test"));
    }

    #[test]
    fn a_secret_split_across_chunks_is_still_replaced() {
        let s = scrubber();
        let body = format!(
            "{}{SECRET} middle {} end",
            "a".repeat(100),
            hex::encode(SECRET)
        );
        let expected = format!(
            "{}{PLACEHOLDER} middle {} end",
            "a".repeat(100),
            hex::encode(PLACEHOLDER)
        );
        for size in 1..=body.len() {
            let mut stream = StreamScrub::default();
            let mut report = ScrubReport::new(&s);
            let mut out = Vec::new();
            for chunk in body.as_bytes().chunks(size) {
                let released = stream.push(&s, Bytes::copy_from_slice(chunk), &mut report);
                assert!(!s.finds(&released));
                out.extend_from_slice(&released);
            }
            out.extend_from_slice(&stream.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "chunks of {size}"
            );
            assert_eq!(report.body_hits(), 2, "chunks of {size}");
        }
    }

    #[test]
    fn only_a_possible_start_of_a_secret_is_held_back() {
        let s = scrubber();
        let mut report = ScrubReport::new(&s);
        let mut stream = StreamScrub::default();
        // An SSE event: released at once.
        let event = Bytes::from_static(b"event: delta\ndata: {\"text\":\"hi\"}\n\n");
        assert_eq!(stream.push(&s, event.clone(), &mut report), event);
        assert!(stream.is_empty());
        // The first characters of the secret at the end: those wait.
        let chunk = Bytes::from(format!("data: {}", &SECRET[..5]));
        assert_eq!(&stream.push(&s, chunk, &mut report)[..], b"data: ");
        // The rest turns out not to be the secret: released with the next chunk.
        let released = stream.push(&s, Bytes::from_static(b" no\n"), &mut report);
        assert_eq!(released, format!("{} no\n", &SECRET[..5]).as_bytes());
        assert!(report.is_empty());
    }

    #[test]
    fn headers_are_scrubbed_and_a_header_named_after_the_secret_is_dropped() {
        let s = scrubber();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-reflected-authorization",
            HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap(),
        );
        headers.append("x-multi", HeaderValue::from_static("clean"));
        headers.append(
            "x-multi",
            HeaderValue::from_str(&hex::encode(SECRET)).unwrap(),
        );
        headers.insert(
            hyper::header::HeaderName::from_bytes(
                format!("x-{}", SECRET.to_ascii_lowercase()).as_bytes(),
            )
            .unwrap(),
            HeaderValue::from_static("1"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let mut report = ScrubReport::new(&s);
        s.scrub_headers(&mut headers, false, &mut report);
        assert_eq!(
            headers["x-reflected-authorization"],
            format!("Bearer {PLACEHOLDER}").as_str()
        );
        let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
        assert_eq!(multi.len(), 2);
        assert_eq!(multi[0], "clean");
        assert_eq!(multi[1], hex::encode(PLACEHOLDER).as_str());
        assert_eq!(headers.len(), 4, "{headers:?}");
        assert!(
            !format!("{headers:?}")
                .to_ascii_lowercase()
                .contains(&SECRET.to_ascii_lowercase())
        );
        assert_eq!(report.rule(), "credential-scrubbed:API_TOKEN");
        let reason = report.reason();
        assert!(
            reason.starts_with("credential scrubbed from response: API_TOKEN in "),
            "{reason}"
        );
        assert!(
            reason.contains("header `x-reflected-authorization`"),
            "{reason}"
        );
        assert!(reason.contains("1 header name(s) (dropped)"), "{reason}");
        assert!(
            !reason
                .to_ascii_lowercase()
                .contains(&SECRET.to_ascii_lowercase())
        );
    }

    #[test]
    fn accept_encoding_is_narrowed_to_what_can_be_decoded() {
        let narrowed = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            restrict_accept_encoding(&mut headers);
            let all: Vec<_> = headers.get_all(header::ACCEPT_ENCODING).iter().collect();
            assert_eq!(all.len(), 1);
            all[0].to_str().unwrap().to_owned()
        };
        assert_eq!(narrowed(&[]), "identity");
        assert_eq!(narrowed(&["br"]), "identity");
        assert_eq!(narrowed(&["br, gzip, deflate"]), "gzip, deflate");
        assert_eq!(narrowed(&["gzip;q=0, deflate;q=0.5, zstd"]), "deflate");
        assert_eq!(narrowed(&["GZIP", "br"]), "gzip");
        assert_eq!(narrowed(&["*"]), "identity");
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=10-20"));
        headers.insert(header::IF_RANGE, HeaderValue::from_static("\"etag\""));
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        prepare_route_request(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers[header::ACCEPT_ENCODING], "identity");
    }

    /// A body from a list of frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Frames {
        fn data(chunks: &[&[u8]]) -> Self {
            Self(
                chunks
                    .iter()
                    .map(|c| Frame::data(Bytes::copy_from_slice(c)))
                    .collect(),
            )
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn response(headers: &[(&str, &str)], body: Frames) -> Response<Frames> {
        let mut response = Response::new(body);
        for (name, value) in headers {
            response.headers_mut().append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn audit_log() -> (tempfile::TempDir, ScrubAudit) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(Some(&dir.path().join("audit.jsonl")), false).unwrap());
        let mut record = AuditRecord::now("http", "allow");
        record.host = "api.test".to_owned();
        record.method = "GET".to_owned();
        record.path = "/reflect".to_owned();
        (dir, ScrubAudit { log, record })
    }

    fn audit_lines(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
        assert!(!text.contains(SECRET), "{text}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn an_identity_body_keeps_its_length_and_is_audited_once() {
        let s = scrubber();
        let body = format!("{{\"authorization\": \"Bearer {SECRET}\"}}");
        let (first, second) = body.as_bytes().split_at(body.find(SECRET).unwrap() + 10);
        let (dir, audit) = audit_log();
        let upstream = response(
            &[
                ("content-length", &body.len().to_string()),
                ("x-echo", SECRET),
            ],
            Frames::data(&[first, second]),
        );
        let scrubbed = scrub_response(&s, upstream, false, Some(audit)).unwrap();
        assert_eq!(
            scrubbed.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(scrubbed.headers()["x-echo"], PLACEHOLDER);
        let out = scrubbed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            out,
            format!("{{\"authorization\": \"Bearer {PLACEHOLDER}\"}}").as_bytes()
        );
        let lines = audit_lines(&dir);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["rule"], "credential-scrubbed:API_TOKEN");
        assert_eq!(lines[0]["action"], "allow");
        assert_eq!(lines[0]["host"], "api.test");
        let reason = lines[0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("header `x-echo`") && reason.contains("1 time(s) in the body"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_clean_response_writes_no_scrub_line() {
        let s = scrubber();
        let (dir, audit) = audit_log();
        let upstream = response(&[], Frames::data(&[b"nothing secret here"]));
        let scrubbed = scrub_response(&s, upstream, false, Some(audit)).unwrap();
        let out = scrubbed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(out, &b"nothing secret here"[..]);
        assert!(audit_lines(&dir).is_empty());
    }

    #[tokio::test]
    async fn a_gzip_body_is_decoded_scrubbed_and_passed_uncompressed() {
        let s = scrubber();
        let mut plain = "x".repeat(70_000).into_bytes();
        plain.extend_from_slice(format!("\"authorization\": \"Bearer {SECRET}\"").as_bytes());
        plain.extend_from_slice(&b"y".repeat(70_000));
        let compressed = gzip(&plain);
        let chunks: Vec<&[u8]> = compressed.chunks(997).collect();
        let upstream = response(
            &[
                ("content-encoding", "gzip"),
                ("content-length", &compressed.len().to_string()),
                ("etag", "\"abc\""),
            ],
            Frames::data(&chunks),
        );
        let scrubbed = scrub_response(&s, upstream, false, None).unwrap();
        assert!(scrubbed.headers().get("content-encoding").is_none());
        assert!(scrubbed.headers().get("content-length").is_none());
        assert_eq!(scrubbed.headers()["etag"], "W/\"abc\"");
        assert_eq!(scrubbed.body().size_hint().exact(), None);
        let out = scrubbed.into_body().collect().await.unwrap().to_bytes();
        let expected = String::from_utf8(plain)
            .unwrap()
            .replace(SECRET, PLACEHOLDER);
        assert_eq!(out.len(), expected.len());
        assert!(out == expected.as_bytes());
    }

    #[tokio::test]
    async fn a_gzip_bomb_is_cut_off_and_audited() {
        let s = scrubber();
        let (dir, audit) = audit_log();
        let bomb = gzip(&vec![b'a'; 300 << 20]);
        let upstream = response(&[("content-encoding", "gzip")], Frames::data(&[&bomb]));
        let scrubbed = scrub_response(&s, upstream, false, Some(audit)).unwrap();
        let error = scrubbed
            .into_body()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("exceeds the scan bound"), "{error}");
        let lines = audit_lines(&dir);
        assert_eq!(lines.last().unwrap()["rule"], UNSCANNABLE_RULE);
        assert_eq!(lines.last().unwrap()["action"], "deny");
    }

    #[tokio::test]
    async fn what_cannot_be_scanned_is_refused() {
        let s = scrubber();
        for coding in ["br", "zstd", "gzip, br", "compress"] {
            let upstream = response(&[("content-encoding", coding)], Frames::data(&[b"..."]));
            let refused = scrub_response(&s, upstream, false, None).unwrap_err();
            assert_eq!(refused, Unscannable::Coding(coding.to_owned()));
            let text = refused.response_body("GET https://api.test/x");
            assert!(
                text.contains("refused the response to GET https://api.test/x"),
                "{text}"
            );
            assert!(text.contains(&format!("encoded with `{coding}`")), "{text}");
            assert!(text.contains("rule: response-unscannable"), "{text}");
        }
        let mut partial = response(&[("content-encoding", "gzip")], Frames::data(&[b"..."]));
        *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
        assert_eq!(
            scrub_response(&s, partial, false, None).unwrap_err(),
            Unscannable::CompressedRange("gzip".to_owned())
        );
        // No body, nothing to decode: a HEAD answer passes with its headers scrubbed.
        let head = response(
            &[("content-encoding", "br"), ("x-echo", SECRET)],
            Frames::data(&[]),
        );
        let passed = scrub_response(&s, head, true, None).unwrap();
        assert_eq!(passed.headers()["content-encoding"], "br");
        assert_eq!(passed.headers()["x-echo"], PLACEHOLDER);
    }

    #[tokio::test]
    async fn trailers_and_the_reason_phrase_are_scrubbed() {
        let s = scrubber();
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_str(SECRET).unwrap());
        let body = Frames(VecDeque::from([
            Frame::data(Bytes::from(format!("tail {}", &SECRET[..4]))),
            Frame::trailers(trailers),
        ]));
        let mut upstream = response(&[], body);
        upstream.extensions_mut().insert(
            hyper::ext::ReasonPhrase::try_from(format!("OK {SECRET}").into_bytes()).unwrap(),
        );
        let scrubbed = scrub_response(&s, upstream, false, None).unwrap();
        assert!(
            scrubbed
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );
        let collected = scrubbed.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers["x-checksum"], PLACEHOLDER);
        assert_eq!(
            collected.to_bytes(),
            format!("tail {}", &SECRET[..4]).as_bytes()
        );
    }
}
