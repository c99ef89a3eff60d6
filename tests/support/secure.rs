//! The dialler's side of the secure channel, for peers that speak the protocol by hand: the
//! Noise handshake over a connection's halves, then sealed halves to speak `Hello` and the rest
//! through. Over TCP, [`SecureStream`] also seals bytes the test crafts (not whole frames, not
//! valid ones), so they reach the node's frame decoder as they are.

use bytes::{Bytes, BytesMut};
use meshbus::transport::{
    FrameReader, FrameWriter, ReadEvent, SealedReader, SealedWriter, StreamFrameReader,
    StreamFrameWriter,
};
use meshbus::{Error, ErrorKind};
use meshbus_core::proto::noise::{
    NoiseConfig, Sealer, SecureHandshake, SecureStep, Session, MAX_UNIT,
};
use meshbus_core::trust::{Identity, NetworkKey, PublicKey};
use meshbus_core::wire::control::{ControlMessage, Hello, Welcome};
use meshbus_core::wire::{FrameCodec, PREFIX_LEN};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use super::within;

/// The network name of nodes that set none.
pub(crate) const DEFAULT_NETWORK: &str = "default";

/// The static key pair of a test peer, from a seed the test picks: the same seed, the same
/// key and node id on every run.
pub(crate) fn identity(seed: u128) -> Identity {
    let mut secret = [0u8; 32];
    secret[..16].copy_from_slice(&seed.to_le_bytes());
    // The seed again, mixed, so small seeds do not give a mostly zero secret.
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0x005E_C04E;
    secret[16..].copy_from_slice(&mixed.to_le_bytes());
    Identity::from_secret(secret)
}

/// What both ends of a link agree on before the handshake: who we are, which network, which
/// keys (the open key when `keys` is empty, as for a node without one).
/// The identity a hand-driven peer holding `key` presents as `name`: the default network and
/// cluster, on `host-1`, advertising no address.
pub(crate) fn peer_identity(
    key: &Identity,
    name: &str,
) -> meshbus_core::wire::control::PeerIdentity {
    meshbus_core::wire::control::PeerIdentity {
        node_id: key.node_id().as_u128(),
        incarnation: 1,
        name: name.to_owned(),
        network: DEFAULT_NETWORK.into(),
        cluster: "default".into(),
        host_id: "host-1".into(),
        addresses: Vec::new(),
        public_key: Some(key.public_key()),
    }
}

pub(crate) fn config(identity: &Identity, network: &str, keys: Vec<NetworkKey>) -> NoiseConfig {
    NoiseConfig::new(identity.clone(), network).with_keys(keys)
}

/// A connection whose secure handshake completed: its sealed halves and the node's static key.
pub(crate) struct Secured {
    pub(crate) reader: Box<dyn FrameReader>,
    pub(crate) writer: Box<dyn FrameWriter>,
    pub(crate) remote: PublicKey,
}

/// Runs the dialler's side of the secure handshake on `reader` and `writer` as `identity`, in
/// `network`, holding `keys`; then wraps them so that every frame written is sealed and every
/// record read is opened. The handshake's last unit goes out with the first frame written.
pub(crate) async fn dial(
    mut reader: Box<dyn FrameReader>,
    mut writer: Box<dyn FrameWriter>,
    identity: &Identity,
    network: &str,
    keys: Vec<NetworkKey>,
) -> Result<Secured, Error> {
    let config = config(identity, network, keys);
    let (session, last) = handshake(&mut *reader, &mut *writer, &config).await?;
    let remote = session.remote_key();
    let (sealer, opener) = session.split();
    Ok(Secured {
        reader: Box::new(SealedReader::new(reader, opener)),
        writer: Box::new(SealedWriter::new(writer, sealer, last)),
        remote,
    })
}

/// Runs the secure handshake as `key` (default network, open key), then says `hello` inside
/// it and waits for the node's `Welcome`; panics on anything else.
pub(crate) async fn join(
    reader: Box<dyn FrameReader>,
    writer: Box<dyn FrameWriter>,
    key: &Identity,
    hello: &Hello,
) -> Secured {
    let mut conn = dial(reader, writer, key, DEFAULT_NETWORK, Vec::new())
        .await
        .expect("the node completes the secure handshake");
    let codec = FrameCodec::handshake();
    let mut buf = BytesMut::new();
    codec.encode(&hello.to_frame().unwrap(), &mut buf).unwrap();
    conn.writer
        .write_batch(&mut vec![buf.freeze()])
        .await
        .unwrap();
    let answer = within("the welcome", async {
        loop {
            match conn.reader.read(codec.max_frame_size).await.unwrap() {
                ReadEvent::Frame(bytes) => break bytes,
                ReadEvent::Partial => continue,
                other => panic!("expected the welcome, got {other:?}"),
            }
        }
    })
    .await;
    let frame = codec.decode_frame(answer).unwrap();
    let welcome = Welcome::from_frame(&frame).expect("the node welcomes the raw peer");
    assert_eq!(
        welcome.identity.node_id,
        conn.remote.node_id().as_u128(),
        "the node's id is its static key's"
    );
    conn
}

/// The handshake's units, in clear, within the bound of a test step: the session and the
/// last unit still to write.
pub(crate) async fn handshake(
    reader: &mut dyn FrameReader,
    writer: &mut dyn FrameWriter,
    config: &NoiseConfig,
) -> Result<(Session, Option<Bytes>), Error> {
    let (mut hs, init) = SecureHandshake::dial(config)?;
    let mut send = Some(init);
    within("the secure handshake", async {
        loop {
            if let Some(unit) = send.take() {
                writer.write_batch(&mut vec![unit]).await?;
            }
            let unit = loop {
                match reader.read(MAX_UNIT - PREFIX_LEN).await? {
                    ReadEvent::Frame(unit) => break unit,
                    // Closed without a word (a refusal says why, in a `Refuse` unit).
                    ReadEvent::Closed => {
                        return Err(Error::new(ErrorKind::Io)
                            .with_detail("the node closed during the secure handshake"))
                    }
                    _ => {}
                }
            };
            match hs.on_unit(&unit)? {
                SecureStep::Send(unit) => send = Some(unit),
                SecureStep::Done { send, session } => return Ok((session, send)),
                other => panic!("a dialler is never asked to refuse: {other:?}"),
            }
        }
    })
    .await
}

/// A TCP connection past the secure handshake: frames are read opened, and what the test
/// writes is sealed, whatever it is.
pub(crate) struct SecureStream {
    /// Opens the node's records, hands out its frames.
    pub(crate) reader: Box<dyn FrameReader>,
    /// Seals what the test writes.
    pub(crate) writer: SecureWrite,
    /// The node's static key.
    pub(crate) remote: PublicKey,
}

/// The writing half of a [`SecureStream`].
pub(crate) struct SecureWrite {
    io: OwnedWriteHalf,
    sealer: Sealer,
    /// The handshake's last unit, written before the first record.
    last: Option<Bytes>,
}

impl SecureStream {
    /// Runs the secure handshake on `stream` as `identity` in the default network, with the
    /// open key (as a node without a network key).
    pub(crate) async fn dial(stream: TcpStream, identity: &Identity) -> Result<Self, Error> {
        Self::dial_in(stream, identity, DEFAULT_NETWORK, Vec::new()).await
    }

    /// Runs the secure handshake on `stream` as `identity`, in `network`, holding `keys`.
    pub(crate) async fn dial_in(
        stream: TcpStream,
        identity: &Identity,
        network: &str,
        keys: Vec<NetworkKey>,
    ) -> Result<Self, Error> {
        let (read, write) = stream.into_split();
        let mut reader: Box<dyn FrameReader> = Box::new(StreamFrameReader::new(read));
        let mut writer = StreamFrameWriter::new(write);
        let config = config(identity, network, keys);
        let (session, last) = handshake(&mut *reader, &mut writer, &config).await?;
        let remote = session.remote_key();
        let (sealer, opener) = session.split();
        Ok(SecureStream {
            reader: Box::new(SealedReader::new(reader, opener)),
            writer: SecureWrite {
                io: writer.into_inner(),
                sealer,
                last,
            },
            remote,
        })
    }
}

impl SecureWrite {
    /// The records that carry `plain` (any bytes: whole frames, a part of one, garbage),
    /// preceded by the handshake's last unit if it is still to go: what to write on the
    /// socket, in order. Sealing uses up nonces: what it returns must be written.
    pub(crate) fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut records = Vec::new();
        self.sealer
            .seal_frames(
                &[Bytes::copy_from_slice(plain)],
                &mut records,
                &mut Vec::new(),
            )
            .expect("nonces left");
        let mut out = self.last.take().map(Vec::from).unwrap_or_default();
        for record in records {
            out.extend_from_slice(&record);
        }
        out
    }

    /// Seals `plain` and writes it.
    pub(crate) async fn write_all(&mut self, plain: &[u8]) -> std::io::Result<()> {
        let sealed = self.seal(plain);
        self.io.write_all(&sealed).await
    }
}
