//! A C2SP tlog-witness over HTTP for tests and benchmarks: [`ledger_tlog::witness::Witness`]
//! (the checks and the cosigning) behind `POST /add-checkpoint`, on its own thread with its
//! own Tokio runtime. The state (latest checkpoint per origin) is kept in memory: a test
//! witness, not one to run in production (a real witness persists it before answering).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use ledger_tlog::witness::{Answer, SIZE_CONTENT_TYPE, Witness};

/// Largest request body accepted (63 proof lines and a note fit many times over).
const MAX_BODY: usize = 1 << 20;

/// A running test witness.
#[derive(Debug)]
pub struct RunningWitness {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, shared with the server (tests read the latest cosigned size).
    pub witness: Arc<Mutex<Witness>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningWitness {
    /// The submission prefix (`http://addr`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningWitness {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Answers one request.
async fn handle(
    witness: Arc<Mutex<Witness>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: u16, ctype: &str, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(v) = ctype.parse() {
            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        resp
    };
    if req.uri().path() != "/add-checkpoint" {
        return Ok(reply(404, "text/plain", "not found\n".into()));
    }
    if req.method() != Method::POST {
        return Ok(reply(405, "text/plain", "POST only\n".into()));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(
                400,
                "text/plain",
                "body too large or cut short\n".into(),
            ));
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // One lock around the check of `old` and the update: atomic, as the spec requires.
    let answer = witness
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add_checkpoint(&body, now);
    let ctype = match answer {
        Answer::Conflict(_) => SIZE_CONTENT_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    Ok(reply(answer.status(), ctype, answer.body()))
}

/// Starts `witness` on `listen` (port 0 picks one) on a new thread.
pub fn spawn(witness: Witness, listen: SocketAddr) -> std::io::Result<RunningWitness> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let witness = Arc::new(Mutex::new(witness));
    let shared = Arc::clone(&witness);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("test-witness".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut stop_rx => return,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    let w = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| handle(Arc::clone(&w), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })?;
    Ok(RunningWitness {
        addr,
        witness,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
