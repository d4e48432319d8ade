//! Thread-per-core serving. The sidecar runs one single-threaded tokio
//! runtime per CPU it may use (a "shard"). The accept loop, on the caller's
//! runtime, hands each new client connection to the shard with the fewest
//! live connections, which serves it to the end: the connection, the tunnel
//! it opens, and the pooled upstream connections its requests use (each
//! shard has its own upstream client, [`crate::live::LivePolicy::client`])
//! all stay on one thread. A request then crosses no thread: no futex or
//! eventfd wake-up of another worker, no work stealing, no task migrating
//! with its buffers. Only the hand-over of a new connection crosses threads.
//!
//! Everything else is shared as before: the live policy (one atomic swap
//! serves every shard), the audit log, the leaf-certificate cache and the
//! connection limit. Signals, the policy-file watch and the DNS sink run on
//! the caller's runtime.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::proxy::{ConnectionGuard, ProxyState, serve_client};

/// At most this many shards, whatever the CPU count (each keeps its own pool).
pub const MAX_SHARDS: usize = 16;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The shard the calling thread serves: 0 outside shard threads (a proxy
/// started with [`crate::Proxy::start`] serves on the caller's runtime, as
/// one shard).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// How many shards the sidecar runs: one per CPU the process may use (a
/// cgroup CPU quota counts), between 1 and [`MAX_SHARDS`].
pub fn count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_SHARDS)
}

/// A connection handed to a shard, with what it holds while it lives.
struct HandedOver {
    stream: std::net::TcpStream,
    guard: ConnectionGuard,
}

/// Where the accept loop hands a shard its connections.
pub struct Inbox {
    tx: mpsc::UnboundedSender<HandedOver>,
    live: Arc<AtomicUsize>,
}

/// One live connection on a shard: counted until dropped.
pub struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Inbox {
    /// Gives `stream` to the shard; `guard` builds what the connection holds
    /// from its place in the shard's live count. A shard that has stopped
    /// drops it (the proxy is shutting down).
    pub(crate) fn hand_over(
        &self,
        stream: std::net::TcpStream,
        guard: impl FnOnce(Live) -> ConnectionGuard,
    ) {
        self.live.fetch_add(1, Ordering::Relaxed);
        let guard = guard(Live(self.live.clone()));
        let _ = self.tx.send(HandedOver { stream, guard });
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// The shard with the fewest live connections; ties go round the shards
/// from `turn`, which moves on each call.
pub(crate) fn least_loaded<'a>(inboxes: &'a [Inbox], turn: &mut usize) -> &'a Inbox {
    let n = inboxes.len();
    let start = *turn % n;
    *turn = turn.wrapping_add(1);
    let mut best = &inboxes[start];
    for offset in 1..n {
        let candidate = &inboxes[(start + offset) % n];
        if candidate.live() < best.live() {
            best = candidate;
        }
    }
    best
}

/// Starts shard `index`: a thread with its own current-thread runtime that
/// serves the connections handed to its [`Inbox`] until the inbox is dropped;
/// its tasks (connections, tunnels, pooled upstream connections) end with
/// the thread's runtime.
pub(crate) fn spawn(
    index: usize,
    state: Arc<ProxyState>,
) -> Result<(Inbox, JoinHandle<()>), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;
    let (tx, mut rx) = mpsc::unbounded_channel::<HandedOver>();
    let thread = std::thread::Builder::new()
        .name(format!("egress-shard-{index}"))
        .spawn(move || {
            CURRENT.with(|current| current.set(index));
            runtime.block_on(async move {
                while let Some(HandedOver { stream, guard }) = rx.recv().await {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            tokio::spawn(serve_client(state.clone(), stream, Arc::new(guard)));
                        }
                        Err(e) => eprintln!("egress: shard {index} cannot serve a connection: {e}"),
                    }
                }
            });
        })
        .map_err(|source| Error::Runtime { source })?;
    let inbox = Inbox {
        tx,
        live: Arc::new(AtomicUsize::new(0)),
    };
    Ok((inbox, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inboxes(live: &[usize]) -> Vec<Inbox> {
        live.iter()
            .map(|&n| Inbox {
                tx: mpsc::unbounded_channel().0,
                live: Arc::new(AtomicUsize::new(n)),
            })
            .collect()
    }

    fn picks(inboxes: &[Inbox], turn: &mut usize) -> usize {
        let chosen = least_loaded(inboxes, turn);
        inboxes
            .iter()
            .position(|i| std::ptr::eq(i, chosen))
            .unwrap()
    }

    #[test]
    fn connections_go_to_the_least_loaded_shard_and_ties_take_turns() {
        let mut turn = 0;
        assert_eq!(picks(&inboxes(&[3, 1, 2]), &mut turn), 1);
        assert_eq!(picks(&inboxes(&[0, 5]), &mut turn), 0);
        let even = inboxes(&[2, 2]);
        let first = picks(&even, &mut turn);
        assert_ne!(picks(&even, &mut turn), first, "ties alternate");
        // A connection that ends leaves the count.
        let shard = &even[0];
        let live = Live(shard.live.clone());
        shard.live.fetch_add(1, Ordering::Relaxed);
        assert_eq!(shard.live(), 3);
        drop(live);
        assert_eq!(shard.live(), 2);
    }

    #[test]
    fn threads_outside_shards_are_shard_zero_and_shards_are_bounded() {
        assert_eq!(current(), 0);
        let n = count();
        assert!((1..=MAX_SHARDS).contains(&n), "{n}");
        let seen = std::thread::spawn(|| {
            CURRENT.with(|c| c.set(3));
            current()
        })
        .join()
        .unwrap();
        assert_eq!(seen, 3);
        assert_eq!(current(), 0, "a shard index is the thread's own");
    }
}
