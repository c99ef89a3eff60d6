//! One host per stream name and network: a host that sees another node hosting its stream
//! keeps serving if its node id is the lower of the two, and otherwise refuses every request
//! with an error naming the other host (logged once). Replicated streams come later.

use std::sync::{Arc, Mutex};

use meshbus_core::{Context, MembershipView, NodeId};
use tokio::sync::watch;

use crate::error::Error;
use crate::log::lock;
use crate::wire::{command_name, op, WireError};

/// What a host knows of other hosts of its stream.
#[derive(Default)]
pub(crate) struct Rival {
    state: Mutex<Option<Watch>>,
}

struct Watch {
    view: watch::Receiver<Arc<MembershipView>>,
    /// The other host this one gives way to.
    refused_by: Option<NodeId>,
}

impl Rival {
    /// `Err` when this host gives way to another. Looks at the membership again only when it
    /// has changed.
    pub(crate) fn check(&self, stream: &str, ctx: &Context) -> Result<(), WireError> {
        let mut state = lock(&self.state);
        let watch = state.get_or_insert_with(|| {
            let mut view = ctx.bus().membership();
            view.mark_changed();
            Watch {
                view,
                refused_by: None,
            }
        });
        if watch.view.has_changed().unwrap_or(false) {
            let me = ctx.bus().node_id();
            let append = command_name(stream, op::APPEND);
            let view = watch.view.borrow_and_update();
            let lower = view
                .peers
                .iter()
                .filter(|p| p.node_id < me && p.commands.contains(&append))
                .map(|p| p.node_id)
                .min();
            if lower != watch.refused_by {
                match lower {
                    Some(other) => tracing::error!(
                        stream,
                        other = %other,
                        "another node hosts this stream and has the lower node id: this node refuses requests for it (one host per stream and network)"
                    ),
                    None => tracing::info!(stream, "this node serves the stream again"),
                }
            }
            watch.refused_by = lower;
        }
        match watch.refused_by {
            None => Ok(()),
            Some(other) => {
                let e = Error::Invalid {
                    stream: stream.to_owned(),
                    reason: format!(
                        "node {other} hosts this stream too; this node gives way to it (one host per stream and network)"
                    ),
                };
                Err(WireError::of(&e, stream))
            }
        }
    }
}
