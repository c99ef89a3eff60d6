//! Vectored batch writes: the frames handed over as they are, and a write that takes part of
//! them resumed at the right byte.

use super::*;

/// A stream that writes vectored: takes at most `chunk` bytes per call, across the slices it is
/// given, until it holds `room` bytes; then fails every write.
struct Slices {
    chunk: usize,
    room: usize,
    taken: Vec<u8>,
    vectored_calls: usize,
    plain_calls: usize,
}

impl Slices {
    fn new(chunk: usize, room: usize) -> Self {
        Slices {
            chunk,
            room,
            taken: Vec::new(),
            vectored_calls: 0,
            plain_calls: 0,
        }
    }
}

impl AsyncWrite for Slices {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.plain_calls += 1;
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.vectored_calls += 1;
        let mut n = self.chunk.min(self.room - self.taken.len());
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        let mut took = 0;
        for buf in bufs {
            let k = buf.len().min(n);
            self.taken.extend_from_slice(&buf[..k]);
            took += k;
            n -= k;
            if n == 0 {
                break;
            }
        }
        Poll::Ready(Ok(took))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Frames of many sizes, below and above the size written in place, an empty-bodied one among
/// them; each byte tells where it belongs.
fn mixed_frames() -> Vec<Bytes> {
    (0..40u8)
        .map(|i| {
            let len = usize::from(i) * 37 + usize::from(i % 3) * 600;
            let body: Vec<u8> = (0..len).map(|j| (j as u8) ^ i).collect();
            encoded(FrameKind::Event, &body)
        })
        .collect()
}

#[tokio::test]
async fn large_frames_are_written_in_place_and_small_ones_copied_together() {
    let frames = mixed_frames();
    let mut writer = StreamFrameWriter::new(Slices::new(usize::MAX, usize::MAX));
    let mut batch = frames.clone();
    writer.write_batch(&mut batch).await.unwrap();
    assert!(batch.is_empty());
    assert_eq!(writer.io.taken, frames.concat());
    assert_eq!(writer.io.vectored_calls, 1, "one call for the whole batch");
    assert_eq!(writer.io.plain_calls, 0);
    // Only the small frames went through the batch buffer.
    let small: usize = frames
        .iter()
        .map(Bytes::len)
        .filter(|&n| n < WRITE_IN_PLACE)
        .sum();
    assert!(small > 0 && small < frames.concat().len());
    assert_eq!(writer.batch.len(), small);
    // Runs of small frames are one slice each: never more slices than large frames, plus one
    // run before, between and after them.
    let parts = in_order(&frames, &writer.batch);
    let large = frames.iter().filter(|f| f.len() >= WRITE_IN_PLACE).count();
    assert!(parts.len() <= 2 * large + 1);
    assert_eq!(parts.concat(), frames.concat());
}

#[tokio::test]
async fn a_vectored_write_taken_in_part_resumes_at_the_right_byte() {
    let frames = mixed_frames();
    // Every cut: inside a prefix, inside a body, on a frame's boundary.
    for chunk in [1, 2, 3, 5, 7, 13, 64, 100, 1000, 4096] {
        let mut writer = StreamFrameWriter::new(Slices::new(chunk, usize::MAX));
        let mut batch = frames.clone();
        writer.write_batch(&mut batch).await.unwrap();
        assert!(batch.is_empty());
        assert!(
            writer.io.taken == frames.concat(),
            "the bytes arrived cut or out of order in writes of {chunk}"
        );
        assert_eq!(writer.io.plain_calls, 0);
    }
}

#[tokio::test]
async fn a_failed_vectored_write_leaves_the_frames_that_did_not_leave_whole() {
    // A small frame, one written in place, a small one.
    let frames = vec![
        encoded(FrameKind::Ping, b""),
        encoded(FrameKind::Event, &[5; 700]),
        encoded(FrameKind::Pong, &[7; 300]),
    ];
    let lens: Vec<usize> = frames.iter().map(Bytes::len).collect();
    for (room, left) in [
        (0, 3),
        (lens[0] - 1, 3),
        (lens[0], 2),
        (lens[0] + 1, 2),
        (lens[0] + lens[1], 1),
        (lens[0] + lens[1] + lens[2] - 1, 1),
    ] {
        let mut writer = StreamFrameWriter::new(Slices::new(3, room));
        let mut batch = frames.clone();
        let err = writer.write_batch(&mut batch).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(batch, frames[3 - left..], "room for {room} bytes");
        assert_eq!(writer.io.plain_calls, 0);
    }
}

#[tokio::test]
async fn a_batch_of_more_slices_than_one_call_takes_goes_in_several() {
    // Large frames alternating with small ones: a slice each, 2,500 in all.
    let frames: Vec<Bytes> = (0..2500u32)
        .map(|i| {
            let len = if i % 2 == 0 { WRITE_IN_PLACE } else { 4 };
            let body: Vec<u8> = i.to_be_bytes().into_iter().cycle().take(len).collect();
            encoded(FrameKind::Event, &body)
        })
        .collect();
    let mut writer = StreamFrameWriter::new(Slices::new(usize::MAX, usize::MAX));
    let mut batch = frames.clone();
    writer.write_batch(&mut batch).await.unwrap();
    assert!(writer.io.taken == frames.concat());
    assert_eq!(writer.io.vectored_calls, 2500usize.div_ceil(MAX_SLICES));
}
