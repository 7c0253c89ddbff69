//! The binary `application/vnd.amazon.eventstream` framing that AWS streams (Bedrock's
//! `ConverseStream` among them) use instead of SSE: byte chunks → [`Frame`]s
//! ([`EventStreamDecoder`]), and frames → bytes ([`encode_frame`], for tests and fixtures).
//!
//! The format is the Smithy "Amazon Event Stream Specification"
//! (<https://smithy.io/2.0/aws/amazon-eventstream.html>); `aws-c-event-stream` is the
//! reference implementation whose test messages are used below. Each message is
//!
//! ```text
//! total_length u32 BE | headers_length u32 BE | prelude_crc u32 BE   (the 12-byte prelude)
//! headers[headers_length] | payload | message_crc u32 BE
//! ```
//!
//! where both CRCs are CRC-32 (IEEE) of every byte before them. Frames carry no sync marker,
//! so after a bad CRC or a malformed frame nothing later in the stream can be trusted: the
//! decoder fails for good instead of trying to resynchronise.
//!
//! Where this decoder deliberately differs from the spec: frames larger than
//! [`MAX_FRAME_BYTES`] are refused although clients "MUST NOT" enforce size limits — a Worker
//! has 128 MB, and one hostile length field must not be able to claim it.

use std::fmt;

/// Bedrock's largest events are a few kilobytes of JSON; a whole 16 MB frame is already far
/// beyond anything a model streams, and small enough to hold in a Worker.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

const PRELUDE_LEN: usize = 12;
const CRC_LEN: usize = 4;
/// Prelude plus message CRC: the size of a message with no headers and no payload.
const MIN_FRAME_LEN: usize = PRELUDE_LEN + CRC_LEN;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The value of a string header such as `:event-type`; `None` when it is absent or not a
    /// string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStreamError {
    BadPreludeCrc,
    BadMessageCrc,
    FrameTooLarge { len: u32 },
    Malformed(&'static str),
}

impl fmt::Display for EventStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventStreamError::BadPreludeCrc => write!(f, "event stream prelude checksum mismatch"),
            EventStreamError::BadMessageCrc => write!(f, "event stream message checksum mismatch"),
            EventStreamError::FrameTooLarge { len } => write!(
                f,
                "event stream frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
            ),
            EventStreamError::Malformed(what) => write!(f, "malformed event stream frame: {what}"),
        }
    }
}

impl std::error::Error for EventStreamError {}

/// Incremental decoder. Feed chunks with [`push`](Self::push); call [`finish`](Self::finish)
/// at end of stream. It holds at most one partial frame.
#[derive(Debug, Clone, Default)]
pub struct EventStreamDecoder {
    /// Bytes of a frame whose end has not arrived yet.
    partial: Vec<u8>,
    /// The frame's total length, once its prelude has arrived and checked out.
    frame_len: Option<usize>,
    /// The first error; every later call repeats it (see the module docs).
    failed: Option<EventStreamError>,
}

impl EventStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one network chunk; complete frames are appended to `out`. Frames completed before
    /// an error are still appended.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Frame>) -> Result<(), EventStreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.push_inner(chunk, out);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.partial = Vec::new();
            self.frame_len = None;
        }
        result
    }

    /// End of stream: an error if it stopped inside a frame.
    pub fn finish(&mut self) -> Result<(), EventStreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.partial.is_empty() {
            Ok(())
        } else {
            self.partial = Vec::new();
            self.frame_len = None;
            let error = EventStreamError::Malformed("stream ended inside a frame");
            self.failed = Some(error.clone());
            Err(error)
        }
    }

    fn push_inner(
        &mut self,
        mut chunk: &[u8],
        out: &mut Vec<Frame>,
    ) -> Result<(), EventStreamError> {
        while !chunk.is_empty() {
            if self.partial.is_empty() {
                // Whole frames straight from the chunk, without copying them first.
                if let Some(prelude) = chunk.get(..PRELUDE_LEN) {
                    let len = check_prelude(prelude)?;
                    if let Some(frame) = chunk.get(..len) {
                        out.push(decode_frame(frame)?);
                        chunk = chunk.get(len..).unwrap_or_default();
                        continue;
                    }
                }
            }
            let needed = self.frame_len.unwrap_or(PRELUDE_LEN);
            let take = needed.saturating_sub(self.partial.len()).min(chunk.len());
            let (head, rest) = chunk.split_at(take);
            self.partial.extend_from_slice(head);
            chunk = rest;
            if self.partial.len() < needed {
                break;
            }
            match self.frame_len {
                None => self.frame_len = Some(check_prelude(&self.partial)?),
                Some(_) => {
                    out.push(decode_frame(&self.partial)?);
                    self.partial.clear();
                    self.frame_len = None;
                }
            }
        }
        Ok(())
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Checks a 12-byte prelude and returns the frame's total length. The CRC comes first: with
/// a corrupt prelude the lengths mean nothing.
fn check_prelude(prelude: &[u8]) -> Result<usize, EventStreamError> {
    let malformed = EventStreamError::Malformed("short prelude");
    let total = read_u32(prelude, 0).ok_or(malformed.clone())?;
    let headers = read_u32(prelude, 4).ok_or(malformed.clone())?;
    let crc = read_u32(prelude, 8).ok_or(malformed)?;
    if crc32(prelude.get(..8).unwrap_or_default()) != crc {
        return Err(EventStreamError::BadPreludeCrc);
    }
    if total > MAX_FRAME_BYTES {
        return Err(EventStreamError::FrameTooLarge { len: total });
    }
    // Both fit in usize: total is at most MAX_FRAME_BYTES, headers is checked against it.
    let total = total as usize;
    if total < MIN_FRAME_LEN {
        return Err(EventStreamError::Malformed(
            "frame shorter than its prelude",
        ));
    }
    if headers as usize > total - MIN_FRAME_LEN {
        return Err(EventStreamError::Malformed("headers longer than the frame"));
    }
    Ok(total)
}

/// Decodes one whole frame (prelude already known to be consistent with its length).
fn decode_frame(frame: &[u8]) -> Result<Frame, EventStreamError> {
    let total = check_prelude(frame)?;
    let body_end = total
        .checked_sub(CRC_LEN)
        .filter(|&end| end >= PRELUDE_LEN && frame.len() == total)
        .ok_or(EventStreamError::Malformed("frame length mismatch"))?;
    let expected = read_u32(frame, body_end).ok_or(EventStreamError::Malformed("no CRC"))?;
    if crc32(frame.get(..body_end).unwrap_or_default()) != expected {
        return Err(EventStreamError::BadMessageCrc);
    }
    let headers_len = read_u32(frame, 4).unwrap_or_default() as usize;
    let headers_end = PRELUDE_LEN.saturating_add(headers_len);
    let header_bytes = frame
        .get(PRELUDE_LEN..headers_end)
        .ok_or(EventStreamError::Malformed("headers longer than the frame"))?;
    let payload = frame
        .get(headers_end..body_end)
        .ok_or(EventStreamError::Malformed("headers longer than the frame"))?;
    Ok(Frame {
        headers: decode_headers(header_bytes)?,
        payload: payload.to_vec(),
    })
}

/// A cursor over the header section that never reads past it.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventStreamError> {
        if n > self.bytes.len() {
            return Err(EventStreamError::Malformed(
                "header runs past the header section",
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EventStreamError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, EventStreamError> {
        Ok(self.array::<1>()?[0])
    }

    fn prefixed(&mut self) -> Result<&'a [u8], EventStreamError> {
        let len = u16::from_be_bytes(self.array()?);
        self.take(usize::from(len))
    }
}

fn decode_headers(bytes: &[u8]) -> Result<Vec<(String, HeaderValue)>, EventStreamError> {
    let mut reader = Reader { bytes };
    let mut headers = Vec::new();
    while !reader.bytes.is_empty() {
        let name_len = reader.u8()?;
        let name = std::str::from_utf8(reader.take(usize::from(name_len))?)
            .map_err(|_| EventStreamError::Malformed("header name is not UTF-8"))?
            .to_string();
        let value = match reader.u8()? {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(reader.array()?)),
            3 => HeaderValue::Short(i16::from_be_bytes(reader.array()?)),
            4 => HeaderValue::Int(i32::from_be_bytes(reader.array()?)),
            5 => HeaderValue::Long(i64::from_be_bytes(reader.array()?)),
            6 => HeaderValue::Bytes(reader.prefixed()?.to_vec()),
            7 => HeaderValue::String(
                std::str::from_utf8(reader.prefixed()?)
                    .map_err(|_| EventStreamError::Malformed("string header is not UTF-8"))?
                    .to_string(),
            ),
            8 => HeaderValue::Timestamp(i64::from_be_bytes(reader.array()?)),
            9 => HeaderValue::Uuid(reader.array()?),
            _ => return Err(EventStreamError::Malformed("unknown header value type")),
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// Encodes one frame. Names longer than 255 bytes and byte or string values longer than
/// 65,535 bytes cannot be expressed and are cut (strings at a character boundary); frames
/// beyond what a u32 length can say are not a concern for the tests and fixtures this serves.
pub fn encode_frame(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        let name = truncate_str(name, usize::from(u8::MAX));
        header_bytes.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        header_bytes.extend_from_slice(name.as_bytes());
        match value {
            HeaderValue::Bool(true) => header_bytes.push(0),
            HeaderValue::Bool(false) => header_bytes.push(1),
            HeaderValue::Byte(v) => {
                header_bytes.push(2);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                header_bytes.push(3);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                header_bytes.push(4);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                header_bytes.push(5);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                header_bytes.push(6);
                let v = v.get(..usize::from(u16::MAX)).unwrap_or(v);
                push_prefixed(&mut header_bytes, v);
            }
            HeaderValue::String(v) => {
                header_bytes.push(7);
                push_prefixed(
                    &mut header_bytes,
                    truncate_str(v, usize::from(u16::MAX)).as_bytes(),
                );
            }
            HeaderValue::Timestamp(v) => {
                header_bytes.push(8);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                header_bytes.push(9);
                header_bytes.extend_from_slice(v);
            }
        }
    }
    let total = MIN_FRAME_LEN + header_bytes.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(header_bytes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

fn push_prefixed(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(value);
}

fn truncate_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The CRC-32 lookup table for the reflected IEEE polynomial, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, as zlib's `crc32`). Written here because the crate takes no
/// dependencies beyond serde.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc = CRC_TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aws-c-event-stream `tests/message_deserializer_test.c`: an empty message, a payload
    /// without headers, one string header, one int32 header.
    const EMPTY: &[u8] = &[
        0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8,
        0xff,
    ];
    const PAYLOAD_ONLY: &[u8] = &[
        0x00, 0x00, 0x00, 0x1D, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27, 0x66,
        0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0xc3, 0x65, 0x39, 0x36,
    ];
    const STRING_HEADER: &[u8] = &[
        0x00, 0x00, 0x00, 0x3D, 0x00, 0x00, 0x00, 0x20, 0x07, 0xFD, 0x83, 0x96, 0x0C, b'c', b'o',
        b'n', b't', b'e', b'n', b't', b'-', b't', b'y', b'p', b'e', 0x07, 0x00, 0x10, b'a', b'p',
        b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n', b'/', b'j', b's', b'o', b'n', 0x7b,
        0x27, 0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0x8D, 0x9C, 0x08,
        0xB1,
    ];
    const INT_HEADER: &[u8] = &[
        0x00, 0x00, 0x00, 0x2B, 0x00, 0x00, 0x00, 0x0E, 0x34, 0x8B, 0xEC, 0x7B, 0x08, b'e', b'v',
        b'e', b'n', b't', b'-', b'i', b'd', 0x04, 0x00, 0x00, 0xA0, 0x0C, 0x7b, 0x27, 0x66, 0x6f,
        0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0xD3, 0x89, 0x02, 0x85,
    ];

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Frame>, EventStreamError> {
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out)?;
        }
        decoder.finish()?;
        Ok(out)
    }

    /// Whole, split at every byte into two pushes, and one byte at a time must agree.
    fn decode_every_way(bytes: &[u8]) -> Vec<Frame> {
        let whole = decode_all(&[bytes]).expect("decodes");
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                decode_all(&[a, b]).expect("decodes"),
                whole,
                "split at {split}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&singles).expect("decodes"), whole);
        whole
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn decodes_the_reference_messages() {
        let payload = b"{'foo':'bar'}".to_vec();
        let mut all = Vec::new();
        for bytes in [EMPTY, PAYLOAD_ONLY, STRING_HEADER, INT_HEADER] {
            all.extend_from_slice(bytes);
        }
        assert_eq!(
            decode_every_way(&all),
            vec![
                Frame {
                    headers: vec![],
                    payload: vec![],
                },
                Frame {
                    headers: vec![],
                    payload: payload.clone(),
                },
                Frame {
                    headers: vec![(
                        "content-type".into(),
                        HeaderValue::String("application/json".into())
                    )],
                    payload: payload.clone(),
                },
                Frame {
                    headers: vec![("event-id".into(), HeaderValue::Int(0x0000_A00C))],
                    payload,
                },
            ]
        );
    }

    #[test]
    fn encodes_the_reference_messages() {
        let payload = b"{'foo':'bar'}";
        assert_eq!(encode_frame(&[], b""), EMPTY);
        assert_eq!(encode_frame(&[], payload), PAYLOAD_ONLY);
        assert_eq!(
            encode_frame(
                &[(
                    "content-type",
                    HeaderValue::String("application/json".into())
                )],
                payload
            ),
            STRING_HEADER
        );
        assert_eq!(
            encode_frame(&[("event-id", HeaderValue::Int(0xA00C))], payload),
            INT_HEADER
        );
    }

    #[test]
    fn every_header_type_round_trips() {
        let headers = vec![
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("byte", HeaderValue::Byte(-7)),
            ("short", HeaderValue::Short(-300)),
            ("int", HeaderValue::Int(i32::MIN)),
            ("long", HeaderValue::Long(i64::MAX)),
            ("bytes", HeaderValue::Bytes(vec![0, 255, 1])),
            ("string", HeaderValue::String("héllo".into())),
            ("time", HeaderValue::Timestamp(1_440_938_160_000)),
            ("uuid", HeaderValue::Uuid([9; 16])),
        ];
        let bytes = encode_frame(&headers, b"payload");
        let frames = decode_every_way(&bytes);
        let expected: Vec<(String, HeaderValue)> = headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].headers, expected);
        assert_eq!(frames[0].payload, b"payload");
        assert_eq!(frames[0].header_str("string"), Some("héllo"));
        assert_eq!(frames[0].header_str("int"), None);
        assert_eq!(frames[0].header_str("missing"), None);
    }

    #[test]
    fn encoding_cuts_what_cannot_be_expressed() {
        let long_name = "n".repeat(300);
        let long_value = "é".repeat(40_000);
        let bytes = encode_frame(
            &[(long_name.as_str(), HeaderValue::String(long_value))],
            b"",
        );
        let frame = decode_all(&[&bytes]).expect("decodes").remove(0);
        let (name, value) = &frame.headers[0];
        assert_eq!(name.len(), 255);
        match value {
            HeaderValue::String(s) => assert_eq!(s.len(), 65_534),
            other => panic!("{other:?}"),
        }
    }

    fn with_byte(bytes: &[u8], at: usize, value: u8) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[at] = value;
        out
    }

    #[test]
    fn corrupt_checksums_are_refused() {
        assert_eq!(
            decode_all(&[&with_byte(STRING_HEADER, 9, 0)]),
            Err(EventStreamError::BadPreludeCrc)
        );
        assert_eq!(
            decode_all(&[&with_byte(STRING_HEADER, 20, b'X')]),
            Err(EventStreamError::BadMessageCrc)
        );
        let last = STRING_HEADER.len() - 1;
        assert_eq!(
            decode_all(&[&with_byte(STRING_HEADER, last, 0)]),
            Err(EventStreamError::BadMessageCrc)
        );
    }

    /// A prelude with a valid CRC but the given lengths.
    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&headers.to_be_bytes());
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// A frame whose header section is `headers` as given, CRCs valid.
    fn raw_frame(headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = (MIN_FRAME_LEN + headers.len() + payload.len()) as u32;
        let mut out = prelude(total, headers.len() as u32);
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        let too_big = MAX_FRAME_BYTES + 1;
        assert_eq!(
            decoder.push(&prelude(too_big, 0), &mut out),
            Err(EventStreamError::FrameTooLarge { len: too_big })
        );
        assert!(decoder.partial.capacity() < 64, "nothing was reserved");
        // Once failed, always failed: the stream has lost its framing.
        assert_eq!(
            decoder.push(EMPTY, &mut out),
            Err(EventStreamError::FrameTooLarge { len: too_big })
        );
        assert_eq!(
            decoder.finish(),
            Err(EventStreamError::FrameTooLarge { len: too_big })
        );
        assert!(out.is_empty());
        assert_eq!(
            decode_all(&[&prelude(u32::MAX, 0)]),
            Err(EventStreamError::FrameTooLarge { len: u32::MAX })
        );
    }

    #[test]
    fn inconsistent_lengths_are_refused() {
        assert_eq!(
            decode_all(&[&prelude(15, 0)]),
            Err(EventStreamError::Malformed(
                "frame shorter than its prelude"
            ))
        );
        assert_eq!(
            decode_all(&[&prelude(20, 5)]),
            Err(EventStreamError::Malformed("headers longer than the frame"))
        );
        assert_eq!(
            decode_all(&[&prelude(20, u32::MAX)]),
            Err(EventStreamError::Malformed("headers longer than the frame"))
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let past_end = Err(EventStreamError::Malformed(
            "header runs past the header section",
        ));
        // Name length beyond the section.
        assert_eq!(decode_all(&[&raw_frame(&[10, b'a'], b"")]), past_end);
        // No type byte.
        assert_eq!(decode_all(&[&raw_frame(&[1, b'a'], b"")]), past_end);
        // String length beyond the section (the payload is not part of it).
        assert_eq!(
            decode_all(&[&raw_frame(&[1, b'a', 7, 0, 9, b'x'], b"yyyyyyyyyy")]),
            past_end
        );
        // Truncated fixed-width values.
        for (kind, width) in [(3u8, 2usize), (4, 4), (5, 8), (8, 8), (9, 16)] {
            let mut headers = vec![1, b'a', kind];
            headers.extend(std::iter::repeat_n(0, width - 1));
            assert_eq!(decode_all(&[&raw_frame(&headers, b"")]), past_end, "{kind}");
        }
        assert_eq!(
            decode_all(&[&raw_frame(&[1, b'a', 10], b"")]),
            Err(EventStreamError::Malformed("unknown header value type"))
        );
        assert_eq!(
            decode_all(&[&raw_frame(&[1, 0xff, 0], b"")]),
            Err(EventStreamError::Malformed("header name is not UTF-8"))
        );
        assert_eq!(
            decode_all(&[&raw_frame(&[1, b'a', 7, 0, 1, 0xff], b"")]),
            Err(EventStreamError::Malformed("string header is not UTF-8"))
        );
    }

    #[test]
    fn truncated_streams_fail_at_finish() {
        for cut in 1..STRING_HEADER.len() {
            let mut decoder = EventStreamDecoder::new();
            let mut out = Vec::new();
            decoder
                .push(&STRING_HEADER[..cut], &mut out)
                .expect("a partial frame is fine until the end");
            assert!(out.is_empty());
            assert_eq!(
                decoder.finish(),
                Err(EventStreamError::Malformed("stream ended inside a frame"))
            );
        }
        assert_eq!(decode_all(&[]), Ok(vec![]));
    }

    #[test]
    fn frames_before_an_error_are_kept() {
        let mut bytes = EMPTY.to_vec();
        bytes.extend_from_slice(&with_byte(PAYLOAD_ONLY, 15, 0));
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        assert_eq!(
            decoder.push(&bytes, &mut out),
            Err(EventStreamError::BadMessageCrc)
        );
        assert_eq!(out.len(), 1);
    }

    /// A deterministic xorshift, so the garbage is the same on every run.
    fn garbage(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..200u64 {
            let bytes = garbage(seed, (seed as usize * 37) % 300);
            let _ = decode_all(&[&bytes]);
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            let _ = decode_all(&singles);
        }
        // Valid preludes and CRCs around random header sections reach the header parser.
        for seed in 0..500u64 {
            let headers = garbage(seed, (seed as usize % 40) + 1);
            let _ = decode_all(&[&raw_frame(&headers, b"{}")]);
        }
        // Every single-byte corruption of a valid frame is caught or decodes, never panics.
        for at in 0..STRING_HEADER.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let _ = decode_all(&[&with_byte(STRING_HEADER, at, value)]);
            }
        }
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            EventStreamError::FrameTooLarge { len: 20_000_000 }.to_string(),
            "event stream frame of 20000000 bytes exceeds the 16777216-byte limit"
        );
        assert_eq!(
            EventStreamError::Malformed("x").to_string(),
            "malformed event stream frame: x"
        );
    }
}
