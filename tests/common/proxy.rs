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

type Plan = Arc<dyn Fn(u64) -> Fault + Send + Sync>;

/// Start a proxy to `upstream`; `plan(n)` decides the fate of the n-th request.
pub fn start(upstream: SocketAddr, plan: impl Fn(u64) -> Fault + Send + Sync + 'static) -> Proxy {
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
    let up = async {
        let mut parser = Parser::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut up_budget: Option<usize> = None;
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                let _ = sw.shutdown().await;
                return Ok::<_, std::io::Error>(());
            }
            let mut data = &buf[..n];
            while !data.is_empty() {
                let (used, head_done) = parser.feed(data, &stats);
                let mut part = &data[..used];
                data = &data[used..];
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
                    let fault = plan(requests.fetch_add(1, Ordering::Relaxed));
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
                    }
                }
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                let _ = cw.shutdown().await;
                return Ok::<_, std::io::Error>(());
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
                for h in head.lines() {
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            self.body_left = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                return (i, true);
            }
        }
        (i, false)
    }
}
