//! HTTP/1.x as far as the gateway needs it (RFC 9112): the target of every request on a
//! connection and where each request ends, so that path classification and path grants hold
//! for each request — keep-alive and pipelining included — not only for the first.
//!
//! The gateway forwards a request only after its head parsed and its target was allowed, then
//! exactly its body (RFC 9112 §6.3: `Content-Length`, or `chunked`), then looks at the next.
//! What it cannot frame the way a service would is refused, never passed on: both
//! `Content-Length` and `Transfer-Encoding` (§6.1, request smuggling), conflicting lengths,
//! another transfer coding, `CONNECT` and `Upgrade` (after which the bytes are no longer
//! requests), a head over [`MAX_HEAD`]. HTTP/2 is not negotiated (the gateway offers no ALPN);
//! its preface is not an HTTP/1.x request and is refused.
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most bytes of one request's head (request line and header fields).
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
/// Most bytes of a chunk-size line or a trailer field line.
const MAX_LINE: usize = 4096;

/// How a request's body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked,
}

/// A request's head: its target (a path), the head's length in bytes and how its body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub target: String,
    pub len: usize,
    pub body: Body,
}

/// Why a connection's requests stopped being forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The client closed its side (or the connection failed) between requests.
    Closed,
    /// Bytes the gateway cannot frame as HTTP/1.x requests: why.
    Malformed(&'static str),
    /// A request whose target the connection may not carry.
    Refused(String),
}

/// The path of a request target: origin form as it is, absolute form's path; `None` for the
/// asterisk and authority forms.
pub fn path_of(target: &str) -> Option<String> {
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    path.starts_with('/').then(|| path.to_owned())
}

/// Parses the head of the request at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err("request head too long"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header fields"),
        Err(_) => return Err("not an HTTP/1.x request"),
    };
    if len > MAX_HEAD {
        return Err("request head too long");
    }
    if req.method == Some("CONNECT") {
        return Err("CONNECT (a tunnel cannot be checked per request)");
    }
    let target = req.path.and_then(path_of).ok_or("the request target is not a path")?;
    let (mut length, mut chunked) = (None, false);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| "a header value is not text")?.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let v: u64 = value.parse().map_err(|_| "bad Content-Length")?;
            if length.is_some_and(|l| l != v) {
                return Err("conflicting Content-Length fields");
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") || chunked {
                return Err("a transfer coding other than one chunked");
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return Err("Upgrade (an upgraded connection cannot be checked per request)");
        }
    }
    let body = match (length, chunked) {
        // RFC 9112 §6.1: a request with both is how requests are smuggled past a front end.
        (Some(_), true) => return Err("both Content-Length and Transfer-Encoding"),
        (_, true) => Body::Chunked,
        (l, false) => Body::Length(l.unwrap_or(0)),
    };
    Ok(Some(Head { target, len, body }))
}

/// Reads from `r` into `buf` until a whole request head is there and returns it (the bytes
/// stay in `buf`).
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<Head, Stop> {
    loop {
        match parse_head(buf) {
            Ok(Some(h)) => return Ok(h),
            Ok(None) => {}
            Err(why) => return Err(Stop::Malformed(why)),
        }
        if !fill(r, buf).await {
            return Err(if buf.is_empty() { Stop::Closed } else { Stop::Malformed("closed inside a request head") });
        }
    }
}

/// Forwards the client's requests to the service one at a time, each only after `allowed`
/// accepted its target; `buf` holds what was read from the client already. Returns why it
/// stopped; the caller closes the connection then.
pub async fn forward<R, W>(client: &mut R, service: &mut W, mut buf: Vec<u8>, allowed: impl Fn(&str) -> bool) -> Stop
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let head = match read_head(client, &mut buf).await {
            Ok(h) => h,
            Err(stop) => return stop,
        };
        if !allowed(&head.target) {
            return Stop::Refused(head.target);
        }
        let sent = match head.body {
            Body::Length(n) => copy_exact(client, service, &mut buf, head.len as u64 + n).await,
            Body::Chunked => match copy_exact(client, service, &mut buf, head.len as u64).await {
                Ok(()) => copy_chunked(client, service, &mut buf).await,
                Err(e) => Err(e),
            },
        };
        if let Err(stop) = sent {
            return stop;
        }
    }
}

/// Reads what is there into `buf`; false once the client closed (or failed).
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match r.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            true
        }
    }
}

/// Forwards exactly `n` bytes: first from `buf`, then as they come.
async fn copy_exact<R, W>(client: &mut R, service: &mut W, buf: &mut Vec<u8>, mut n: u64) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
        if take > 0 {
            service.write_all(buf.get(..take).unwrap_or_default()).await.map_err(|_| Stop::Closed)?;
            buf.drain(..take);
            n -= take as u64;
        }
        if n == 0 {
            return Ok(());
        }
        if !fill(client, buf).await {
            return Err(Stop::Closed);
        }
    }
}

/// Forwards one line (up to and with its CRLF) and returns it without the CRLF.
async fn copy_line<R, W>(client: &mut R, service: &mut W, buf: &mut Vec<u8>) -> Result<Vec<u8>, Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.get(..end).unwrap_or_default().to_vec();
            copy_exact(client, service, buf, end as u64 + 2).await?;
            return Ok(line);
        }
        if buf.len() > MAX_LINE {
            return Err(Stop::Malformed("a chunk line too long"));
        }
        if !fill(client, buf).await {
            return Err(Stop::Closed);
        }
    }
}

/// Forwards a chunked body (RFC 9112 §7.1): chunk-size lines, exactly each chunk's data and
/// its CRLF, the last chunk and the trailer section up to its empty line.
async fn copy_chunked<R, W>(client: &mut R, service: &mut W, buf: &mut Vec<u8>) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let line = copy_line(client, service, buf).await?;
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size).ok().filter(|s| !s.is_empty() && s.len() <= 15);
        let size = size.and_then(|s| u64::from_str_radix(s, 16).ok()).ok_or(Stop::Malformed("bad chunk size"))?;
        if size == 0 {
            while !copy_line(client, service, buf).await?.is_empty() {}
            return Ok(());
        }
        copy_exact(client, service, buf, size).await?;
        // The data must end with CRLF, or the service would frame the rest differently.
        if !copy_line(client, service, buf).await?.is_empty() {
            return Err(Stop::Malformed("chunk data longer than its size"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_and_smuggling_shapes_refused() {
        let h = parse_head(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest").unwrap().unwrap();
        assert_eq!((h.target.as_str(), h.len, h.body), ("/a?b", 30, Body::Length(0)));
        let h = parse_head(b"POST http://x/p HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.target.as_str(), h.body), ("/p", Body::Length(5)));
        let h = parse_head(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, Body::Chunked);
        assert_eq!(parse_head(b"GET /a HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse_head(&[b'a'; MAX_HEAD + 1]).is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends, framing it never panics, and a head found lies inside it.
        #[test]
        fn any_bytes_frame_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            if let Ok(Some(h)) = parse_head(&bytes) {
                proptest::prop_assert!(h.len <= bytes.len() && h.target.starts_with('/'));
            }
        }
    }

    async fn run(input: &[u8], allowed: &[&str]) -> (Stop, Vec<u8>) {
        let (mut client, mut service) = (input, Vec::new());
        let stop = forward(&mut client, &mut service, Vec::new(), |t| allowed.contains(&t)).await;
        (stop, service)
    }

    #[tokio::test]
    async fn each_request_is_checked_and_a_refused_one_is_never_forwarded() {
        let two = b"GET /part1 HTTP/1.1\r\nHost: x\r\n\r\nGET /test.html HTTP/1.1\r\nHost: x\r\n\r\n";
        let (stop, got) = run(two, &["/part1"]).await;
        assert_eq!(stop, Stop::Refused("/test.html".into()));
        assert_eq!(got, b"GET /part1 HTTP/1.1\r\nHost: x\r\n\r\n");
        let (stop, got) = run(two, &["/part1", "/test.html"]).await;
        assert_eq!((stop, got.as_slice()), (Stop::Closed, &two[..]));
    }

    #[tokio::test]
    async fn bodies_are_forwarded_exactly_and_the_next_request_is_checked() {
        let body = b"POST /u HTTP/1.1\r\nContent-Length: 23\r\n\r\nGET /test.html HTTP/1.1";
        let (stop, got) = run(&[&body[..], b"GET /test.html HTTP/1.1\r\n\r\n"].concat(), &["/u"]).await;
        assert_eq!((stop, got.as_slice()), (Stop::Refused("/test.html".into()), &body[..]));
        let chunked = b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nGET \r\n0\r\nT: 1\r\n\r\n";
        let (stop, got) = run(&[&chunked[..], b"GET /test.html HTTP/1.1\r\n\r\n"].concat(), &["/u"]).await;
        assert_eq!((stop, got.as_slice()), (Stop::Refused("/test.html".into()), &chunked[..]));
        let lying = b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nGET /test.html\r\n0\r\n\r\n";
        assert_eq!(run(lying, &["/u"]).await.0, Stop::Malformed("chunk data longer than its size"));
    }
}
