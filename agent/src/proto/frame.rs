//! Frames: the unit on the wire, and the bounded decoder that finds them in
//! a byte stream that may hold garbage or the torn tail of an earlier
//! connection.
//!
//! ```text
//! offset size
//!  0     4   magic            B6 62 67 41 ("\xB6bgA")
//!  4     2   kind             u16 LE (see `message::kind`)
//!  6     2   flags            u16 LE, 0; receivers ignore it
//!  8     4   id               u32 LE: the session (exec) or request id, 0 for the connection
//! 12     4   payload length   u32 LE, at most MAX_PAYLOAD
//! 16     4   payload CRC-32C  u32 LE
//! 20     4   header CRC-32C   u32 LE, over bytes 0..20
//! 24     len payload
//! ```
//!
//! The decoder accepts a frame only when the magic, the header CRC, the
//! length bound and the payload CRC all hold. Bytes that are no header are
//! skipped one at a time (garbage, or the tail of a frame whose beginning was
//! lost); a real header whose payload fails its CRC (a frame torn by a
//! reconnect) is skipped whole. So the decoder resynchronises on the next
//! real frame, in time linear in its input. It never holds more than
//! [`MAX_FRAME`] bytes, and a length over the bound is refused from the
//! header alone, before anything is allocated for it.

use super::crc::crc32c;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = [0xB6, b'b', b'g', b'A'];
/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;
/// The largest payload either side sends or accepts.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// The largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;
/// How many zero bytes the host writes before its hello on a stream that
/// may hold the torn beginning of an earlier frame (a virtio-serial port the
/// host reconnected to): enough to complete any frame the agent might be
/// waiting for, whose CRC then fails, so the hello that follows is found.
pub const SYNC_LEN: usize = MAX_FRAME;

/// One frame, checked and complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u16,
    pub id: u32,
    pub payload: Vec<u8>,
}

/// The payload is over [`MAX_PAYLOAD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge(pub usize);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "payload of {} bytes is over the {MAX_PAYLOAD} byte limit",
            self.0
        )
    }
}

impl std::error::Error for TooLarge {}

/// Appends one frame to `out`.
pub fn encode_frame(kind: u16, id: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), TooLarge> {
    if payload.len() > MAX_PAYLOAD {
        return Err(TooLarge(payload.len()));
    }
    let mut head = [0u8; HEADER_LEN];
    head[0..4].copy_from_slice(&MAGIC);
    head[4..6].copy_from_slice(&kind.to_le_bytes());
    // 6..8: flags, zero.
    head[8..12].copy_from_slice(&id.to_le_bytes());
    head[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[16..20].copy_from_slice(&crc32c(payload).to_le_bytes());
    let hcrc = crc32c(&head[0..20]);
    head[20..24].copy_from_slice(&hcrc.to_le_bytes());
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    Ok(())
}

/// The zero bytes a host sends before its hello to resynchronise a stream
/// (see [`SYNC_LEN`]).
pub fn sync_preamble() -> Vec<u8> {
    vec![0; SYNC_LEN]
}

/// Incremental frame decoder over a byte stream. Memory is bounded by
/// [`MAX_FRAME`] whatever the input.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the undecoded bytes begin in `buf`.
    start: usize,
    /// Bytes skipped as garbage since creation, for logs.
    skipped: u64,
}

/// A checked header.
struct Header {
    kind: u16,
    id: u32,
    len: usize,
    crc: u32,
}

fn parse_header(b: &[u8]) -> Option<Header> {
    if b[0..4] != MAGIC {
        return None;
    }
    let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if crc32c(&b[0..20]) != le32(20) {
        return None;
    }
    let len = le32(12) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    Some(Header {
        kind: u16::from_le_bytes([b[4], b[5]]),
        id: le32(8),
        len,
        crc: le32(16),
    })
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything buffered (the host said hello again, or went away).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Bytes skipped as garbage so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Bytes held and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes as many of `data`'s bytes as fit (at most [`MAX_FRAME`] are
    /// held) and returns how many it took. Call [`Decoder::next_frame`]
    /// until it returns `None` before feeding the rest: that always makes
    /// room.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let n = data.len().min(MAX_FRAME - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// The next complete, checked frame, or `None` when more bytes are
    /// needed. Garbage is skipped on the way.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let avail = &self.buf[self.start..];
            // Find the magic's first byte; everything before it is garbage.
            let Some(pos) = avail.iter().position(|&b| b == MAGIC[0]) else {
                self.skip(avail.len());
                return None;
            };
            self.skip(pos);
            let avail = &self.buf[self.start..];
            if avail.len() < HEADER_LEN {
                // A prefix of the magic might still become a header; a
                // mismatch within the bytes present is garbage already.
                let n = avail.len().min(4);
                if avail[..n] != MAGIC[..n] {
                    self.skip(1);
                    continue;
                }
                return None;
            }
            let Some(h) = parse_header(&avail[..HEADER_LEN]) else {
                self.skip(1);
                continue;
            };
            if avail.len() < HEADER_LEN + h.len {
                return None;
            }
            let payload = &avail[HEADER_LEN..HEADER_LEN + h.len];
            if crc32c(payload) != h.crc {
                // A torn frame: its header is real but its payload is not
                // (the peer reconnected mid-frame). Skip all of it: looking
                // inside again would let a hostile peer make us check the
                // same bytes once per header it packs in them. What a new
                // host sends after the torn frame comes after its sync
                // preamble, beyond the torn frame's end.
                self.skip(HEADER_LEN + h.len);
                continue;
            }
            let frame = Frame {
                kind: h.kind,
                id: h.id,
                payload: payload.to_vec(),
            };
            self.start += HEADER_LEN + h.len;
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            return Some(frame);
        }
    }

    fn skip(&mut self, n: usize) {
        self.start += n;
        self.skipped += n as u64;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u16, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(kind, id, payload, &mut out).unwrap();
        out
    }

    fn decode_all(dec: &mut Decoder, mut data: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !data.is_empty() {
            let n = dec.feed(data);
            data = &data[n..];
            while let Some(f) = dec.next_frame() {
                frames.push(f);
            }
        }
        frames
    }

    #[test]
    fn round_trip_whole_and_byte_by_byte() {
        let mut wire = frame(1, 7, b"hello");
        wire.extend(frame(0x8011, 0xffff_ffff, &[]));
        wire.extend(frame(2, 1, &vec![0xB6; MAX_PAYLOAD]));
        let want = vec![
            Frame {
                kind: 1,
                id: 7,
                payload: b"hello".to_vec(),
            },
            Frame {
                kind: 0x8011,
                id: 0xffff_ffff,
                payload: vec![],
            },
            Frame {
                kind: 2,
                id: 1,
                payload: vec![0xB6; MAX_PAYLOAD],
            },
        ];
        assert_eq!(decode_all(&mut Decoder::new(), &wire), want);
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        for b in &wire {
            assert_eq!(dec.feed(std::slice::from_ref(b)), 1);
            while let Some(f) = dec.next_frame() {
                got.push(f);
            }
        }
        assert_eq!(got, want);
        assert_eq!(dec.skipped(), 0);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn encoding_over_the_limit_is_refused() {
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(1, 1, &vec![0; MAX_PAYLOAD + 1], &mut out),
            Err(TooLarge(MAX_PAYLOAD + 1))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_header_over_the_limit_is_refused_without_allocating() {
        // A header with a correct CRC that claims 4 GiB.
        let mut head = frame(1, 1, b"")[..HEADER_LEN].to_vec();
        head[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c(&head[0..20]);
        head[20..24].copy_from_slice(&crc.to_le_bytes());
        let mut dec = Decoder::new();
        dec.feed(&head);
        assert_eq!(dec.next_frame(), None);
        // Refused from the header: nothing waits for the 4 GiB.
        assert!(dec.buffered() < 4, "{}", dec.buffered());
        assert!(dec.buf.capacity() < 1024, "{}", dec.buf.capacity());
        // And the stream goes on.
        let f = frame(1, 2, b"next");
        assert_eq!(decode_all(&mut dec, &f)[0].payload, b"next");
    }

    #[test]
    fn garbage_and_truncation_never_panic_and_memory_stays_bounded() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = frame(3, 9, b"payload");
        let mut dec = Decoder::new();
        for round in 0..2000 {
            let len = (rand() % 4096) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            // Sprinkle magics and torn copies of a real frame.
            if round % 3 == 0 && len > 8 {
                let at = (rand() as usize) % (len - 4);
                junk[at..at + 4].copy_from_slice(&MAGIC);
            }
            if round % 5 == 0 {
                let cut = (rand() as usize) % good.len();
                junk.extend_from_slice(&good[..cut]);
            }
            for f in decode_all(&mut dec, &junk) {
                // Only a real frame can come out of the noise.
                assert_eq!(f.payload, b"payload");
            }
            assert!(dec.buffered() <= MAX_FRAME);
            assert!(dec.buf.capacity() <= 2 * MAX_FRAME);
        }
    }

    #[test]
    fn resync_after_garbage() {
        let mut wire: Vec<u8> = b"\xB6\xB6bg garbage \xB6bgA".to_vec();
        wire.extend(frame(1, 1, b"one"));
        assert_eq!(decode_all(&mut Decoder::new(), &wire)[0].payload, b"one");
    }

    #[test]
    fn resync_after_a_torn_frame_and_the_sync_preamble() {
        // The old host sent half of a large frame and went away; the agent
        // waits for the rest. The new host sends the preamble and a hello.
        let big = frame(3, 5, &vec![7u8; 100_000]);
        let mut wire = big[..50_000].to_vec();
        wire.extend(sync_preamble());
        wire.extend(frame(1, 0, b"hello"));
        let frames = decode_all(&mut Decoder::new(), &wire);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].payload, b"hello");
    }

    #[test]
    fn a_torn_frame_costs_one_pass_whatever_it_holds() {
        // A hostile peer packs real headers, each announcing a full payload,
        // into the payload of another: each byte is checked about once.
        let inner = {
            let mut h = frame(3, 1, &[]);
            h[12..16].copy_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
            let crc = crc32c(&h[0..20]);
            h[20..24].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let mut wire = Vec::new();
        while wire.len() < 4 * MAX_FRAME {
            wire.extend_from_slice(&inner);
        }
        wire.extend(sync_preamble());
        wire.extend(frame(1, 0, b"hello"));
        let start = std::time::Instant::now();
        let frames = decode_all(&mut Decoder::new(), &wire);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload, b"hello");
        // Linear: a few MiB of CRC, well under a second even unoptimised.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn feed_is_bounded() {
        let mut dec = Decoder::new();
        let zeros = vec![0u8; 3 * MAX_FRAME];
        assert_eq!(dec.feed(&zeros), MAX_FRAME);
        assert_eq!(dec.next_frame(), None);
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.skipped(), MAX_FRAME as u64);
    }
}
