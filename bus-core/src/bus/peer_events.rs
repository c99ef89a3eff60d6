//! A peer's events on their way to the subscriptions: decoded as they are read, and handed to
//! each subscription's queue a run at a time.
//!
//! The reader offers a burst of frames one by one. The events of one name that follow each
//! other are decoded at once and held in a [`RemoteBatch`]; when the name (or the grant they came
//! under) changes, the run is long enough, the reader may yield or the burst ends, the run goes
//! to every subscription with one lock of its queue, and its events' share of the grant goes
//! with it as one [`Receipt`], held by the run's last event.

use std::sync::Arc;

use super::groups::LocalGroup;
use super::registry::{EventSlot, SubList};
use super::{BusInner, EventTable};
use crate::context::Headers;
use crate::message::Event;
use crate::node::credit::{Grant, Receipt};
use crate::node::dispatch::EventSink;
use crate::scope::Scope;
use crate::stats::Counters;
use crate::subscription::{Delivery, EventMeta, FullPolicy, Held, SubSender};
use crate::wire::control::split_group_channel;
use crate::wire::{Frame, FrameError, FrameName};

/// The most events held back before they are handed over: enough to make the lock and the
/// wake-up of a queue rare, few enough that a consumer on another thread is not kept waiting.
const MAX_RUN: usize = 64;

/// The subscriptions one peer's events reach during a burst of its frames: the table and the
/// sender's scope are read once per burst, not per event.
pub(super) struct PeerEvents {
    pub(super) bus: Arc<BusInner>,
    pub(super) table: Arc<EventTable>,
    pub(super) sender: crate::id::NodeId,
    pub(super) scope: Scope,
    /// The context of the burst's events without headers, made at the first.
    pub(super) plain: Option<Arc<EventMeta>>,
    /// The run of events held back.
    pub(super) run: Option<Run>,
}

/// Events of one name, under one grant (or none), decoded and not handed over yet.
pub(super) struct Run {
    /// The name as the frames carry it (from the connection's name cache).
    name: Arc<str>,
    events: Box<dyn RemoteBatch>,
    /// The grant they came under.
    credit: Option<Arc<Grant>>,
    /// How many to hold at most.
    limit: usize,
}

impl PeerEvents {
    fn meta(&self, correlation_id: Option<Arc<str>>, headers: Headers) -> Arc<EventMeta> {
        Arc::new(EventMeta {
            correlation_id,
            sender: self.sender,
            scope: self.scope,
            headers,
        })
    }

    /// Whether the run held takes an event of `name` that came under `credit`.
    fn extends_run(&self, name: &Arc<str>, credit: Option<&Arc<Grant>>) -> bool {
        self.run.as_ref().is_some_and(|run| {
            (Arc::ptr_eq(&run.name, name) || *run.name == **name)
                && match (&run.credit, credit) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        })
    }

    /// Starts a run of `name`'s events (an event's name, or a group's channel); `None` if
    /// nothing here subscribes to it.
    fn start_run(&self, name: &Arc<str>, credit: Option<&Arc<Grant>>) -> Option<Run> {
        let events = match self.table.get(&**name) {
            Some(slot) => (slot.batch)(slot, None)?,
            None => {
                let (event, group) = split_group_channel(name)?;
                let slot = self.table.get(event)?;
                (slot.batch)(slot, Some(group))?
            }
        };
        // A receipt held back is room the peer waits for: never more than a new grant needs.
        let limit = credit.map_or(MAX_RUN, |grant| {
            usize::try_from(grant.batch()).map_or(MAX_RUN, |b| b.min(MAX_RUN))
        });
        Some(Run {
            name: Arc::clone(name),
            events,
            credit: credit.cloned(),
            limit,
        })
    }
}

impl EventSink for PeerEvents {
    fn wants(&self, name: &str) -> bool {
        match split_group_channel(name) {
            None => self.table.contains_key(name),
            Some((event, group)) => self
                .table
                .get(event)
                .is_some_and(|slot| slot.group_info.iter().any(|g| &*g.name == group)),
        }
    }

    fn deliver(&mut self, frame: &Frame, credit: Option<&Arc<Grant>>) -> Result<(), FrameError> {
        // An event that reaches no queue is consumed at once.
        let consumed = |credit: Option<&Arc<Grant>>| drop(credit.map(|grant| grant.receipt(1)));
        let Some(FrameName::Inline(name)) = &frame.name else {
            consumed(credit);
            return Err(FrameError::Malformed {
                what: "an event without a name",
            });
        };
        if !self.extends_run(name, credit) {
            self.flush();
            self.run = self.start_run(name, credit);
        }
        if self.run.is_none() {
            consumed(credit);
            // A group's event whose group has no member here any more (it left while the
            // event was on its way) is lost: counted. (An ungrouped event nothing here
            // subscribes to is nobody's.)
            if split_group_channel(name).is_some() {
                Counters::bump(&self.bus.counters.remote_events_dropped);
            }
            return Ok(());
        }
        let message_id = crate::id::next_message_id();
        let meta = if frame.headers.is_empty() {
            match &self.plain {
                Some(meta) => Arc::clone(meta),
                None => Arc::clone(self.plain.insert(self.meta(None, Headers::new()))),
            }
        } else {
            let correlation_id = frame.headers.correlation_id.clone().map(Arc::from);
            self.meta(correlation_id, super::inbound::headers_of(frame))
        };
        let Some(run) = &mut self.run else {
            return Ok(());
        };
        if let Err(e) = run.events.add(&frame.body, message_id, meta) {
            consumed(credit);
            return Err(e);
        }
        if run.events.len() >= run.limit {
            self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(run) = &mut self.run {
            let n = run.events.len();
            if n > 0 {
                let receipt = run.credit.as_ref().map(|grant| grant.receipt(n as u64));
                run.events.hand_over(receipt, &self.bus.counters);
            }
        }
    }

    fn too_large(&self) {
        Counters::bump(&self.bus.counters.remote_events_too_large);
    }
}

impl Drop for PeerEvents {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A run of a peer's events of one type, decoded and waiting to be handed to the
/// subscriptions; the type is the slot's, erased.
pub(crate) trait RemoteBatch: Send {
    /// Decodes one event's body and holds it; `Err` if it does not decode.
    fn add(&mut self, body: &[u8], message_id: u64, meta: Arc<EventMeta>)
        -> Result<(), FrameError>;

    /// How many events are held.
    fn len(&self) -> usize;

    /// Hands the events held to every subscription, never waiting, and holds none after.
    ///
    /// With a receipt (they came under the room granted to the peer), the subscriptions the
    /// grant is for (the `Wait` ones; all of them when none waits) queue them whatever their
    /// length, the last of the run holding the receipt until it is taken, so the peer gets room
    /// back only as they drain; without one, or for a `DropNewest` subscription beside `Wait`
    /// ones, a full queue drops what does not fit and counts the drops.
    fn hand_over(&mut self, receipt: Option<Receipt>, counters: &Counters);
}

/// A [`RemoteBatch`] of events of type `E`.
struct Batch<E: Event> {
    to: To<E>,
    events: Vec<Delivery<E>>,
}

/// Who a [`Batch`]'s events are for.
enum To<E> {
    /// Every subscription outside a group; `wait`: the grant is for the `Wait` ones only.
    All { subs: Arc<SubList<E>>, wait: bool },
    /// One member of a group (`groups[i]`).
    Group {
        groups: Arc<Vec<LocalGroup<E>>>,
        i: usize,
    },
}

/// The batch for the events of `slot` outside any group, or for its `group`, if the slot holds
/// subscriptions of type `E` (and such a group).
pub(super) fn batch<E: Event>(
    slot: &EventSlot,
    group: Option<&str>,
) -> Option<Box<dyn RemoteBatch>> {
    let to = match group {
        None => To::All {
            subs: Arc::clone(&slot.subs).downcast::<SubList<E>>().ok()?,
            wait: slot.flow.wait,
        },
        Some(name) => {
            let groups = slot.groups_arc::<E>()?;
            let i = groups.iter().position(|g| &*g.info.name == name)?;
            To::Group { groups, i }
        }
    };
    Some(Box::new(Batch {
        to,
        events: Vec::new(),
    }))
}

impl<E: Event> RemoteBatch for Batch<E> {
    fn add(
        &mut self,
        body: &[u8],
        message_id: u64,
        meta: Arc<EventMeta>,
    ) -> Result<(), FrameError> {
        let event: Arc<E> = Arc::new(crate::wire::body::decode_body(body)?);
        self.events.push(Delivery::new(event, message_id, meta));
        Ok(())
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn hand_over(&mut self, receipt: Option<Receipt>, counters: &Counters) {
        let (subs, wait) = match &self.to {
            To::All { subs, wait } => (subs, *wait),
            To::Group { groups, i } => {
                // The whole run to one member: the grant bounds what it may add to a queue.
                let n = self.events.len() as u64;
                let dropped = match groups.get(*i).and_then(LocalGroup::pick) {
                    Some(member) => match receipt {
                        Some(r) => {
                            if member.send_credited(self.events.drain(..), Held::One(r)) {
                                0
                            } else {
                                n
                            }
                        }
                        None => member.try_send_all(self.events.drain(..)),
                    },
                    // Every member here went: the events are lost (their room comes back).
                    None => n,
                };
                counters.remote_events_dropped.add(dropped);
                self.events.clear();
                return;
            }
        };
        let holds = |s: &SubSender<E>| s.policy() == FullPolicy::Wait || !wait;
        // The receipt goes to the subscriptions the grant is for: moved to the only one,
        // shared by several (dropped here, consumed at once, when none holds it).
        let mut held = match (receipt, subs.iter().filter(|s| holds(s)).count()) {
            (Some(r), 1) => Some(Held::One(r)),
            (Some(r), n) if n > 1 => Some(Held::Shared(Arc::new(r))),
            _ => None,
        };
        let Some((last, others)) = subs.split_last() else {
            self.events.clear();
            return;
        };
        let mut offer =
            |sub: &SubSender<E>, events: &mut dyn ExactSizeIterator<Item = Delivery<E>>| {
                let credit = match &held {
                    Some(Held::Shared(r)) if holds(sub) => Some(Held::Shared(Arc::clone(r))),
                    Some(Held::One(_)) if holds(sub) => held.take(),
                    _ => None,
                };
                match credit {
                    // A subscription that went a moment ago no longer wants them.
                    Some(credit) => {
                        let _ = sub.send_credited(events, credit);
                    }
                    None => {
                        let dropped = sub.try_send_all(events);
                        if dropped > 0 {
                            counters.remote_events_dropped.add(dropped);
                        }
                    }
                }
            };
        for sub in others {
            offer(sub, &mut self.events.iter().map(Delivery::share));
        }
        offer(last, &mut self.events.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::node::credit::grant_for_tests;
    use crate::wire::control::group_channel;
    use crate::wire::{FrameKind, FrameName};
    use crate::{Bus, GroupKind, SubscriptionOptions};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Job(u32);
    impl Event for Job {
        const NAME: &'static str = "review.job";
    }

    fn frame(name: &Arc<str>, n: u32) -> Frame {
        let mut f = Frame::new(
            FrameKind::Event,
            crate::wire::body::encode_body(&Job(n)).unwrap(),
        );
        f.name = Some(FrameName::Inline(Arc::clone(name)));
        f
    }

    fn sink(bus: &Bus) -> PeerEvents {
        PeerEvents {
            bus: Arc::clone(&bus.inner),
            table: bus.inner.events.load_full(),
            sender: crate::id::NodeId::from_u128(7),
            scope: Scope::Network,
            plain: None,
            run: None,
        }
    }

    /// A member of an exclusive group is unsubscribed while a peer's burst is being read (the
    /// burst's table still has it): the rest of the burst goes to the standby.
    #[tokio::test]
    async fn events_of_a_burst_go_to_the_standby_once_the_active_member_is_unsubscribed() {
        let bus = Bus::builder().start().await.unwrap();
        let opts = SubscriptionOptions::new()
            .group("g")
            .group_kind(GroupKind::Exclusive);
        let active = bus.subscribe_with::<Job>(opts.clone()).unwrap();
        let mut standby = bus.subscribe_with::<Job>(opts).unwrap();
        let channel: Arc<str> = Arc::from(group_channel(Job::NAME, "g"));
        let mut sink = sink(&bus);
        let grant = grant_for_tests(64);
        // First event of the burst, to the active member.
        grant.receive().unwrap();
        sink.deliver(&frame(&channel, 0), Some(&grant)).unwrap();
        sink.flush();
        // The active member goes; the burst goes on.
        drop(active);
        for n in 1..=10 {
            grant.receive().unwrap();
            sink.deliver(&frame(&channel, n), Some(&grant)).unwrap();
        }
        drop(sink);
        let mut got = Vec::new();
        while let Some(Some(job)) = standby.recv().now_or_never() {
            got.push(job.0);
        }
        assert_eq!(
            got,
            (1..=10).collect::<Vec<_>>(),
            "lost with the standby idle"
        );
    }

    /// As above, with a shared group: an idle member that went (its queue length 0, the
    /// shortest) gets nothing more; the remaining member gets every run.
    #[tokio::test]
    async fn events_of_a_burst_reach_the_remaining_member_of_a_shared_group() {
        let bus = Bus::builder().start().await.unwrap();
        let opts = SubscriptionOptions::new().group("g");
        let gone = bus.subscribe_with::<Job>(opts.clone()).unwrap();
        let mut stays = bus.subscribe_with::<Job>(opts).unwrap();
        let channel: Arc<str> = Arc::from(group_channel(Job::NAME, "g"));
        let mut sink = sink(&bus);
        drop(gone);
        // Runs of 4 (a grant of 16: batch 4), each flushed by the reader at its limit.
        let grant = grant_for_tests(16);
        for n in 0..16 {
            grant.receive().unwrap();
            sink.deliver(&frame(&channel, n), Some(&grant)).unwrap();
        }
        drop(sink);
        let mut got = 0;
        while let Some(Some(_)) = stays.recv().now_or_never() {
            got += 1;
        }
        assert_eq!(got, 16, "events lost while the remaining member had room");
    }
}
