//! Admitting a published event: offering it to every subscription in scope at once (local
//! queues, and peers by the room they granted), and what is left to wait for.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::options::RequestOptions;
use super::{groups, Bus};
use crate::error::{Error, ErrorKind};
use crate::handler::BoxFuture;
use crate::message::Event;
use crate::node::credit::Room;
use crate::node::{EventRoute, GroupRoute};
use crate::proto::routing::{Here, Picker};
use crate::scope::Scope;
use crate::stats::Counters;
use crate::subscription::{Delivery, EventMeta, FullPolicy, NotQueued, SubSender};
use crate::wire::{FrameCodec, FrameKind, PREFIX_LEN};

/// The event being published: moved into an `Arc` only when local subscribers share it.
enum Published<E> {
    Owned(E),
    Shared(Arc<E>),
}

/// What a publish still has to do after offering the event to every subscription once.
pub(super) enum Started {
    Done(Result<(), Error>),
    Waiting(BoxFuture<'static, Result<(), Error>>),
}

/// Offers `event` to every subscription in `scope`, local and remote, without waiting: what
/// has room gets it at once. Returns what is left to wait for (full `Wait` subscriptions, and
/// peers without room), bounded by `timeout`.
pub(super) fn admit<E: Event>(
    bus: &Bus,
    scope: Scope,
    event: E,
    options: &RequestOptions,
    timeout: Option<Duration>,
) -> Started {
    let inner = &bus.inner;
    if bus.refuses_work() {
        return Started::Done(Err(Error::closed().with_message_name(E::NAME)));
    }
    let table = inner.events.load();
    let (subs, local_groups) = match table.get(E::NAME) {
        None => (None, None),
        Some(slot) => match (slot.get::<E>(), slot.groups::<E>()) {
            (Some(subs), Some(groups)) => (Some(subs).filter(|s| !s.is_empty()), Some(groups)),
            _ => {
                return Started::Done(Err(super::name_clash(
                    E::NAME,
                    slot.type_name,
                    std::any::type_name::<E>(),
                )))
            }
        },
    };
    // The routing snapshot stays loaded while the event is queued: the peers in scope are
    // read from it in place, without collecting them.
    let routes = inner
        .node
        .as_ref()
        .filter(|_| scope != Scope::Local)
        .map(|node| node.routes());
    let candidates: &[EventRoute] = routes
        .as_ref()
        .and_then(|r| r.events.get(E::NAME))
        .map_or(&[], Vec::as_slice);
    let here = Here {
        host_id: &inner.identity.host_id,
        cluster: &inner.identity.cluster,
    };
    let mut peers = Picker::all_in_scope(candidates, here, scope).peekable();
    // One member of each group in scope, here or on a peer.
    let remote_groups: &[GroupRoute] = routes
        .as_ref()
        .and_then(|r| r.groups.get(E::NAME))
        .map_or(&[], Vec::as_slice);
    let groups = if local_groups.is_some_and(|g| !g.is_empty()) || !remote_groups.is_empty() {
        let publisher = groups::Publisher {
            here,
            node_id: inner.identity.node_id,
            scope,
        };
        let local = local_groups.map_or(&[][..], Vec::as_slice);
        groups::targets(
            E::NAME,
            publisher,
            local,
            remote_groups,
            &inner.counters.groups,
        )
    } else {
        groups::Picks::new()
    };
    if subs.is_none() && peers.peek().is_none() && groups.is_empty() {
        return Started::Done(Ok(()));
    }
    // Full subscriptions that want the publisher to wait: only their senders are kept.
    let mut full: Vec<(Arc<SubSender<E>>, Delivery<E>)> = Vec::new();
    // Shared with local subscribers only when there are some.
    let event = match subs.is_some() || groups.iter().any(groups::Picked::here) {
        false => Published::Owned(event),
        true => Published::Shared(Arc::new(event)),
    };
    let mut here_copy = None;
    if let Published::Shared(event) = &event {
        let message_id = crate::id::next_message_id();
        let meta = Arc::new(EventMeta {
            correlation_id: options.correlation_id_arc(),
            sender: inner.identity.node_id,
            scope,
            headers: options.headers().clone(),
        });
        for sub in subs.into_iter().flatten() {
            let delivery = Delivery::new(Arc::clone(event), message_id, Arc::clone(&meta));
            match sub.try_send(delivery) {
                Ok(()) => {}
                // The subscription was dropped a moment ago; it no longer wants events.
                Err(NotQueued::Gone) => {}
                Err(NotQueued::Full(delivery)) => match sub.policy() {
                    FullPolicy::DropNewest => {
                        sub.dropped();
                        Counters::bump(&inner.counters.events_dropped);
                    }
                    FullPolicy::Wait => full.push((Arc::clone(sub), delivery)),
                },
            }
        }
        here_copy = Some(groups::Here {
            event: Arc::clone(event),
            message_id,
            meta,
        });
    }
    // Peers that granted no room now, and peers whose link's queue is full, when their
    // subscriptions want the publisher to wait.
    let mut no_room: Vec<(EventRoute, Bytes)> = Vec::new();
    let mut full_peers: Vec<(Taken, Bytes)> = Vec::new();
    if peers.peek().is_some() {
        let event: &E = match &event {
            Published::Owned(event) => event,
            Published::Shared(event) => event,
        };
        // Encoded once, however many peers get it, straight into the frame's buffer.
        let headers = options.event_frame_headers();
        let mut bytes = match FrameCodec::default().encode_message_to_bytes(
            FrameKind::Event,
            0,
            E::NAME,
            &headers,
            event,
        ) {
            Ok(bytes) => bytes,
            Err(e) => return Started::Done(Err(Error::from(e).with_message_name(E::NAME))),
        };
        while let Some(route) = peers.next() {
            let (peer, credit) = (&route.peer, &route.credit);
            if bytes.len().saturating_sub(PREFIX_LEN) > peer.send_codec.max_frame_size {
                // Over this peer's limit: it could not read it.
                dropped_for(&inner.counters, route);
                continue;
            }
            // The last peer takes the frame itself: cloning a `Bytes` made from a vector
            // allocates its shared header, so one peer costs no clone at all.
            let frame = if peers.peek().is_some() {
                bytes.clone()
            } else {
                std::mem::take(&mut bytes)
            };
            // Room at the peer's subscriptions first (dropped here, before it is sent,
            // when they drop), then in the link's queue.
            if !credit.window.try_take() {
                if credit.window.waits() {
                    credit.waited.fetch_add(1, Ordering::Relaxed);
                    no_room.push((route.clone(), frame));
                } else {
                    dropped_for(&inner.counters, route);
                }
                continue;
            }
            // The room taken is given back if the event is not queued after all. (No `Taken`
            // here: its clone of the route costs four reference counts per event and peer.)
            match peer.try_queue_event(frame) {
                Ok(()) => {}
                // The connection is gone, and the peer with it.
                Err(mpsc::error::TrySendError::Closed(_)) => credit.give_back(),
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    Counters::bump(&inner.counters.peer_events_queue_full);
                    Counters::bump(&peer.counters.events_queue_full);
                    if credit.window.waits() {
                        full_peers.push((Taken::new(route.clone()), frame));
                    } else {
                        credit.give_back();
                        dropped_for(&inner.counters, route);
                    }
                }
            }
        }
    }
    // One member of each group: its own event, under the group's channel for a member node.
    let mut group_waits = Vec::new();
    if !groups.is_empty() {
        let event: &E = match &event {
            Published::Owned(event) => event,
            Published::Shared(event) => event,
        };
        let offered = groups::offer(
            groups,
            event,
            here_copy.as_ref(),
            options,
            &inner.counters,
            &mut group_waits,
        );
        if let Err(e) = offered {
            return Started::Done(Err(Error::from(e).with_message_name(E::NAME)));
        }
    }
    if full.is_empty() && no_room.is_empty() && full_peers.is_empty() && group_waits.is_empty() {
        return Started::Done(Ok(()));
    }
    let sealed = inner.sealed_token.clone();
    let counters = Arc::clone(&inner.counters);
    let waiting = async move {
        let closed = || Err(Error::closed().with_message_name(E::NAME));
        for (sub, delivery) in full {
            // An error means the subscription is gone (nobody left to deliver to), or the
            // bus shut down.
            if sub.send(delivery, &sealed).await.is_err() && sealed.is_cancelled() {
                return closed();
            }
        }
        for (route, bytes) in no_room {
            let room = tokio::select! {
                room = route.credit.take(&route.peer.gone) => room,
                () = sealed.cancelled() => return closed(),
            };
            match room {
                Room::Taken => full_peers.push((Taken::new(route), bytes)),
                // The peer's subscriptions turned to dropping while this waited.
                Room::Drop => dropped_for(&counters, &route),
                // The event is not for anyone there now.
                Room::Gone => {}
            }
        }
        for wait in group_waits {
            if wait.run(&sealed).await.is_err() {
                return closed();
            }
        }
        for (taken, bytes) in full_peers {
            let peer = &taken.route.peer;
            tokio::select! {
                // `queue` gives up by itself once the connection is gone, and the peer
                // with it: the event is not for anyone then.
                queued = peer.queue_event(bytes) => {
                    if queued.is_ok() {
                        taken.sent();
                    }
                }
                () = sealed.cancelled() => return closed(),
            }
        }
        Ok(())
    };
    Started::Waiting(match timeout {
        None => Box::pin(waiting),
        Some(limit) => Box::pin(async move {
            tokio::time::timeout(limit, waiting)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(ErrorKind::Timeout)
                        .with_message_name(E::NAME)
                        .with_detail(format!(
                            "a subscriber had no room for the event within {limit:?}"
                        )))
                })
        }),
    })
}

/// Room taken for one event at a peer and not yet used: given back if the event is not sent
/// after all (its link's queue stayed full until the connection went, or the publish was given
/// up while it waited), so the peer's window is never spent on an event it never got.
pub(super) struct Taken {
    route: EventRoute,
    sent: bool,
}

impl Taken {
    pub(super) fn new(route: EventRoute) -> Self {
        Taken { route, sent: false }
    }

    /// The event was queued for the peer: the room is spent.
    pub(super) fn sent(mut self) {
        self.sent = true;
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.sent {
            self.route.credit.give_back();
        }
    }
}

/// Counts an event dropped for `route`'s peer, before it was sent.
pub(super) fn dropped_for(counters: &Counters, route: &EventRoute) {
    route.credit.dropped.fetch_add(1, Ordering::Relaxed);
    Counters::bump(&counters.peer_events_dropped);
    Counters::bump(&route.peer.counters.events_dropped);
}
