//! A publisher waiting for room in a group whose members in scope were all full: the event goes
//! to whichever member has room first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::bus::admit::Taken;
use crate::node::credit::Room;
use crate::node::EventRoute;
use crate::stats::GroupCounters;
use crate::subscription::{Delivery, SubSender};

/// An event every member in scope of a shared group had no room for.
pub(crate) struct GroupWait<E> {
    /// The event under the group's channel, for the members elsewhere.
    pub(crate) frame: Option<Bytes>,
    /// The member nodes elsewhere.
    pub(crate) remote: Vec<EventRoute>,
    /// This node's members that would take it, each with a delivery for it.
    pub(crate) local: Vec<(Arc<SubSender<E>>, Delivery<E>)>,
    pub(crate) counters: Arc<GroupCounters>,
}

/// How waiting at one member ended.
enum Outcome {
    /// Room was taken at member node `.0`.
    Remote(usize, Room),
    /// This node's member queued it (`Ok`), or is gone or the bus sealed (`Err`).
    Local(Result<(), ()>),
}

type Waiting<'w> = Pin<Box<dyn Future<Output = Outcome> + Send + 'w>>;

impl<E: Send + Sync + 'static> GroupWait<E> {
    /// Waits for the first member with room and gives it the event; `Err` only if the bus was
    /// sealed meanwhile. Every member gone or turned to dropping: dropped, and counted.
    pub(crate) async fn run(self, sealed: &CancellationToken) -> Result<(), ()> {
        let GroupWait {
            frame,
            remote,
            local,
            counters,
        } = self;
        let mut waiting: Vec<Waiting<'_>> = Vec::new();
        if frame.is_some() {
            for (i, route) in remote.iter().enumerate() {
                waiting.push(Box::pin(async move {
                    Outcome::Remote(i, route.credit.take(&route.peer.gone).await)
                }));
            }
        }
        // (Only one of them queues it: the others' sends are dropped unqueued when it does.)
        for (sub, delivery) in local {
            waiting.push(Box::pin(async move {
                Outcome::Local(sub.send(delivery, sealed).await)
            }));
        }
        while !waiting.is_empty() {
            let (outcome, _, rest) = tokio::select! {
                first = futures_util::future::select_all(waiting) => first,
                () = sealed.cancelled() => return Err(()),
            };
            waiting = rest;
            match outcome {
                Outcome::Remote(i, Room::Taken) => {
                    // The others stop waiting (taking room is cancel safe).
                    drop(waiting);
                    let Some(route) = remote.get(i) else {
                        return Ok(());
                    };
                    // Given back unless the event is queued, also if this publish is given up
                    // (dropped) while it waits for the link.
                    let room = Taken::new(route.clone());
                    let Some(frame) = frame else {
                        return Ok(());
                    };
                    let queued = tokio::select! {
                        queued = route.peer.queue_event(frame) => queued.is_ok(),
                        () = sealed.cancelled() => false,
                    };
                    if queued {
                        room.sent();
                        counters.delivered.bump();
                    }
                    return if sealed.is_cancelled() {
                        Err(())
                    } else {
                        Ok(())
                    };
                }
                Outcome::Local(Ok(())) => {
                    counters.delivered.bump();
                    return Ok(());
                }
                Outcome::Local(Err(())) if sealed.is_cancelled() => return Err(()),
                // That member is gone, or drops when full: the others may still take it.
                Outcome::Remote(_, Room::Drop | Room::Gone) | Outcome::Local(Err(())) => {}
            }
        }
        counters.dropped.bump();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Context;

    use super::*;
    use crate::wire::control::{Credit as CreditMsg, Grant as GrantMsg};

    /// A publish given up (its `timeout`, or the caller dropping it) while the group's wait has
    /// taken room at a member node and waits for the link's queue gives that room back: the
    /// peer never gets the event, so it would never grant it back.
    #[tokio::test]
    async fn room_taken_for_a_group_event_comes_back_when_the_publish_is_given_up() {
        let (peer, _rxs) = crate::node::handle_for_tests(1);
        // The link's events queue full.
        while peer.try_queue_event(Bytes::from_static(b"x")).is_ok() {}
        let credit = peer.credit.sending("e\u{1f}g").unwrap();
        peer.credit.on_credit(&CreditMsg {
            grants: vec![GrantMsg {
                name: "e\u{1f}g".into(),
                limit: 1,
                wait: true,
                seq: 1,
                window: 1,
            }],
        });
        assert_eq!(credit.window.available(), 1);
        let wait: GroupWait<u32> = GroupWait {
            frame: Some(Bytes::from_static(b"event")),
            remote: vec![EventRoute {
                peer: Arc::clone(&peer),
                credit: Arc::clone(&credit),
            }],
            local: Vec::new(),
            counters: Arc::default(),
        };
        let sealed = CancellationToken::new();
        let mut run = Box::pin(wait.run(&sealed));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            credit.window.available(),
            0,
            "room taken, waiting for the link"
        );
        // The publish times out.
        drop(run);
        assert_eq!(
            credit.window.available(),
            1,
            "the room taken for an event never sent comes back"
        );
    }
}
