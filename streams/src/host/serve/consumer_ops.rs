//! The host's durable-consumer requests: each maps its consumer's errors onto the wire.

use std::sync::Arc;
use std::time::Duration;

use super::{clip, Host, Stop, MAX_FETCH_WAIT};
use crate::error::Error;
use crate::host::consumers::Consumers;
use crate::wire::{self, WireError};

impl Host {
    /// Its dead-letter stream, if it has one.
    pub(crate) fn dead_letters(&self) -> Option<Arc<Host>> {
        self.consumers.as_ref().and_then(|c| c.dead.clone())
    }

    fn consumers(&self) -> Result<&Consumers, WireError> {
        self.consumers.as_ref().ok_or_else(|| {
            let e = Error::Invalid {
                stream: self.name.clone(),
                reason: "a dead-letter stream has no consumers".to_owned(),
            };
            WireError::of(&e, &self.name)
        })
    }

    fn wire(&self) -> impl Fn(Error) -> WireError + '_ {
        move |e| WireError::of(&e, &self.name)
    }

    /// Creates or reconfigures a durable consumer.
    pub(crate) async fn create_consumer(
        &self,
        cmd: wire::CreateConsumer,
    ) -> Result<crate::ConsumerInfo, WireError> {
        let c = self.consumers()?;
        c.create(&self.log(), &cmd.consumer, cmd.config, cmd.update)
            .await
            .map_err(self.wire())
    }

    /// Records for a member of a consumer.
    pub(crate) async fn next(
        &self,
        cmd: wire::Next,
        stop: Stop,
    ) -> Result<Vec<wire::WireDelivery>, WireError> {
        let c = self.consumers()?;
        let wait = Duration::from_millis(cmd.wait_ms).min(MAX_FETCH_WAIT);
        // The consumer's series, registered the first time it is read.
        let metrics = self.metrics.get().map(|m| m.consumer(&cmd.consumer));
        let log = self.log();
        c.next(&log, &self.tail, &cmd.consumer, cmd.max, wait, &stop)
            .await
            .map(|(out, info)| {
                if let (Some(m), Some(info)) = (metrics, info) {
                    m.update(&info);
                }
                out
            })
            .map_err(self.wire())
    }

    /// Acks or naks a member's records.
    pub(crate) async fn ack(&self, cmd: wire::Ack) -> Result<(), WireError> {
        let c = self.consumers()?;
        let nak = cmd
            .nak
            .then(|| (cmd.delay_ms > 0).then(|| Duration::from_millis(cmd.delay_ms)));
        let why = cmd.reason.as_deref().map(|r| clip(r, 1024));
        c.ack(&self.log(), &cmd.consumer, &cmd.offsets, nak, why)
            .await
            .map_err(self.wire())
    }

    /// A consumer's info.
    pub(crate) async fn consumer_info(
        &self,
        cmd: wire::GetConsumer,
    ) -> Result<crate::ConsumerInfo, WireError> {
        let c = self.consumers()?;
        c.info(&self.log(), &cmd.consumer)
            .await
            .map_err(self.wire())
    }

    /// Moves a consumer's cursor.
    pub(crate) async fn reset_consumer(
        &self,
        cmd: wire::ResetConsumer,
    ) -> Result<crate::ConsumerInfo, WireError> {
        let c = self.consumers()?;
        c.reset(&self.log(), &cmd.consumer, cmd.to)
            .await
            .map_err(self.wire())
    }

    /// Deletes a consumer.
    pub(crate) async fn delete_consumer(
        &self,
        cmd: wire::DeleteConsumer,
    ) -> Result<bool, WireError> {
        let c = self.consumers()?;
        c.delete(&cmd.consumer).await.map_err(self.wire())
    }
}
