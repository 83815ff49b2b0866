//! A TCP proxy between the ledger and PostgreSQL that a test controls: pass traffic, refuse
//! new connections, black-hole (accept and never answer), or cut every open connection.
//! It runs on its own thread and runtime, so the ledger under test cannot starve it.

#![allow(dead_code, reason = "each test binary uses a different part of it")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass = 0,
    /// Close new connections at once (like a refused connection).
    Refuse = 1,
    /// Accept, read and drop everything, never answer; open connections hang too.
    BlackHole = 2,
}

/// The PostgreSQL server the tests use (`LEDGER_TEST_DSN`, else the local default), as a
/// socket address for [`Proxy::start`].
pub fn upstream() -> SocketAddr {
    let dsn = std::env::var(crate::common::DSN_ENV)
        .unwrap_or_else(|_| crate::common::DEFAULT_DSN.to_owned());
    let url = url::Url::parse(&dsn).unwrap();
    let host = match url.host_str().unwrap_or("127.0.0.1") {
        "localhost" => "127.0.0.1",
        h => h,
    };
    format!("{host}:{}", url.port().unwrap_or(5432))
        .parse()
        .unwrap()
}

/// Handle to a running proxy.
pub struct Proxy {
    /// Address the ledger should connect to.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Where new connections go ([`Proxy::retarget`]).
    upstream: Arc<Mutex<SocketAddr>>,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    _thread: std::thread::JoinHandle<()>,
    stop: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

impl Proxy {
    /// `dsn` with its host and port replaced by this proxy's: the same database, reached
    /// through the proxy.
    pub fn dsn(&self, dsn: &str) -> String {
        let mut url = url::Url::parse(dsn).unwrap();
        url.set_ip_host(self.addr.ip()).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.into()
    }

    /// Starts a proxy on 127.0.0.1 (ephemeral port) in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let target = Arc::new(Mutex::new(upstream));
        let to = Arc::clone(&target);
        let (generation, gen_rx) = watch::channel(0u64);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let m = Arc::clone(&mode);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let mode = Arc::clone(&m);
                        let gen_rx = gen_rx.clone();
                        let upstream = *to.lock().unwrap();
                        tokio::spawn(serve(client, upstream, mode, gen_rx));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        Proxy {
            addr: addr_rx.recv().expect("proxy started"),
            mode,
            upstream: target,
            generation,
            _thread: thread,
            stop: Arc::new(Mutex::new(Some(stop_tx))),
        }
    }

    /// Sets the mode for new and open connections.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Sends new connections to `upstream` from now on (open ones keep theirs: cut them with
    /// [`Proxy::cut_all`]), as a managed database's DNS name or virtual IP moves to a
    /// promoted standby.
    pub fn retarget(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }

    /// Closes every open connection (a network reset).
    pub fn cut_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut_all();
        if let Some(tx) = self.stop.lock().map(|mut s| s.take()).unwrap_or(None) {
            let _ = tx.send(());
        }
    }
}

fn mode_of(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        0 => Mode::Pass,
        1 => Mode::Refuse,
        _ => Mode::BlackHole,
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: Arc<AtomicU8>,
    mut gen_rx: watch::Receiver<u64>,
) {
    // Marked seen: a clone of the accept loop's receiver still holds every cut made before
    // this connection, and `changed()` would end a black-holed connection at once.
    let start_gen = *gen_rx.borrow_and_update();
    match mode_of(&mode) {
        Mode::Refuse => return,
        Mode::BlackHole => {
            // Swallow everything until cut.
            let mut buf = [0u8; 8192];
            loop {
                tokio::select! {
                    r = client.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                    _ = gen_rx.changed() => return,
                }
            }
        }
        Mode::Pass => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut a = [0u8; 16384];
    let mut b = [0u8; 16384];
    loop {
        tokio::select! {
            r = cr.read(&mut a) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if mode_of(&mode) == Mode::Pass && sw.write_all(&a[..n]).await.is_err() { return },
            },
            r = sr.read(&mut b) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if mode_of(&mode) == Mode::Pass && cw.write_all(&b[..n]).await.is_err() { return },
            },
            _ = gen_rx.changed() => if *gen_rx.borrow() != start_gen { return },
        }
    }
}
