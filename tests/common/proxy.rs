//! A byte-transparent TCP fault proxy for S3 tests: each connection is passed through, delayed,
//! cut after N bytes in either direction, reset, or blackholed. HTTP request heads going up are
//! parsed only to count requests per kind, so tests can compare them with what vault reports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to one request (and so to its connection).
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Pass,
    /// Hold the request this long before passing it on.
    Delay(Duration),
    /// Pass this many bytes of the request body, then cut the connection (mid-upload).
    CutUp(usize),
    /// Pass the request, then cut the connection after this many bytes of the answer: the
    /// server has committed the request but the client sees an error (the ambiguous case).
    CutDown(usize),
    /// Drop the connection as soon as the request head arrives.
    Reset,
    /// Swallow the request, never answer; close after this long.
    Blackhole(Duration),
    /// Swallow the request and never answer nor close: a connection whose packets are lost
    /// (only the client can give up on it).
    Hang,
    /// Pass the request; flip one bit of the answer's body at this offset (bytes damaged on
    /// the way down).
    FlipDown(usize),
    /// Flip one bit of the request's body at this offset (damaged on the way up).
    FlipUp(usize),
}

/// What the plan of a [`start_with`] proxy sees of a request.
pub struct Request<'a> {
    /// Its number, from 0, in the order heads arrived.
    pub n: u64,
    pub method: &'a str,
    pub target: &'a str,
    pub body_len: usize,
}

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    /// Connections that met a fault.
    pub faulted_connections: AtomicU64,
    pub faults: AtomicU64,
    /// Requests seen going up, by kind: PUT (with POST), GET, LIST, HEAD, DELETE.
    pub requests: Mutex<BTreeMap<String, u64>>,
    /// Bytes passed from the server to the client (answers, HTTP framing included).
    pub down: AtomicU64,
}

impl Stats {
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.requests.lock().unwrap().clone()
    }
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

type Plan = Arc<dyn Fn(&Request<'_>) -> Fault + Send + Sync>;

/// The address behind an `http://host:port` endpoint, for a proxy to forward to.
pub fn upstream(endpoint: &str) -> SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("endpoint is host:port")
}

/// Start a proxy to `upstream`; `plan(n)` decides the fate of the n-th request.
pub fn start(upstream: SocketAddr, plan: impl Fn(u64) -> Fault + Send + Sync + 'static) -> Proxy {
    start_with(upstream, move |r| plan(r.n))
}

/// Start a proxy to `upstream`; `plan` decides each request's fate from what it asks.
pub fn start_with(
    upstream: SocketAddr,
    plan: impl Fn(&Request<'_>) -> Fault + Send + Sync + 'static,
) -> Proxy {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stats = Arc::new(Stats::default());
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let plan: Plan = Arc::new(plan);
    let requests = Arc::new(AtomicU64::new(0));
    let st = stats.clone();
    rt.spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            st.connections.fetch_add(1, Ordering::Relaxed);
            let (st, plan, requests) = (st.clone(), plan.clone(), requests.clone());
            tokio::spawn(async move {
                let _ = handle(client, upstream, plan, requests, st).await;
            });
        }
    });
    Proxy {
        addr,
        stats,
        _rt: rt,
    }
}

fn cut() -> std::io::Error {
    std::io::Error::other("fault injected")
}

async fn handle(
    client: TcpStream,
    upstream: SocketAddr,
    plan: Plan,
    requests: Arc<AtomicU64>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Bytes of answer still allowed through; negative means no limit.
    let down_budget = Arc::new(AtomicI64::new(-1));
    let budget = down_budget.clone();
    // Body offset of the answer byte to flip (-1: none), and whether the answer is swallowed.
    let down_flip = Arc::new(AtomicI64::new(-1));
    let flip = down_flip.clone();
    let hung = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hang = hung.clone();
    let up = async {
        let mut parser = Parser::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut up_budget: Option<usize> = None;
        // Body offset of the request byte to flip.
        let mut up_flip: Option<usize> = None;
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                let _ = sw.shutdown().await;
                return Ok::<_, std::io::Error>(());
            }
            if hang.load(Ordering::SeqCst) {
                continue;
            }
            let mut data = &buf[..n];
            let mut flipped;
            while !data.is_empty() {
                let body_before = parser.body_left;
                let (used, head_done) = parser.feed(data, &stats);
                let mut part = &data[..used];
                data = &data[used..];
                if let Some(k) = up_flip {
                    // `part` is body bytes: the flip lands when its offset passes by.
                    let seen = parser.body_total - body_before;
                    if k >= seen && k < seen + part.len() {
                        flipped = part.to_vec();
                        flipped[k - seen] ^= 0x01;
                        part = &flipped;
                        up_flip = None;
                    }
                }
                if let Some(b) = up_budget.as_mut() {
                    let k = (*b).min(part.len());
                    sw.write_all(&part[..k]).await?;
                    *b -= k;
                    if *b == 0 {
                        return Err(cut());
                    }
                    part = &part[k..];
                    let _ = part;
                    continue;
                }
                sw.write_all(part).await?;
                if head_done {
                    let fault = plan(&Request {
                        n: requests.fetch_add(1, Ordering::Relaxed),
                        method: &parser.method,
                        target: &parser.target,
                        body_len: parser.body_left,
                    });
                    if !matches!(fault, Fault::Pass) {
                        stats.faults.fetch_add(1, Ordering::Relaxed);
                        if !matches!(fault, Fault::Delay(_)) {
                            stats.faulted_connections.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    match fault {
                        Fault::Pass => {}
                        Fault::Delay(d) => tokio::time::sleep(d).await,
                        Fault::CutUp(k) => {
                            if parser.body_left == 0 {
                                return Err(cut());
                            }
                            up_budget = Some(k.min(parser.body_left.saturating_sub(1)).max(1));
                        }
                        Fault::CutDown(k) => budget.store(k as i64, Ordering::SeqCst),
                        Fault::Reset => return Err(cut()),
                        Fault::Blackhole(d) => {
                            budget.store(0, Ordering::SeqCst);
                            tokio::time::sleep(d).await;
                            return Err(cut());
                        }
                        Fault::Hang => {
                            hang.store(true, Ordering::SeqCst);
                            break;
                        }
                        Fault::FlipDown(k) => flip.store(k as i64, Ordering::SeqCst),
                        Fault::FlipUp(k) => up_flip = Some(k),
                    }
                }
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        // Where the answer's body starts: after the first blank line of the answer.
        let mut head = Vec::new();
        let mut body_seen: Option<usize> = None;
        loop {
            let n = sr.read(&mut buf).await?;
            if hung.load(Ordering::SeqCst) {
                if n == 0 {
                    // The server gave up; the client must not hear of it.
                    std::future::pending::<()>().await;
                }
                continue;
            }
            if n == 0 {
                let _ = cw.shutdown().await;
                return Ok::<_, std::io::Error>(());
            }
            let k = down_flip.load(Ordering::SeqCst);
            if k >= 0 {
                let mut start = 0;
                if body_seen.is_none() {
                    head.extend_from_slice(&buf[..n]);
                    if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let body_in_buf = head.len() - (p + 4);
                        start = n - body_in_buf;
                        body_seen = Some(0);
                    }
                }
                if let Some(seen) = body_seen.as_mut() {
                    let here = n - start;
                    let k = k as usize;
                    if k >= *seen && k < *seen + here {
                        buf[start + (k - *seen)] ^= 0x01;
                        down_flip.store(-1, Ordering::SeqCst);
                    }
                    *seen += here;
                }
            }
            let b = down_budget.load(Ordering::SeqCst);
            if b >= 0 {
                let k = (b as usize).min(n);
                cw.write_all(&buf[..k]).await?;
                return Err(cut());
            }
            cw.write_all(&buf[..n]).await?;
            stats.down.fetch_add(n as u64, Ordering::Relaxed);
        }
    };
    // A cut in either direction drops both connections; a clean EOF waits for the other side.
    let _ = tokio::try_join!(up, down);
    Ok(())
}

/// Counts HTTP/1.1 requests in the client-to-server byte stream.
#[derive(Default)]
struct Parser {
    head: Vec<u8>,
    body_left: usize,
    /// The current request's body length, its method and target.
    body_total: usize,
    method: String,
    target: String,
}

impl Parser {
    /// Consume bytes up to and including the end of the next request head, if any. Returns how
    /// many bytes were consumed and whether a head was completed.
    fn feed(&mut self, data: &[u8], stats: &Stats) -> (usize, bool) {
        let mut i = 0;
        while i < data.len() {
            if self.body_left > 0 {
                let k = self.body_left.min(data.len() - i);
                self.body_left -= k;
                i += k;
                continue;
            }
            self.head.push(data[i]);
            i += 1;
            if self.head.ends_with(b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.head).into_owned();
                self.head.clear();
                let line = head.lines().next().unwrap_or("");
                let mut parts = line.split(' ');
                let method = parts.next().unwrap_or("");
                let target = parts.next().unwrap_or("");
                let kind = match method {
                    "GET" if target.contains("list-type=2") => "LIST",
                    "POST" => "PUT", // multipart create/complete, counted with PUT by vault
                    m => m,
                };
                *stats
                    .requests
                    .lock()
                    .unwrap()
                    .entry(kind.to_string())
                    .or_default() += 1;
                self.method = method.to_string();
                self.target = target.to_string();
                for h in head.lines() {
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            self.body_left = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                self.body_total = self.body_left;
                return (i, true);
            }
        }
        (i, false)
    }
}
