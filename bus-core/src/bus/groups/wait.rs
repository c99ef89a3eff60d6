//! A publisher waiting for room in a group whose members in scope were all full: the event goes
//! to whichever member has room first.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

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
    /// This node's member that would take it, and the delivery for it.
    pub(crate) local: Option<(Arc<SubSender<E>>, Delivery<E>)>,
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
        if let Some((sub, delivery)) = local {
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
                    let (Some(route), Some(frame)) = (remote.get(i), frame) else {
                        return Ok(());
                    };
                    let queued = tokio::select! {
                        queued = route.peer.queue_event(frame) => queued.is_ok(),
                        () = sealed.cancelled() => false,
                    };
                    if queued {
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        route.credit.give_back();
                    }
                    return if sealed.is_cancelled() {
                        Err(())
                    } else {
                        Ok(())
                    };
                }
                Outcome::Local(Ok(())) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Outcome::Local(Err(())) if sealed.is_cancelled() => return Err(()),
                // That member is gone, or drops when full: the others may still take it.
                Outcome::Remote(_, Room::Drop | Room::Gone) | Outcome::Local(Err(())) => {}
            }
        }
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
