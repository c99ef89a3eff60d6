use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::io::{AsyncWriteExt, ReadBuf};

use super::*;
use crate::wire::{Frame, FrameCodec, FrameKind, DEFAULT_MAX_FRAME_SIZE};

mod vectored;

const LIMIT: usize = DEFAULT_MAX_FRAME_SIZE;

fn encoded(kind: FrameKind, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode(&Frame::new(kind, Bytes::copy_from_slice(body)), &mut buf)
        .unwrap();
    buf.freeze()
}

fn three_frames() -> Vec<Bytes> {
    vec![
        encoded(FrameKind::Ping, b""),
        encoded(FrameKind::Event, b"\x91\xa5hello"),
        encoded(FrameKind::Pong, &[7; 300]),
    ]
}

/// A stream that hands out the scripted chunks one per read, then end of stream.
struct Script(VecDeque<Vec<u8>>);

impl Script {
    fn new(chunks: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Script(chunks.into_iter().filter(|c| !c.is_empty()).collect())
    }
}

impl AsyncRead for Script {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let chunks = &mut self.get_mut().0;
        if let Some(chunk) = chunks.front_mut() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                chunks.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Frame(Bytes),
    Partial,
}

/// Reads until `Closed`, collecting what was seen.
async fn read_all<R: AsyncRead + Unpin + Send>(reader: &mut StreamFrameReader<R>) -> Vec<Seen> {
    let mut seen = Vec::new();
    loop {
        match reader.read(LIMIT).await.unwrap() {
            ReadEvent::Frame(f) => seen.push(Seen::Frame(f)),
            ReadEvent::Partial => seen.push(Seen::Partial),
            ReadEvent::Closed => return seen,
        }
    }
}

#[tokio::test]
async fn frames_split_at_every_byte_boundary() {
    let frames = three_frames();
    let all: Vec<u8> = frames.concat();
    let ends: Vec<usize> = frames
        .iter()
        .scan(0, |end, f| {
            *end += f.len();
            Some(*end)
        })
        .collect();
    for cut in 0..=all.len() {
        let mut reader =
            StreamFrameReader::new(Script::new([all[..cut].to_vec(), all[cut..].to_vec()]));
        let seen = read_all(&mut reader).await;
        // Frames that end within the first chunk come first; if the cut is inside a frame, one
        // `Partial` follows; then the rest.
        let done = ends.iter().filter(|&&e| e <= cut).count();
        let mut expected: Vec<Seen> = frames[..done].iter().cloned().map(Seen::Frame).collect();
        if cut > 0 && cut < all.len() && !ends.contains(&cut) {
            expected.push(Seen::Partial);
        }
        expected.extend(frames[done..].iter().cloned().map(Seen::Frame));
        assert_eq!(seen, expected, "cut at {cut}");
    }
}

#[tokio::test]
async fn byte_by_byte_reports_each_partial_arrival_once() {
    let frames = three_frames();
    let all: Vec<u8> = frames.concat();
    let mut reader = StreamFrameReader::new(Script::new(all.iter().map(|&b| vec![b])));
    let seen = read_all(&mut reader).await;
    let got: Vec<Bytes> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Frame(f) => Some(f.clone()),
            Seen::Partial => None,
        })
        .collect();
    assert_eq!(got, frames);
    // Every byte but the last of each frame leaves an unfinished frame behind.
    assert_eq!(seen.len() - frames.len(), all.len() - frames.len());
    assert_eq!(
        seen.iter().filter(|s| **s == Seen::Partial).count(),
        all.len() - frames.len()
    );
}

#[tokio::test]
async fn try_read_frame_takes_the_buffered_frames_and_never_waits() {
    let frames = three_frames();
    let last = frames[2].clone();
    // Two whole frames and the first half of the third arrive in one read.
    let mut first = frames[..2].concat();
    first.extend_from_slice(&last[..10]);
    let mut reader = StreamFrameReader::new(Script::new([first, last[10..].to_vec()]));
    // Nothing read yet: nothing buffered.
    assert_eq!(reader.try_read_frame(LIMIT).unwrap(), None);
    match reader.read(LIMIT).await.unwrap() {
        ReadEvent::Frame(f) => assert_eq!(f, frames[0]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reader.try_read_frame(LIMIT).unwrap(),
        Some(frames[1].clone())
    );
    // Half a frame buffered: it waits for `read`, which reports the part, then the whole.
    assert_eq!(reader.try_read_frame(LIMIT).unwrap(), None);
    let mut rest = Vec::new();
    loop {
        match reader.read(LIMIT).await.unwrap() {
            ReadEvent::Frame(f) => {
                rest.push(f);
                break;
            }
            ReadEvent::Partial => {}
            ReadEvent::Closed => break,
        }
    }
    assert_eq!(rest, vec![last]);
    assert_eq!(reader.try_read_frame(LIMIT).unwrap(), None);
}

#[tokio::test]
async fn try_read_frame_refuses_an_oversized_length() {
    let mut reader = StreamFrameReader::new(Script::new([
        encoded(FrameKind::Ping, b"").to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, 0],
    ]));
    let _ = reader.read(LIMIT).await.unwrap();
    // The next read takes the bad prefix into the buffer; `read` and `try_read_frame` agree.
    assert!(reader.read(LIMIT).await.is_err());
    assert!(reader.try_read_frame(LIMIT).is_err());
}

#[tokio::test]
async fn many_frames_in_one_read_come_out_one_by_one() {
    let frames = three_frames();
    let mut reader = StreamFrameReader::new(Script::new([frames.concat()]));
    let seen = read_all(&mut reader).await;
    assert_eq!(
        seen,
        frames.into_iter().map(Seen::Frame).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_frame_followed_by_part_of_the_next_reports_the_part_without_more_io() {
    let frames = three_frames();
    let mut chunk = frames[0].to_vec();
    chunk.extend_from_slice(&frames[1][..3]);
    let (mut tx, rx) = tokio::io::duplex(4096);
    tx.write_all(&chunk).await.unwrap();
    let mut reader = StreamFrameReader::new(rx);
    assert_eq!(
        reader.read(LIMIT).await.unwrap(),
        ReadEvent::Frame(frames[0].clone())
    );
    // The 3 bytes are already here: the liveness check must hear of them now, not when the
    // peer next sends (it may never).
    assert_eq!(reader.read(LIMIT).await.unwrap(), ReadEvent::Partial);
    assert!(reader.read(LIMIT).now_or_never().is_none());
}

#[tokio::test]
async fn a_4_gib_length_is_refused_without_allocating() {
    let mut garbage = vec![0xff; 4];
    garbage.extend_from_slice(&[0; 64]);
    let mut reader = StreamFrameReader::new(Script::new([garbage]));
    let err = reader.read(LIMIT).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(err.to_string().contains("4294967295"), "{err}");
    assert!(
        reader.buf.capacity() <= READ_CHUNK,
        "{}",
        reader.buf.capacity()
    );
}

#[tokio::test]
async fn one_byte_over_the_limit_is_refused_and_the_limit_itself_is_not() {
    let limit = 1000;
    let over = ((limit + 1) as u32).to_be_bytes().to_vec();
    let mut reader = StreamFrameReader::new(Script::new([over]));
    assert_eq!(
        reader.read(limit).await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );

    let at = (limit as u32).to_be_bytes().to_vec();
    let mut reader = StreamFrameReader::new(Script::new([at]));
    assert_eq!(reader.read(limit).await.unwrap(), ReadEvent::Partial);
}

#[tokio::test]
async fn an_announced_large_frame_grows_the_buffer_only_with_arrivals() {
    let mut start = (LIMIT as u32).to_be_bytes().to_vec();
    start.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut reader = StreamFrameReader::new(Script::new([start]));
    assert_eq!(reader.read(LIMIT).await.unwrap(), ReadEvent::Partial);
    assert!(
        reader.buf.capacity() <= READ_CHUNK + 64 * 1024,
        "{}",
        reader.buf.capacity()
    );
}

#[tokio::test]
async fn a_length_shorter_than_a_header_is_a_decode_error() {
    let mut reader = StreamFrameReader::new(Script::new([vec![0, 0, 0, 3, 1, 2, 3]]));
    assert_eq!(
        reader.read(LIMIT).await.unwrap_err().kind(),
        ErrorKind::Decode
    );
}

#[tokio::test]
async fn end_of_stream_between_frames_is_closed_and_inside_one_is_an_io_error() {
    let frames = three_frames();
    let mut reader = StreamFrameReader::new(Script::new([frames[0].to_vec()]));
    assert_eq!(
        reader.read(LIMIT).await.unwrap(),
        ReadEvent::Frame(frames[0].clone())
    );
    assert_eq!(reader.read(LIMIT).await.unwrap(), ReadEvent::Closed);

    let mut reader = StreamFrameReader::new(Script::new([frames[1][..5].to_vec()]));
    assert_eq!(reader.read(LIMIT).await.unwrap(), ReadEvent::Partial);
    let err = reader.read(LIMIT).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .unwrap();
    assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_cancelled_read_loses_nothing() {
    let frame = encoded(FrameKind::Event, b"\xa3abc");
    let (mut tx, rx) = tokio::io::duplex(4096);
    let mut reader = StreamFrameReader::new(rx);
    assert!(reader.read(LIMIT).now_or_never().is_none());
    tx.write_all(&frame[..6]).await.unwrap();
    assert_eq!(reader.read(LIMIT).await.unwrap(), ReadEvent::Partial);
    assert!(reader.read(LIMIT).now_or_never().is_none());
    tx.write_all(&frame[6..]).await.unwrap();
    assert_eq!(reader.read(LIMIT).await.unwrap(), ReadEvent::Frame(frame));
    drop(tx);
    assert_eq!(reader.read(LIMIT).await.unwrap(), ReadEvent::Closed);
}

/// Records every write call.
#[derive(Default)]
struct Recorder {
    writes: Vec<usize>,
    data: Vec<u8>,
    flushes: usize,
    shutdown: bool,
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.writes.push(buf.len());
        this.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().shutdown = true;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_batch_is_one_write_in_order_then_a_flush() {
    let frames = three_frames();
    let mut writer = StreamFrameWriter::new(Recorder::default());
    let mut batch = frames.clone();
    writer.write_batch(&mut batch).await.unwrap();
    assert!(batch.is_empty());
    let mut one = vec![frames[1].clone()];
    writer.write_batch(&mut one).await.unwrap();
    writer.write_batch(&mut Vec::new()).await.unwrap();

    let rec = &writer.io;
    let total: usize = frames.iter().map(Bytes::len).sum();
    assert_eq!(rec.writes, [total, frames[1].len()]);
    assert_eq!(rec.flushes, 2);
    let mut expected = frames.concat();
    expected.extend_from_slice(&frames[1]);
    assert_eq!(rec.data, expected);

    writer.close().await.unwrap();
    assert!(writer.io.shutdown);
    let err = writer
        .write_batch(&mut vec![frames[0].clone()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn writer_and_reader_round_trip_over_a_small_pipe() {
    // A pipe smaller than one batch: the writer must wait for the reader, and nothing is lost.
    let frames: Vec<Bytes> = (0..50u8)
        .map(|i| encoded(FrameKind::Event, &vec![i; usize::from(i) * 7]))
        .collect();
    let (a, b) = tokio::io::duplex(64);
    let mut writer = StreamFrameWriter::new(a);
    let mut reader = StreamFrameReader::new(b);
    let mut batch = frames.clone();
    let write = async move {
        writer.write_batch(&mut batch).await.unwrap();
        writer.close().await.unwrap();
    };
    let (_, seen) = tokio::join!(write, read_all(&mut reader));
    let got: Vec<Bytes> = seen
        .into_iter()
        .filter_map(|s| match s {
            Seen::Frame(f) => Some(f),
            Seen::Partial => None,
        })
        .collect();
    assert_eq!(got, frames);
}

/// Takes `room` bytes (in writes of at most `chunk`), then fails every write.
struct Breaks {
    room: usize,
    chunk: usize,
    taken: Vec<u8>,
}

impl AsyncWrite for Breaks {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.chunk).min(self.room - self.taken.len());
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        self.taken.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failed_write_leaves_the_frames_that_did_not_leave_whole() {
    let frames = three_frames();
    let lens: Vec<usize> = frames.iter().map(Bytes::len).collect();
    // Room for the first frame whole and part of the second, in small writes.
    for (room, left) in [
        (0, 3),
        (lens[0] - 1, 3),
        (lens[0], 2),
        (lens[0] + 1, 2),
        (lens[0] + lens[1], 1),
    ] {
        let mut writer = StreamFrameWriter::new(Breaks {
            room,
            chunk: 3,
            taken: Vec::new(),
        });
        let mut batch = frames.clone();
        let err = writer.write_batch(&mut batch).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(batch, frames[3 - left..], "room for {room} bytes");
    }
    // One frame alone goes the same way.
    let mut writer = StreamFrameWriter::new(Breaks {
        room: 2,
        chunk: 1,
        taken: Vec::new(),
    });
    let mut batch = vec![frames[0].clone()];
    assert!(writer.write_batch(&mut batch).await.is_err());
    assert_eq!(batch, [frames[0].clone()], "a frame cut short never left");
}

#[tokio::test]
async fn a_large_frame_takes_its_allocation_with_it() {
    // Bytes LZ4 cannot shrink, so the frame is as large as its body.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let body: Vec<u8> = (0..1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let big = encoded(FrameKind::Event, &body);
    assert!(big.len() > 1024 * 1024);
    let small = encoded(FrameKind::Ping, b"");
    let mut bytes = big.to_vec();
    bytes.extend_from_slice(&small[..5]);
    // In 8 KiB reads, as a socket hands them over, then the rest of the small frame.
    let mut chunks: Vec<Vec<u8>> = bytes.chunks(8 * 1024).map(<[u8]>::to_vec).collect();
    chunks.push(small[5..].to_vec());
    let mut reader = StreamFrameReader::new(Script::new(chunks));
    let frame = loop {
        match reader.read(LIMIT).await.unwrap() {
            ReadEvent::Frame(f) => break f,
            ReadEvent::Partial => {}
            ReadEvent::Closed => panic!("closed before the frame"),
        }
    };
    assert_eq!(frame, big);
    // The reader kept none of the frame's allocation: the frame is its only owner (so the
    // memory goes when the frame does), and the buffer holds the next frame's bytes only.
    assert!(
        frame.is_unique(),
        "the reader still shares the frame's buffer"
    );
    assert!(
        reader.buf.capacity() <= KEEP_READ_CAPACITY,
        "{}",
        reader.buf.capacity()
    );
    drop(frame);
    assert_eq!(
        read_all(&mut reader).await,
        [Seen::Partial, Seen::Frame(small)]
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_holds_no_buffer() {
    let (client, server) = tokio::io::duplex(1024);
    let mut reader = StreamFrameReader::new(server);
    // Waiting for a first byte reserves nothing.
    assert!(reader.read(LIMIT).now_or_never().is_none());
    assert_eq!(reader.buf.capacity(), 0);
    // The first bytes land in the buffer every later read uses, and frames read as ever.
    let mut client = client;
    let frames = three_frames();
    for f in &frames {
        client.write_all(f).await.unwrap();
    }
    drop(client);
    let seen = read_all(&mut reader).await;
    assert_eq!(
        seen.iter().filter(|s| matches!(s, Seen::Frame(_))).count(),
        3,
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_framing_decoder_drives_tokio_utils_framed_read() {
    use futures_util::StreamExt;
    let frames = three_frames();
    let all = frames.concat();
    // Chunks that cut every frame, so the decoder sees partial frames between reads.
    let chunks = all.chunks(7).map(<[u8]>::to_vec);
    let read =
        tokio_util::codec::FramedRead::new(Script::new(chunks), StreamFraming { limit: LIMIT });
    let got: Vec<Bytes> = read.map(Result::unwrap).collect().await;
    assert_eq!(got, frames);
}

#[test]
fn the_framing_decoder_refuses_an_over_limit_length_before_reserving_it() {
    let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x00][..]);
    let err = StreamFraming { limit: 1024 }.decode(&mut buf).unwrap_err();
    assert_eq!(Error::from(err).kind(), ErrorKind::TooLarge);
    assert!(buf.capacity() < 64 * 1024, "{}", buf.capacity());
    // Within the limit, an announced large frame reserves at most 64 KiB ahead of what came.
    let mut buf = BytesMut::from(&[0x01, 0x00, 0x00, 0x00][..]);
    assert_eq!(
        StreamFraming { limit: LIMIT }.decode(&mut buf).unwrap(),
        None
    );
    assert!(buf.capacity() <= 4 + 64 * 1024, "{}", buf.capacity());
}
