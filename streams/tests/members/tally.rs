//! What the members said, gathered: who handled which record at which delivery, which acks
//! were answered and which refused.

use std::collections::{BTreeMap, BTreeSet};

use super::child::Line;

/// One record handled by one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handling {
    pub(crate) member: &'static str,
    pub(crate) deliveries: u32,
}

/// Every line of every member of one phase, by offset.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Every handling of each offset, in the order each member said it.
    pub(crate) handled: BTreeMap<u64, Vec<Handling>>,
    /// Who acked each offset (an answered ack).
    pub(crate) acked: BTreeMap<u64, &'static str>,
    /// Acks refused: the record was no longer pending.
    pub(crate) refused: Vec<(&'static str, u64, String)>,
    /// Pulls that failed.
    pub(crate) pull_errors: Vec<(&'static str, String)>,
    /// Lines about a record, handled or acked.
    pub(crate) lines: u64,
}

impl Tally {
    /// Takes in one line of `member`.
    pub(crate) fn add(&mut self, member: &'static str, line: &Line) {
        match line {
            Line::Handled {
                offset,
                deliveries,
                id,
            } => {
                assert_eq!(
                    id, offset,
                    "{member}: the record at {offset} has a body of its own"
                );
                self.handled.entry(*offset).or_default().push(Handling {
                    member,
                    deliveries: *deliveries,
                });
                self.lines += 1;
            }
            Line::Acked(offset) => {
                let had = self.acked.insert(*offset, member);
                assert_eq!(had, None, "{offset} acked twice: by {had:?} and {member}");
                assert!(
                    self.handled
                        .get(offset)
                        .is_some_and(|h| h.iter().any(|h| h.member == member)),
                    "{member} acked {offset} before handling it"
                );
            }
            Line::Refused(offset, e) => self.refused.push((member, *offset, e.clone())),
            Line::PullError(e) => self.pull_errors.push((member, e.clone())),
            Line::Ready | Line::Holding | Line::Paused | Line::Stopped => {}
        }
    }

    /// Handlings in all.
    pub(crate) fn handlings(&self) -> u64 {
        self.handled.values().map(|h| h.len() as u64).sum()
    }

    /// Handlings that were a redelivery.
    pub(crate) fn redeliveries(&self) -> u64 {
        self.handled
            .values()
            .flatten()
            .filter(|h| h.deliveries >= 2)
            .count() as u64
    }

    /// Offsets handled more than once.
    pub(crate) fn duplicates(&self) -> BTreeSet<u64> {
        self.handled
            .iter()
            .filter(|(_, h)| h.len() > 1)
            .map(|(o, _)| *o)
            .collect()
    }

    /// Offsets `member` handled and did not ack.
    pub(crate) fn unacked_by(&self, member: &str) -> BTreeSet<u64> {
        self.handled
            .iter()
            .filter(|(o, h)| {
                h.iter().any(|h| h.member == member)
                    && !matches!(self.acked.get(o), Some(m) if *m == member)
            })
            .map(|(o, _)| *o)
            .collect()
    }

    /// Offsets `member` acked.
    pub(crate) fn acked_by(&self, member: &str) -> u64 {
        self.acked.values().filter(|m| **m == member).count() as u64
    }
}
