//! serde <-> frames.
//!
//! A frame on the wire is a 12-byte header and a payload:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | payload length, u64 little-endian |
//! | 8 | format version ([`VERSION`]) |
//! | 9 | kind: [`Kind::Value`] (postcard) or [`Kind::Bytes`] (raw bytes) |
//! | 10..12 | number of descriptors that travel with the frame, u16 LE |
//!
//! Values are encoded with postcard in the caller's thread, so encoding errors
//! return to the caller. `Vec<u8>` values and `send_bytes` payloads skip serde
//! entirely (the bytes fast path: postcard encodes a `Vec<u8>` a byte at a time,
//! ~40x slower). Handles inside a value put their descriptors in an out-of-band
//! list ([`handles`]) that travels as SCM_RIGHTS beside the frame.

pub(crate) mod handles;
pub(crate) mod stack;
pub(crate) mod stream;

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The frame format version written in every header.
pub(crate) const VERSION: u8 = 1;
/// Length of the frame header.
pub(crate) const HEADER_LEN: usize = 12;
/// The largest frame accepted unless configured otherwise: 4 GiB.
pub const DEFAULT_MAX_FRAME: u64 = 4 << 30;

/// What a frame's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A postcard-encoded value.
    Value = 0,
    /// Raw bytes (`send_bytes`, or a `Vec<u8>` value).
    Bytes = 1,
}

/// Why a value could not be encoded or decoded.
///
/// # Examples
/// ```
/// use multiproc::{CodecError, Pipe, RecvError};
///
/// let (a, b) = Pipe::new()?;
/// a.send(&"not a number")?;
/// assert!(matches!(b.recv::<u64>(), Err(RecvError::Codec(CodecError::Decode(_)))));
/// a.send(&7u64)?; // the connection stays usable
/// assert_eq!(b.recv::<u64>()?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The value's `Serialize` failed, or it holds a handle where none can travel.
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    Decode(String),
    /// A frame (announced or actual) is larger than the allowed maximum.
    TooLarge {
        /// The frame's payload length.
        len: u64,
        /// The maximum in force.
        max: u64,
    },
    /// The header is not one this version writes (wrong version or kind).
    BadHeader(String),
    /// The stream ended inside a frame.
    Truncated,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Encode(m) => write!(f, "cannot encode the value: {m}"),
            CodecError::Decode(m) => write!(f, "cannot decode the message: {m}"),
            CodecError::TooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes is larger than the maximum of {max} bytes"
                )
            }
            CodecError::BadHeader(m) => write!(f, "corrupt frame header: {m}"),
            CodecError::Truncated => write!(f, "the stream ended inside a message"),
        }
    }
}

impl std::error::Error for CodecError {}

/// A frame ready to be written: header, payload (borrowed on the bytes fast
/// path) and the descriptors of the handles it carries.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) header: [u8; HEADER_LEN],
    pub(crate) payload: Cow<'a, [u8]>,
    pub(crate) fds: Vec<OwnedFd>,
}

impl Outgoing<'_> {
    /// The same frame with its payload owned (copied if it was borrowed).
    pub(crate) fn into_owned(self) -> Outgoing<'static> {
        Outgoing {
            header: self.header,
            payload: Cow::Owned(self.payload.into_owned()),
            fds: self.fds,
        }
    }
}

/// A frame as read: kind, payload, descriptors.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: Kind,
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Builds a header.
pub(crate) fn header(kind: Kind, len: u64, nfds: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&len.to_le_bytes());
    h[8] = VERSION;
    h[9] = kind as u8;
    h[10..12].copy_from_slice(&(nfds.min(u16::MAX as usize) as u16).to_le_bytes());
    h
}

/// A parsed header: kind, payload length, descriptor count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) len: u64,
    pub(crate) nfds: usize,
}

/// Parses and checks a header against `max`; never allocates.
pub(crate) fn parse_header(h: &[u8; HEADER_LEN], max: u64) -> Result<Header, CodecError> {
    let len = u64::from_le_bytes(h[..8].try_into().unwrap_or([0; 8]));
    if h[8] != VERSION {
        return Err(CodecError::BadHeader(format!(
            "format version {} (this side speaks {VERSION})",
            h[8]
        )));
    }
    let kind = match h[9] {
        0 => Kind::Value,
        1 => Kind::Bytes,
        k => return Err(CodecError::BadHeader(format!("unknown frame kind {k}"))),
    };
    let nfds = usize::from(u16::from_le_bytes([h[10], h[11]]));
    if nfds > crate::sys::sock::MAX_FDS_PER_MESSAGE {
        return Err(CodecError::BadHeader(format!("{nfds} descriptors announced")));
    }
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    Ok(Header { kind, len, nfds })
}

fn as_bytes<T: Any>(v: &T) -> Option<&[u8]> {
    let any = v as &dyn Any;
    if let Some(b) = any.downcast_ref::<Vec<u8>>() {
        return Some(b);
    }
    any.downcast_ref::<Box<[u8]>>().map(|b| &b[..])
}

/// Encodes `value`. With `handles`, descriptors of handles inside it are
/// collected to travel beside the frame; without, a handle is an encoding error.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    handles: bool,
) -> Result<Outgoing<'static>, CodecError> {
    let run = || postcard::to_allocvec(value).map_err(|e| CodecError::Encode(reason(e)));
    let (payload, fds) = if handles {
        let (r, fds) = handles::collect_fds(run);
        (r?, fds)
    } else {
        (run()?, Vec::new())
    };
    Ok(Outgoing {
        header: header(Kind::Value, payload.len() as u64, fds.len()),
        payload: Cow::Owned(payload),
        fds,
    })
}

/// The best message for a postcard error: ours if a handle failed, else postcard's.
pub(crate) fn reason(e: postcard::Error) -> String {
    handles::take_error().unwrap_or_else(|| match e {
        postcard::Error::SerdeSerCustom => "the value's Serialize implementation returned an error".into(),
        postcard::Error::SerdeDeCustom => "the value's Deserialize implementation returned an error".into(),
        e => e.to_string(),
    })
}

/// [`encode`] with the bytes fast path: a `Vec<u8>` (or `Box<[u8]>`) value is
/// sent as raw bytes, borrowed, with no serde pass and no copy.
pub(crate) fn encode_fast<T: Serialize + Any>(value: &T, handles: bool) -> Result<Outgoing<'_>, CodecError> {
    match as_bytes(value) {
        Some(b) => Ok(bytes_frame(b)),
        None => encode(value, handles),
    }
}

/// A raw-bytes frame borrowing `b`.
pub(crate) fn bytes_frame(b: &[u8]) -> Outgoing<'_> {
    Outgoing {
        header: header(Kind::Bytes, b.len() as u64, 0),
        payload: Cow::Borrowed(b),
        fds: Vec::new(),
    }
}

/// Decodes a frame into `T`, handing its descriptors to the handles inside.
/// A `Kind::Bytes` frame decodes only into `Vec<u8>`/`Box<[u8]>`, without a copy.
/// Trailing bytes after the value are an error (a frame holds exactly one value).
pub(crate) fn decode<T: DeserializeOwned + Any>(frame: Frame) -> Result<T, CodecError> {
    let Frame { kind, payload, fds } = frame;
    if kind == Kind::Bytes {
        let mut slot: Option<T> = None;
        let any = &mut slot as &mut dyn Any;
        if let Some(s) = any.downcast_mut::<Option<Vec<u8>>>() {
            *s = Some(payload);
        } else if let Some(s) = any.downcast_mut::<Option<Box<[u8]>>>() {
            *s = Some(payload.into_boxed_slice());
        } else {
            return Err(CodecError::Decode(format!(
                "the message holds raw bytes (send_bytes), not a {}",
                std::any::type_name::<T>()
            )));
        }
        return slot.ok_or_else(|| CodecError::Decode("internal: bytes slot empty".into()));
    }
    decode_value(&payload, fds)
}

/// Decodes postcard bytes that hold exactly one `T` and no handles: the fast
/// path of the queues and the pool. The deserializer is inlined (no call into
/// `postcard::take_from_bytes`); on any failure the bytes are decoded again by
/// [`decode_value`] for the precise message (a handle inside, trailing bytes,
/// ...).
///
/// # Errors
/// As [`decode_value`].
#[inline]
pub(crate) fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    match T::deserialize(&mut de) {
        Ok(v) if de.finalize().is_ok_and(|rest| rest.is_empty()) => Ok(v),
        _ => decode_plain_failed(bytes),
    }
}

/// The error (or the value, if it needs the handle machinery) for bytes that
/// the plain decoding refused: out of the callers' hot path.
#[cold]
#[inline(never)]
fn decode_plain_failed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_value(bytes, Vec::new())
}

/// Decodes postcard bytes, with `fds` for the handles inside.
pub(crate) fn decode_value<T: DeserializeOwned>(payload: &[u8], fds: Vec<OwnedFd>) -> Result<T, CodecError> {
    handles::provide_fds(fds, || match postcard::take_from_bytes::<T>(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(CodecError::Decode(format!(
            "{} unexpected trailing bytes",
            rest.len()
        ))),
        Err(e) => Err(CodecError::Decode(reason(e))),
    })
}

/// Encodes `value` to plain postcard bytes (no header, no handles).
pub(crate) fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_allocvec(value).map_err(|e| CodecError::Encode(reason(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + DeserializeOwned + Any>(v: &T) -> T {
        let out = encode_fast(v, true).unwrap();
        let h = parse_header(&out.header, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(h.len as usize, out.payload.len());
        decode(Frame {
            kind: h.kind,
            payload: out.payload.into_owned(),
            fds: out.fds,
        })
        .unwrap()
    }

    #[test]
    fn values_roundtrip() {
        assert_eq!(
            roundtrip(&(1u8, "two".to_string(), vec![3.0f64])),
            (1, "two".into(), vec![3.0])
        );
        assert_eq!(roundtrip(&vec![7u8; 100_000]), vec![7u8; 100_000]);
        assert_eq!(roundtrip(&Option::<u64>::None), None);
    }

    #[test]
    fn bytes_fast_path_is_raw() {
        let v = vec![1u8, 2, 3];
        let out = encode_fast(&v, false).unwrap();
        assert_eq!(out.header[9], Kind::Bytes as u8);
        assert_eq!(&*out.payload, &[1, 2, 3]);
    }

    #[test]
    fn corrupt_payload_is_an_error_not_a_panic() {
        // Every truncation and every single-byte corruption of a valid encoding.
        let v = (u64::MAX, "héllo".to_string(), vec![Some(1u32), None]);
        let bytes = to_bytes(&v).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_value::<(u64, String, Vec<Option<u32>>)>(&bytes[..cut], vec![]).is_err());
        }
        for i in 0..bytes.len() {
            for x in [0u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = x;
                let _ = decode_value::<(u64, String, Vec<Option<u32>>)>(&b, vec![]);
            }
        }
        // A length prefix claiming far more than there is.
        let lie = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode_value::<Vec<u8>>(&lie, vec![]).is_err());
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut h = header(Kind::Value, 10, 0);
        h[8] = 99;
        assert!(matches!(parse_header(&h, 100), Err(CodecError::BadHeader(_))));
        let mut h = header(Kind::Value, 10, 0);
        h[9] = 7;
        assert!(matches!(parse_header(&h, 100), Err(CodecError::BadHeader(_))));
        let h = header(Kind::Value, 1000, 0);
        assert_eq!(
            parse_header(&h, 100).unwrap_err(),
            CodecError::TooLarge { len: 1000, max: 100 }
        );
    }

    #[test]
    fn bytes_frame_into_other_type_is_an_error() {
        let f = Frame {
            kind: Kind::Bytes,
            payload: vec![1, 2],
            fds: vec![],
        };
        assert!(decode::<String>(f).is_err());
    }

    #[test]
    fn handle_without_channel_is_an_error() {
        struct H(std::os::fd::OwnedFd);
        impl Serialize for H {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use std::os::fd::AsFd;
                handles::serialize_fd(self.0.as_fd(), s)
            }
        }
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        let err = encode(&H(fd), false).unwrap_err();
        assert!(err.to_string().contains("cannot travel"), "{err}");
    }
}
