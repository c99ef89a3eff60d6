//! What this node brings to every handshake.

use super::*;

/// What this node brings to every handshake: who it is, what it speaks, what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub(super) identity: PeerIdentity,
    pub(super) versions: VersionRange,
    pub(super) max_frame_size: u32,
    pub(super) handshake_timeout: Duration,
}

impl LocalNode {
    /// A node with `identity`, speaking [`VersionRange::CURRENT`], accepting frames up to
    /// [`DEFAULT_MAX_FRAME_SIZE`] (16 MiB) and allowing [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new(identity: PeerIdentity) -> Self {
        LocalNode {
            identity,
            versions: VersionRange::CURRENT,
            max_frame_size: DEFAULT_LIMIT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Sets the protocol versions offered in `Hello` and accepted from a dialler.
    pub fn with_versions(mut self, versions: VersionRange) -> Self {
        self.versions = versions;
        self
    }

    /// Sets the largest frame this node accepts after the handshake (announced to peers); at
    /// least [`MIN_MAX_FRAME_SIZE`].
    pub fn with_max_frame_size(mut self, max_frame_size: u32) -> Self {
        self.max_frame_size = max_frame_size;
        self
    }

    /// Sets how long a handshake may take, from dialling or accepting to its last frame.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Who this node is.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The protocol versions this node speaks.
    pub fn versions(&self) -> VersionRange {
        self.versions
    }

    /// The largest frame this node accepts after the handshake.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Checks the configuration; [`Handshake::dial`] and [`Handshake::accept`] call it.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Config`] when the version range is empty, `max_frame_size` is under
    /// [`MIN_MAX_FRAME_SIZE`], the timeout is zero or over a day, or the identity is over
    /// the limits peers accept ([`PeerIdentity::within_limits`]) or too large to fit a 64 KiB
    /// handshake frame.
    pub fn validate(&self) -> Result<(), HandshakeError> {
        if !self.identity.within_limits() {
            return Err(HandshakeError::Config(
                "the identity has more than 16 addresses or a field over 256 bytes",
            ));
        }
        if self.versions.min > self.versions.max {
            return Err(HandshakeError::Config("the version range is empty"));
        }
        if self.max_frame_size < MIN_MAX_FRAME_SIZE {
            return Err(HandshakeError::Config(
                "max_frame_size is under the 64 KiB handshake limit",
            ));
        }
        if self.handshake_timeout.is_zero() || self.handshake_timeout > MAX_TIMEOUT {
            return Err(HandshakeError::Config(
                "the handshake timeout must be above zero and at most a day",
            ));
        }
        // `Hello` is the larger of the two messages that carry the identity.
        let mut scratch = BytesMut::new();
        self.hello()
            .to_frame()
            .and_then(|frame| FrameCodec::handshake().encode(&frame, &mut scratch))
            .map_err(|_| HandshakeError::Config("the identity does not fit a handshake frame"))
    }

    pub(super) fn hello(&self) -> Hello {
        Hello {
            versions: self.versions,
            identity: self.identity.clone(),
            max_frame_size: self.max_frame_size,
        }
    }
}
