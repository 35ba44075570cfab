//! Length-prefixed frames: the one framing ferry uses, on a libp2p stream
//! and in bundle and frontier files. A frame is a u32 big-endian length,
//! then that many bytes. The reader checks the length against the caller's
//! maximum before it allocates anything for the frame.
//!
//! Written once, for async streams. Files use the same code through
//! `futures::io::AllowStdIo`, whose reads and writes never wait, so
//! `block_on` only runs them to their end.

use futures::io::AllowStdIo;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length prefix before every frame.
pub const PREFIX_BYTES: u64 = 4;

/// Why no frame could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The prefix announces more than the caller allows.
    TooLong { len: usize, max: usize },
    /// The input ended, or failed, inside the frame's bytes.
    Truncated(std::io::Error),
    /// Reading the prefix failed.
    Io(std::io::Error),
}

/// Writes one frame (prefix and bytes in one write) and flushes.
pub async fn write<W: AsyncWrite + Unpin + ?Sized>(out: &mut W, frame: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut buffer = Vec::with_capacity(frame.len() + PREFIX_BYTES as usize);
    buffer.extend_from_slice(&len.to_be_bytes());
    buffer.extend_from_slice(frame);
    out.write_all(&buffer).await?;
    out.flush().await
}

/// Reads one frame of at most `max` bytes; `None` where the input ends
/// before a prefix (a clean end).
pub async fn read<R: AsyncRead + Unpin + ?Sized>(input: &mut R, max: usize) -> Result<Option<Vec<u8>>, ReadError> {
    let mut prefix = [0u8; PREFIX_BYTES as usize];
    match input.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(ReadError::TooLong { len, max });
    }
    let mut frame = vec![0u8; len];
    input.read_exact(&mut frame).await.map_err(ReadError::Truncated)?;
    Ok(Some(frame))
}

/// `write` to a file or buffer.
pub fn write_blocking(out: &mut dyn std::io::Write, frame: &[u8]) -> std::io::Result<()> {
    futures::executor::block_on(write(&mut AllowStdIo::new(out), frame))
}

/// `read` from a file or buffer.
pub fn read_blocking(input: &mut dyn std::io::Read, max: usize) -> Result<Option<Vec<u8>>, ReadError> {
    futures::executor::block_on(read(&mut AllowStdIo::new(input), max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_a_big_endian_length_then_its_bytes_whichever_side_reads() {
        let mut bytes = Vec::new();
        write_blocking(&mut bytes, b"hello").expect("write");
        write_blocking(&mut bytes, b"").expect("write");
        assert_eq!(bytes, b"\0\0\0\x05hello\0\0\0\0");
        let mut input = std::io::Cursor::new(bytes.clone());
        assert_eq!(read_blocking(&mut input, 5).expect("read"), Some(b"hello".to_vec()));
        assert_eq!(read_blocking(&mut input, 5).expect("read"), Some(Vec::new()));
        assert_eq!(read_blocking(&mut input, 5).expect("read"), None);
        let mut stream = futures::io::Cursor::new(bytes);
        let first = futures::executor::block_on(read(&mut stream, 5)).expect("read");
        assert_eq!(first, Some(b"hello".to_vec()));
    }

    #[test]
    fn long_and_cut_frames_are_told_apart() {
        let framed = b"\0\0\0\x05hello";
        let too_long = read_blocking(&mut &framed[..], 4);
        assert!(matches!(too_long, Err(ReadError::TooLong { len: 5, max: 4 })), "{too_long:?}");
        let cut = read_blocking(&mut &framed[..7], 5);
        assert!(matches!(cut, Err(ReadError::Truncated(_))), "{cut:?}");
        // A prefix cut short is a clean end, as before: nothing of a frame arrived.
        assert!(matches!(read_blocking(&mut &framed[..2], 5), Ok(None)));
    }
}
