//! An incremental reader of `multipart/related` bodies (RFC 2046), the form WADO-RS returns a series
//! in: one DICOM object per part. Bytes are pulled from the response as they arrive; only the part
//! being read (and one read's worth of look-ahead) is held in memory.

use std::io::Read;

/// Bytes pulled from the body per read.
const READ_CHUNK: usize = 64 * 1024;
/// A part's header block larger than this is not a WADO-RS response.
const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("reading the multipart body: {0}")]
    Io(#[from] std::io::Error),
    #[error("Content-Type {0:?} has no multipart boundary")]
    NoBoundary(String),
    #[error("multipart body ended {0}")]
    Truncated(&'static str),
    #[error("multipart body is malformed: {0}")]
    Malformed(&'static str),
}

/// The `boundary` parameter of a `multipart/...` Content-Type, unquoted.
pub fn boundary_of(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or_default().trim();
    if !media.to_ascii_lowercase().starts_with("multipart/") {
        return Err(MultipartError::NoBoundary(content_type.into()));
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or_else(|| MultipartError::NoBoundary(content_type.into()))
}

/// One part: its headers (names lower-cased) and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Pulls parts one at a time out of a multipart body.
pub struct MultipartReader<R> {
    source: R,
    /// `--boundary`: the first delimiter may start the body without the CRLF before it.
    dash_boundary: Vec<u8>,
    /// `\r\n--boundary`: every later delimiter.
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    eof: bool,
    started: bool,
    done: bool,
    /// Bytes pulled from `source` so far.
    pub bytes_read: u64,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<R: Read> MultipartReader<R> {
    pub fn new(source: R, boundary: &str) -> MultipartReader<R> {
        let dash_boundary = [b"--".as_slice(), boundary.as_bytes()].concat();
        let delimiter = [b"\r\n".as_slice(), &dash_boundary].concat();
        MultipartReader {
            source,
            dash_boundary,
            delimiter,
            buf: Vec::new(),
            eof: false,
            started: false,
            done: false,
            bytes_read: 0,
        }
    }

    /// Reads more bytes; false at the end of the body.
    fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.eof {
            return Ok(false);
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let n = loop {
            match self.source.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e.into());
                }
            }
        };
        self.buf.truncate(old + n);
        self.bytes_read += n as u64;
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// Skips the preamble up to and including the first boundary.
    fn start(&mut self) -> Result<(), MultipartError> {
        if !self.need(self.dash_boundary.len())? {
            return Err(MultipartError::Truncated("before the first boundary"));
        }
        if self.buf.starts_with(&self.dash_boundary) {
            self.buf.drain(..self.dash_boundary.len());
            self.started = true;
            return Ok(());
        }
        loop {
            if let Some(i) = find(&self.buf, &self.delimiter) {
                self.buf.drain(..i + self.delimiter.len());
                self.started = true;
                return Ok(());
            }
            // Keep what may be the start of a delimiter split across reads.
            let keep = (self.delimiter.len() - 1).min(self.buf.len());
            self.buf.drain(..self.buf.len() - keep);
            if !self.fill()? {
                return Err(MultipartError::Truncated("before the first boundary"));
            }
        }
    }

    /// Ensures at least `n` bytes are buffered; false if the body ends first.
    fn need(&mut self, n: usize) -> Result<bool, MultipartError> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next part, or `None` after the closing boundary.
    pub fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        if self.done {
            return Ok(None);
        }
        if !self.started {
            self.start()?;
        }
        // After a boundary: `--` closes the body; otherwise optional blanks, then CRLF.
        if !self.need(2)? {
            return Err(MultipartError::Truncated("after a boundary"));
        }
        if self.buf.starts_with(b"--") {
            self.done = true;
            return Ok(None);
        }
        let headers_at = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                if self.buf[..i].iter().any(|b| !matches!(b, b' ' | b'\t')) {
                    return Err(MultipartError::Malformed("text after a boundary on its line"));
                }
                break i + 2;
            }
            if self.buf.len() > MAX_HEADER_BYTES || !self.fill()? {
                return Err(MultipartError::Truncated("in a boundary line"));
            }
        };
        self.buf.drain(..headers_at);
        let headers = self.read_headers()?;
        let body = self.read_body()?;
        Ok(Some(Part { headers, body }))
    }

    fn read_headers(&mut self) -> Result<Vec<(String, String)>, MultipartError> {
        // A part with no headers starts with the blank line right away.
        let end = loop {
            if self.buf.starts_with(b"\r\n") {
                break 0;
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 2;
            }
            if self.buf.len() > MAX_HEADER_BYTES {
                return Err(MultipartError::Malformed("part headers too long"));
            }
            if !self.fill()? {
                return Err(MultipartError::Truncated("in part headers"));
            }
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 2);
        let mut headers = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or(MultipartError::Malformed("part header line without a colon"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        Ok(headers)
    }

    /// The bytes up to the next delimiter; the delimiter is consumed.
    fn read_body(&mut self) -> Result<Vec<u8>, MultipartError> {
        let mut body = Vec::new();
        let mut searched = 0;
        loop {
            if let Some(i) = find(&self.buf[searched..], &self.delimiter) {
                let at = searched + i;
                body.extend_from_slice(&self.buf[..at]);
                self.buf.drain(..at + self.delimiter.len());
                return Ok(body);
            }
            // Move what cannot hold the start of a delimiter into the body.
            let keep = (self.delimiter.len() - 1).min(self.buf.len());
            let safe = self.buf.len() - keep;
            body.extend_from_slice(&self.buf[..safe]);
            self.buf.drain(..safe);
            searched = 0;
            if !self.fill()? {
                return Err(MultipartError::Truncated("inside a part (no closing boundary)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes `step` at a time, so that every boundary is split across reads.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len() - self.at);
            out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn parts(body: &[u8], boundary: &str, step: usize) -> Result<Vec<Part>, MultipartError> {
        let mut r = MultipartReader::new(
            Trickle {
                bytes: body.to_vec(),
                at: 0,
                step,
            },
            boundary,
        );
        let mut all = Vec::new();
        while let Some(p) = r.next_part()? {
            all.push(p);
        }
        Ok(all)
    }

    /// Bodies that contain CRLFs, dashes and prefixes of the delimiter (never all of it: the
    /// sender picks a boundary that does not occur in the data).
    fn payloads() -> Vec<Vec<u8>> {
        vec![
            b"\r\n--boun\r\n-bound\r\n--boun".to_vec(),
            (0..=255u8).cycle().take(70_000).collect(),
            Vec::new(),
            b"--".to_vec(),
        ]
    }

    fn body(boundary: &str, preamble: &[u8], payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut b = preamble.to_vec();
        for (i, p) in payloads.iter().enumerate() {
            if i > 0 || !preamble.is_empty() {
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\nX-N: {i}\r\n\r\n").as_bytes(),
            );
            b.extend_from_slice(p);
        }
        b.extend_from_slice(format!("\r\n--{boundary}--\r\nepilogue").as_bytes());
        b
    }

    #[test]
    fn parts_survive_every_split_of_the_stream() {
        let boundary = "bound";
        for preamble in [&b""[..], b"preamble text\r\nmore"] {
            let b = body(boundary, preamble, &payloads());
            for step in [1, 2, 3, 7, 64, 1 << 20] {
                let got = parts(&b, boundary, step).unwrap();
                assert_eq!(got.len(), payloads().len(), "step {step}");
                for (i, (p, want)) in got.iter().zip(payloads()).enumerate() {
                    assert_eq!(p.body, want, "part {i}, step {step}");
                    assert_eq!(p.header("content-type"), Some("application/dicom"));
                    assert_eq!(p.header("X-N"), Some(i.to_string().as_str()));
                }
            }
        }
    }

    #[test]
    fn truncated_bodies_are_errors_not_short_parts() {
        let b = body("bound", b"", &payloads());
        // Cut inside the last part, and just before the closing boundary's dashes.
        for cut in [b.len() / 2, b.len() - "--\r\nepilogue".len() - 1, 5] {
            let e = parts(&b[..cut], "bound", 3).unwrap_err();
            assert!(matches!(e, MultipartError::Truncated(_)), "cut {cut}: {e}");
        }
    }

    #[test]
    fn boundary_comes_from_the_content_type() {
        let ct = r#"multipart/related; type="application/dicom"; boundary="a1:b 2""#;
        assert_eq!(boundary_of(ct).unwrap(), "a1:b 2");
        assert_eq!(boundary_of("multipart/related;boundary=xyz").unwrap(), "xyz");
        assert!(boundary_of("application/dicom").is_err());
        assert!(boundary_of("multipart/related; type=x").is_err());
    }

    #[test]
    fn a_part_with_no_headers_and_lf_only_noise_in_the_body() {
        let b = b"--b\r\n\r\nline1\nline2\r\n--b--";
        let got = parts(b, "b", 1).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].headers.is_empty());
        assert_eq!(got[0].body, b"line1\nline2");
    }
}
