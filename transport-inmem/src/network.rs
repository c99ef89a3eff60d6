//! The network: listeners by name, live connections, faults and counters.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::transport::InMemTransport;
use meshbus_core::Connection;

/// Frames a link holds in flight per direction, unless [`InMemNetwork::set_link_capacity`]
/// says otherwise.
pub const DEFAULT_LINK_CAPACITY: usize = 64;

/// Connections a listener holds before it accepts them; a dial beyond that is refused.
pub(crate) const LISTEN_BACKLOG: usize = 128;

/// An in-process network of nodes, with fault injection.
///
/// A cheap handle (clone it freely): it holds the listeners by name, the live connections and
/// the faults. [`transport`](Self::transport) gives each node its [`InMemTransport`], bound to
/// the node's name; faults are set between **node names** (the dialling node and the node that
/// owns the listener), so `cut("a", "b")` affects every connection between the two whichever
/// side dialled.
///
/// Faults are symmetric (they apply in both directions) and deterministic: the drops of
/// [`set_drop_rate`](Self::set_drop_rate) come from a generator per direction of a link,
/// seeded from the network's seed and the two names, so the same seed and the same traffic on
/// a link give the same drops whatever happens on other links. Delays use tokio's clock, so a
/// test with a paused clock (`#[tokio::test(start_paused = true)]`) is exact.
#[derive(Clone)]
pub struct InMemNetwork {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
}

/// The counters of one direction of a link, from [`InMemNetwork::link_stats`].
///
/// `sent` = `delivered` + `dropped` + frames still in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Frames handed to the link (by `write_batch` or [`InMemNetwork::inject`]).
    pub sent: u64,
    /// Frames that reached the reading end.
    pub delivered: u64,
    /// Frames lost to a cut or to the drop rate.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    cut: bool,
    delay: Duration,
    drop_rate: f64,
}

impl Faults {
    fn is_clear(&self) -> bool {
        !self.cut && self.delay.is_zero() && self.drop_rate <= 0.0
    }
}

struct ListenerEntry {
    id: u64,
    owner: Arc<str>,
    backlog: mpsc::Sender<Connection>,
}

/// One live connection, for `kill` and `inject`.
struct ConnEntry {
    shared: Weak<ConnShared>,
    /// The dialling node and the listening node.
    ends: [Arc<str>; 2],
    /// `links[0]` carries frames from `ends[0]` to `ends[1]`, `links[1]` the other way.
    links: [mpsc::WeakSender<Packet>; 2],
}

/// What both ends of one connection share.
pub(crate) struct ConnShared {
    /// Set once when a node of the connection is killed.
    killed: watch::Sender<bool>,
}

impl ConnShared {
    pub(crate) fn killed(&self) -> watch::Receiver<bool> {
        self.killed.subscribe()
    }
}

/// A frame on its way, and when it may arrive (with a delay fault).
pub(crate) struct Packet {
    pub(crate) bytes: Bytes,
    pub(crate) deliver_at: Option<Instant>,
}

/// What happens to a frame handed to a link.
pub(crate) enum Verdict {
    Deliver(Option<Instant>),
    Drop,
}

struct State {
    seed: u64,
    link_capacity: usize,
    next_id: u64,
    listeners: HashMap<Arc<str>, ListenerEntry>,
    /// Per unordered pair of node names.
    faults: HashMap<(Arc<str>, Arc<str>), Faults>,
    /// Per direction.
    rngs: HashMap<(Arc<str>, Arc<str>), fastrand::Rng>,
    stats: HashMap<(Arc<str>, Arc<str>), LinkStats>,
    conns: Vec<ConnEntry>,
    /// Bumped by `kill`, so transports of the killed incarnation stop working.
    generations: HashMap<Arc<str>, u64>,
}

fn pair(a: &str, b: &str) -> (Arc<str>, Arc<str>) {
    if a <= b {
        (a.into(), b.into())
    } else {
        (b.into(), a.into())
    }
}

/// FNV-1a, so link seeds are stable across Rust releases (std's hasher promises nothing).
fn link_seed(seed: u64, from: &str, to: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in from.bytes().chain([0xff]).chain(to.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl State {
    fn faults(&self, a: &str, b: &str) -> Faults {
        self.faults.get(&pair(a, b)).copied().unwrap_or_default()
    }

    fn update_faults(&mut self, a: &str, b: &str, f: impl FnOnce(&mut Faults)) {
        let key = pair(a, b);
        let faults = self.faults.entry(key.clone()).or_default();
        f(faults);
        if faults.is_clear() {
            self.faults.remove(&key);
        }
    }

    fn stats(&mut self, from: &str, to: &str) -> &mut LinkStats {
        self.stats.entry((from.into(), to.into())).or_default()
    }

    fn generation(&self, node: &str) -> u64 {
        self.generations.get(node).copied().unwrap_or(0)
    }
}

impl InMemNetwork {
    /// An empty network whose random faults are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        InMemNetwork {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    seed,
                    link_capacity: DEFAULT_LINK_CAPACITY,
                    next_id: 0,
                    listeners: HashMap::new(),
                    faults: HashMap::new(),
                    rngs: HashMap::new(),
                    stats: HashMap::new(),
                    conns: Vec::new(),
                    generations: HashMap::new(),
                }),
            }),
        }
    }

    /// The transport of the node called `node`: its dials come from that name, its listeners
    /// belong to it.
    ///
    /// After [`kill(node)`](Self::kill) the transports made before fail every call; a
    /// restarted node asks for a new one.
    pub fn transport(&self, node: &str) -> InMemTransport {
        let generation = self.lock().generation(node);
        InMemTransport::new(self.clone(), node.into(), generation)
    }

    /// How many frames each direction of a connection made from now on holds in flight
    /// (frames sent and not yet read, including delayed ones) before `write_batch` waits.
    /// At least 1.
    pub fn set_link_capacity(&self, frames: usize) {
        self.lock().link_capacity = frames.max(1);
    }

    /// Cuts the link between nodes `a` and `b`: frames between them are silently dropped in
    /// both directions, including those already in flight, and new dials between them fail.
    /// Open connections stay open, as with a pulled cable: only the protocol's liveness check
    /// notices. Frames dropped this way take no room on the link, so writers never wait on a
    /// cut link.
    pub fn cut(&self, a: &str, b: &str) {
        tracing::debug!(a, b, "inmem: cut");
        self.lock().update_faults(a, b, |f| f.cut = true);
    }

    /// Undoes [`cut`](Self::cut) between `a` and `b`; frames sent from now on arrive.
    pub fn heal(&self, a: &str, b: &str) {
        tracing::debug!(a, b, "inmem: heal");
        self.lock().update_faults(a, b, |f| f.cut = false);
    }

    /// Cuts every pair of nodes in different groups. Nodes in the same group, and nodes in no
    /// group, keep their links.
    pub fn partition(&self, groups: &[&[&str]]) {
        tracing::debug!(?groups, "inmem: partition");
        let mut state = self.lock();
        for (i, left) in groups.iter().enumerate() {
            for right in groups.iter().skip(i + 1) {
                for a in left.iter() {
                    for b in right.iter() {
                        state.update_faults(a, b, |f| f.cut = true);
                    }
                }
            }
        }
    }

    /// Heals every cut (and so every partition). Delays and drop rates stay; see
    /// [`clear_faults`](Self::clear_faults).
    pub fn heal_all(&self) {
        tracing::debug!("inmem: heal all");
        let mut state = self.lock();
        for faults in state.faults.values_mut() {
            faults.cut = false;
        }
        state.faults.retain(|_, f| !f.is_clear());
    }

    /// Removes every fault: cuts, delays and drop rates.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Delays every frame sent between `a` and `b` from now on by `delay` (tokio time), in
    /// both directions; [`Duration::ZERO`] removes the delay. Each direction stays FIFO: a
    /// frame never overtakes an earlier one, even when the delay shrinks.
    pub fn set_delay(&self, a: &str, b: &str, delay: Duration) {
        self.lock().update_faults(a, b, |f| f.delay = delay);
    }

    /// Drops this fraction (0.0 to 1.0, clamped; NaN counts as 0) of the frames sent between
    /// `a` and `b` from now on, in both directions, drawn from the network's seed.
    pub fn set_drop_rate(&self, a: &str, b: &str, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.lock().update_faults(a, b, |f| f.drop_rate = rate);
    }

    /// Whether the link between `a` and `b` is cut.
    pub fn is_cut(&self, a: &str, b: &str) -> bool {
        self.lock().faults(a, b).cut
    }

    /// Kills node `name`, like a crash: every connection it has closes at once (frames in
    /// flight are lost; the peers' readers see [`ReadEvent::Closed`](meshbus_core::ReadEvent)
    /// and their writers an [`Io`](meshbus_core::ErrorKind::Io) error, as after a TCP reset),
    /// its listeners stop (their names are free again, `accept` returns
    /// [`Closed`](meshbus_core::ErrorKind::Closed)), and the transports made for it before fail
    /// every call. Call [`transport`](Self::transport) again to restart the node.
    pub fn kill(&self, name: &str) {
        tracing::debug!(node = name, "inmem: kill");
        let mut state = self.lock();
        *state.generations.entry(name.into()).or_default() += 1;
        state.listeners.retain(|_, l| &*l.owner != name);
        state.conns.retain(|c| {
            if c.ends.iter().any(|e| &**e == name) {
                if let Some(shared) = c.shared.upgrade() {
                    shared.killed.send_replace(true);
                }
                false
            } else {
                true
            }
        });
    }

    /// Pushes `bytes` into every open connection's link from node `from` to node `to`, as if
    /// `from` had written them: the reader takes them as a byte stream, so they may hold
    /// garbage, part of a frame or several frames. Faults do not apply. A link that is full is
    /// skipped. Returns how many links took the bytes.
    pub fn inject(&self, from: &str, to: &str, bytes: Bytes) -> usize {
        let mut state = self.lock();
        let mut links = Vec::new();
        for c in &state.conns {
            for (dir, (src, dst)) in [(0, (&c.ends[0], &c.ends[1])), (1, (&c.ends[1], &c.ends[0]))]
            {
                if &**src == from && &**dst == to {
                    if let Some(tx) = c.links.get(dir).and_then(mpsc::WeakSender::upgrade) {
                        links.push(tx);
                    }
                }
            }
        }
        let mut taken = 0;
        for tx in links {
            let packet = Packet {
                bytes: bytes.clone(),
                deliver_at: None,
            };
            if tx.try_send(packet).is_ok() {
                taken += 1;
            }
        }
        state.stats(from, to).sent += taken as u64;
        taken
    }

    /// The counters of the direction from node `from` to node `to`, over every connection
    /// between them so far.
    pub fn link_stats(&self, from: &str, to: &str) -> LinkStats {
        self.lock()
            .stats
            .get(&(Arc::from(from), Arc::from(to)))
            .copied()
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: each update is one
        // assignment or one container operation.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // ---- for the transport ----

    pub(crate) fn is_current(&self, node: &str, generation: u64) -> bool {
        self.lock().generation(node) == generation
    }

    pub(crate) fn register_listener(
        &self,
        name: &str,
        owner: &Arc<str>,
    ) -> Option<(u64, mpsc::Receiver<Connection>)> {
        let mut state = self.lock();
        if state.listeners.contains_key(name) {
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        let (tx, rx) = mpsc::channel(LISTEN_BACKLOG);
        state.listeners.insert(
            name.into(),
            ListenerEntry {
                id,
                owner: owner.clone(),
                backlog: tx,
            },
        );
        Some((id, rx))
    }

    pub(crate) fn unregister_listener(&self, name: &str, id: u64) {
        let mut state = self.lock();
        if state.listeners.get(name).is_some_and(|l| l.id == id) {
            state.listeners.remove(name);
        }
    }

    /// Connects a dial from `from` to the listener called `name`: the listener's owner and
    /// backlog, and the channels of the new connection, recorded under the same lock so a
    /// concurrent `kill` or `cut` sees either all of it or none.
    pub(crate) fn connect(
        &self,
        from: &Arc<str>,
        name: &str,
    ) -> Result<(Arc<str>, mpsc::Sender<Connection>, NewConn), &'static str> {
        let mut state = self.lock();
        let Some(listener) = state.listeners.get(name) else {
            return Err("connection refused: nobody listens there");
        };
        if state.faults(from, &listener.owner).cut {
            return Err("network unreachable: the link is cut");
        }
        let owner = listener.owner.clone();
        let backlog = listener.backlog.clone();
        let capacity = state.link_capacity;
        let (up_tx, up_rx) = mpsc::channel(capacity);
        let (down_tx, down_rx) = mpsc::channel(capacity);
        let shared = Arc::new(ConnShared {
            killed: watch::Sender::new(false),
        });
        state.conns.retain(|c| c.shared.strong_count() > 0);
        state.conns.push(ConnEntry {
            shared: Arc::downgrade(&shared),
            ends: [from.clone(), owner.clone()],
            links: [up_tx.downgrade(), down_tx.downgrade()],
        });
        let conn = NewConn {
            shared,
            up: (up_tx, up_rx),
            down: (down_tx, down_rx),
        };
        Ok((owner, backlog, conn))
    }

    /// Decides the fate of a frame handed to the link `from` → `to`, and counts it.
    pub(crate) fn on_send(&self, from: &str, to: &str) -> Verdict {
        let mut state = self.lock();
        let faults = state.faults(from, to);
        state.stats(from, to).sent += 1;
        let drop = faults.cut
            || (faults.drop_rate > 0.0 && {
                let seed = link_seed(state.seed, from, to);
                let rng = state
                    .rngs
                    .entry((from.into(), to.into()))
                    .or_insert_with(|| fastrand::Rng::with_seed(seed));
                rng.f64() < faults.drop_rate
            });
        if drop {
            state.stats(from, to).dropped += 1;
            tracing::trace!(from, to, "inmem: frame dropped");
            return Verdict::Drop;
        }
        let deliver_at = (!faults.delay.is_zero()).then(|| Instant::now() + faults.delay);
        Verdict::Deliver(deliver_at)
    }

    /// A frame reached the reading end of `from` → `to`: whether it is delivered (the link may
    /// have been cut while it was in flight), counted either way.
    pub(crate) fn on_arrival(&self, from: &str, to: &str) -> bool {
        let mut state = self.lock();
        let cut = state.faults(from, to).cut;
        let stats = state.stats(from, to);
        if cut {
            stats.dropped += 1;
            tracing::trace!(from, to, "inmem: frame dropped in flight");
        } else {
            stats.delivered += 1;
        }
        !cut
    }
}

/// The parts of a new connection: `up` carries dialler → listener, `down` the other way.
pub(crate) struct NewConn {
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) up: (mpsc::Sender<Packet>, mpsc::Receiver<Packet>),
    pub(crate) down: (mpsc::Sender<Packet>, mpsc::Receiver<Packet>),
}

impl fmt::Debug for InMemNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("InMemNetwork")
            .field("seed", &state.seed)
            .field("listeners", &state.listeners.len())
            .field("connections", &state.conns.len())
            .field("faulty_links", &state.faults.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_seeds_differ_by_direction_and_seed() {
        assert_ne!(link_seed(1, "a", "b"), link_seed(1, "b", "a"));
        assert_ne!(link_seed(1, "a", "b"), link_seed(2, "a", "b"));
        assert_ne!(link_seed(1, "ab", "c"), link_seed(1, "a", "bc"));
        assert_eq!(link_seed(1, "a", "b"), link_seed(1, "a", "b"));
    }
}
