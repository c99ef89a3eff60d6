//! A publisher offering an event to the member each group's pick chose: queued here, or sent
//! under the group's channel, or (every member in scope full) waited for or dropped as the
//! group's policy says.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::pick::{Picked, Picks, Target};
use super::wait::GroupWait;
use crate::bus::admit::dropped_for;
use crate::bus::options::RequestOptions;
use crate::message::Event;
use crate::node::EventRoute;
use crate::stats::{Counters, GroupCounters};
use crate::subscription::{Delivery, EventMeta, FullPolicy, GroupKind, NotQueued, SubSender};
use crate::wire::{FrameCodec, FrameError, FrameKind, PREFIX_LEN};

/// The event as this node's own members get it.
pub(crate) struct Here<E> {
    pub(crate) event: Arc<E>,
    pub(crate) message_id: u64,
    pub(crate) meta: Arc<EventMeta>,
}

impl<E> Here<E> {
    fn delivery(&self) -> Delivery<E> {
        Delivery::new(
            Arc::clone(&self.event),
            self.message_id,
            Arc::clone(&self.meta),
        )
    }
}

impl<E> Picked<'_, E> {
    /// Whether a member here may get the event.
    pub(crate) fn here(&self) -> bool {
        std::iter::once(&self.target)
            .chain(&self.others)
            .any(|t| matches!(t, Target::Here(..)))
    }
}

/// Gives each group's event to the member picked for it, without waiting; what must wait (every
/// member in scope full, and the group waits when full) goes to `waits`. `here` is the event
/// for this node's members (there is one whenever a pick names one). `Err` if the event does
/// not encode.
pub(crate) fn offer<E: Event>(
    picked: Picks<'_, E>,
    event: &E,
    here: Option<&Here<E>>,
    options: &RequestOptions,
    counters: &Counters,
    waits: &mut Vec<GroupWait<E>>,
) -> Result<(), FrameError> {
    for group in picked {
        let c = &group.counters;
        // The event under the group's channel, if a member elsewhere may get it.
        let channel = std::iter::once(&group.target)
            .chain(&group.others)
            .find_map(|t| match t {
                Target::Peer(_, channel) => Some(channel),
                Target::Here(..) => None,
            });
        let mut frame = match channel {
            Some(channel) => Some(FrameCodec::default().encode_message_to_bytes(
                FrameKind::Event,
                0,
                channel,
                &options.event_frame_headers(),
                event,
            )?),
            None => None,
        };
        let first = match (&group.target, here, frame.take()) {
            (Target::Here(sub, _), Some(here), bytes) => {
                frame = bytes;
                offer_here(sub, here.delivery(), c)
            }
            (Target::Peer(member, _), _, Some(bytes)) => {
                match offer_peer(&member.route, bytes, counters, c) {
                    Ok(()) => None,
                    Err((waiter, bytes)) => {
                        frame = Some(bytes);
                        Some(waiter)
                    }
                }
            }
            // Cannot be: a pick that names a member here comes with the event for it, one
            // elsewhere with its frame.
            _ => None,
        };
        let Some(first) = first else {
            continue;
        };
        // Every member in scope was full, and the group waits: the first with room takes it.
        // (A member node whose frame limit the event is over could not read it.)
        let size = frame
            .as_ref()
            .map_or(0, |f| f.len().saturating_sub(PREFIX_LEN));
        let fits = |route: &EventRoute| size <= route.peer.send_codec.max_frame_size;
        let mut wait = GroupWait {
            frame,
            remote: Vec::new(),
            local: Vec::new(),
            counters: Arc::clone(c),
        };
        let others = group.others.iter().filter_map(|t| match (t, here) {
            (Target::Here(sub, _), Some(here)) => {
                Some(Waiter::Here(Arc::clone(sub), here.delivery()))
            }
            (Target::Peer(member, _), _) if fits(&member.route) => {
                Some(Waiter::Peer(member.route.clone()))
            }
            _ => None,
        });
        // This node's members of a shared group: whichever of them has room first (an
        // exclusive group's active member is the only one that may take it).
        let shared = group.kind == GroupKind::Shared;
        let members_here = std::iter::once(&group.target)
            .chain(&group.others)
            .find_map(|t| match t {
                Target::Here(_, g) if shared => Some(*g),
                _ => None,
            });
        for waiter in std::iter::once(first).chain(others) {
            match waiter {
                Waiter::Here(sub, delivery) => {
                    let more = members_here
                        .into_iter()
                        .flat_map(|g| &g.members)
                        .filter(|m| {
                            !Arc::ptr_eq(m, &sub)
                                && !m.is_closed()
                                && m.policy() == FullPolicy::Wait
                        });
                    let more: Vec<_> = more.map(|m| (Arc::clone(m), delivery.share())).collect();
                    wait.local.push((sub, delivery));
                    wait.local.extend(more);
                }
                Waiter::Peer(route) => wait.remote.push(route),
            }
        }
        waits.push(wait);
    }
    Ok(())
}

/// A member a publish may wait for.
enum Waiter<E> {
    Here(Arc<SubSender<E>>, Delivery<E>),
    Peer(EventRoute),
}

/// Queues `delivery` for this node's member `sub`; the member to wait for if it is full and
/// waits when full.
fn offer_here<E>(
    sub: &Arc<SubSender<E>>,
    delivery: Delivery<E>,
    c: &GroupCounters,
) -> Option<Waiter<E>> {
    match sub.try_send(delivery) {
        Ok(()) => Counters::bump(&c.delivered),
        // It left a moment ago.
        Err(NotQueued::Gone) => Counters::bump(&c.no_member),
        Err(NotQueued::Full(delivery)) => match sub.policy() {
            FullPolicy::DropNewest => {
                sub.dropped();
                Counters::bump(&c.dropped);
            }
            FullPolicy::Wait => return Some(Waiter::Here(Arc::clone(sub), delivery)),
        },
    }
    None
}

/// Sends `frame` to member node `route` if it granted room for it and its link has room; if
/// not, and its node's members wait when full, the member to wait for and the frame back.
fn offer_peer<E>(
    route: &EventRoute,
    frame: Bytes,
    counters: &Counters,
    c: &GroupCounters,
) -> Result<(), (Waiter<E>, Bytes)> {
    let (peer, credit) = (&route.peer, &route.credit);
    let dropped = || {
        dropped_for(counters, route);
        Counters::bump(&c.dropped);
    };
    if frame.len().saturating_sub(PREFIX_LEN) > peer.send_codec.max_frame_size {
        // Over this peer's limit: it could not read it.
        dropped();
        return Ok(());
    }
    let mut frame = frame;
    if credit.window.try_take() {
        match peer.try_queue_event(frame) {
            Ok(()) => {
                Counters::bump(&c.delivered);
                return Ok(());
            }
            // The connection is gone, and the member with it.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                credit.give_back();
                Counters::bump(&c.no_member);
                return Ok(());
            }
            // The link is full: wait for it as for room.
            Err(mpsc::error::TrySendError::Full(back)) => {
                credit.give_back();
                Counters::bump(&counters.peer_events_queue_full);
                Counters::bump(&peer.counters.events_queue_full);
                frame = back;
            }
        }
    }
    if credit.window.waits() {
        credit.waited.fetch_add(1, Ordering::Relaxed);
        return Err((Waiter::Peer(route.clone()), frame));
    }
    dropped();
    Ok(())
}
