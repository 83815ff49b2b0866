//! `ledger serve`: the transparency log over plain HTTP, read-only, as the C2SP `tlog-tiles`
//! API at the root (`/checkpoint`, `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`),
//! plus `/receipt/<rid>` (what `ledger prove RID` prints). Paths, widths, bundles and
//! caching rules are `ledger_tlog::api`; this file is the server around them.
//!
//! What it never does: write (GET and HEAD only, no write endpoint; the database is only
//! read), serve a hash or entry the latest stored checkpoint does not cover (every tile and
//! bundle is cut to the tree size of that checkpoint, however far the integrator's tiles
//! have grown since), or panic on a path (a malformed one is a 400, an unknown one a 404).
//!
//! actix-web runs `--workers` threads, each with a single-threaded runtime and its own
//! database handles (the log's pool of two connections, and, at the first receipt, the
//! store's pool), so a connection is always driven by the runtime that opened it, and its own
//! cache of full tiles and bundles (`--tile-cache`; they never change, and a bundle is cached
//! only after its entries were checked against the tree).
//! `--max-connections` bounds open connections over all workers (further ones wait in the
//! listen backlog). SIGINT and SIGTERM both stop it gracefully: the listener closes, the
//! requests in flight finish (for at most `--shutdown-timeout`), then the process exits 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use ledger_actors::integrator::{LogStore, StoredCheckpoint};
use ledger_actors::metrics::labels;
use ledger_actors::{LedgerConfig, LedgerError, LedgerStore};
use ledger_tlog::api::{self, TileKind, TileRequest};
use ledger_tlog::tile::{TILE_WIDTH, TileId};

/// Arguments of `ledger serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port; the address taken
    /// is printed). Plain HTTP: put a TLS proxy in front of it for other machines.
    #[arg(long, env = "LEDGER_SERVE_LISTEN", value_name = "ADDR")]
    listen: SocketAddr,
    /// Worker threads (default: the machine's cores). Each holds at most two PostgreSQL
    /// connections for tiles and checkpoints, and two more once it served a receipt.
    #[arg(long, env = "LEDGER_SERVE_WORKERS", value_name = "N")]
    workers: Option<NonZeroUsize>,
    /// Open connections accepted at once, over all workers; further clients wait in the
    /// listen backlog.
    #[arg(
        long,
        env = "LEDGER_SERVE_MAX_CONNECTIONS",
        value_name = "N",
        default_value = "1024"
    )]
    max_connections: NonZeroUsize,
    /// How long a worker cuts tiles to the checkpoint it last read before reading it again
    /// (0s: every tile request reads it; one request per worker reads it at a time, the
    /// others use the previous one meanwhile). A tile beyond it is looked up again before a
    /// 404, and `/checkpoint` always reads it: this only bounds database reads.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    checkpoint_refresh: Duration,
    /// Full tiles and full entry bundles each worker keeps in memory (about 8.5 KiB each):
    /// they never change, so a cached one is served without reading the database. 0: none.
    #[arg(
        long,
        env = "LEDGER_SERVE_TILE_CACHE",
        value_name = "N",
        default_value = "2048"
    )]
    tile_cache: usize,
    /// On SIGINT/SIGTERM, how long requests in flight may take before the process exits.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
    #[command(flatten)]
    partition: crate::parts::PartitionArg,
}

/// Serves until SIGINT or SIGTERM; exit 0 after a graceful stop, 2 when it cannot start
/// (memory backend, database unreachable, schema not up to date, address taken).
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let config = args.partition.config(&config)?;
    // Fails on the memory backend, whose log lives only inside the process that appends.
    drop(ledger_actors::tlog::open_log(&config)?);
    let reading = LedgerConfig {
        auto_migrate: false,
        // Per worker: receipts read one record at a time.
        pool_size: 2,
        ..config
    };
    // Once, before listening: the database answers and its schema is this build's.
    drop(
        ledger_actors::pg::store::open(&reading)
            .await
            .context("opening the database")?,
    );
    ledger_actors::metrics::register_http();

    let workers = args
        .workers
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, NonZeroUsize::get));
    let per_worker = args.max_connections.get().div_ceil(workers).max(1);
    let refresh = args.checkpoint_refresh;
    let tile_cache = args.tile_cache;
    let factory_config = reading.clone();
    let server = HttpServer::new(move || {
        // Runs on each worker's thread: the handles it opens belong to that worker's runtime.
        let worker = Worker::open(&factory_config, refresh, tile_cache);
        App::new()
            .app_data(web::Data::new(worker))
            .default_service(web::to(answer))
    })
    .workers(workers)
    .max_connections(per_worker)
    .shutdown_timeout(args.shutdown_timeout.as_secs().max(1))
    .shutdown_signal(stop_signal())
    .bind(args.listen)
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    for addr in server.addrs() {
        println!("ledger serve: listening on http://{addr}");
    }
    // Tests and scripts wait for this line.
    use std::io::Write as _;
    std::io::stdout().flush().ok();
    server.run().await.context("serving")?;
    eprintln!("ledger serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves at the first SIGINT or SIGTERM (a graceful stop for both; actix's own handler
/// would make SIGINT a forced one).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One worker's handles.
struct Worker {
    config: LedgerConfig,
    /// The log (or why it could not be opened: the answer is then 503).
    log: Result<Arc<dyn LogStore>, String>,
    /// The record store, opened at the first receipt.
    store: tokio::sync::OnceCell<Arc<dyn LedgerStore>>,
    refresh: Duration,
    /// The latest checkpoint as last read, and when.
    checkpoint: Mutex<Option<(Instant, Arc<StoredCheckpoint>)>>,
    /// True while a request of this worker reads the checkpoint.
    refreshing: AtomicBool,
    /// Bodies of full tiles and full bundles already served.
    tiles: Mutex<TileCache>,
}

/// Full tiles and bundles by (entries?, tile), at most `capacity`; when full, an arbitrary
/// one makes room (random replacement: O(1), and no order to keep).
struct TileCache {
    capacity: usize,
    bodies: HashMap<(bool, TileId), Arc<[u8]>>,
}

impl TileCache {
    fn get(&self, key: &(bool, TileId)) -> Option<Arc<[u8]>> {
        self.bodies.get(key).cloned()
    }

    fn insert(&mut self, key: (bool, TileId), body: Arc<[u8]>) {
        if self.capacity == 0 {
            return;
        }
        if self.bodies.len() >= self.capacity
            && let Some(victim) = self.bodies.keys().next().copied()
        {
            self.bodies.remove(&victim);
        }
        self.bodies.insert(key, body);
    }
}

impl Worker {
    fn open(config: &LedgerConfig, refresh: Duration, tile_cache: usize) -> Self {
        // The pool connects lazily, so this cannot fail on the network; a configuration
        // error was already refused in `run`.
        let log = ledger_actors::tlog::open_log(config).map_err(|e| e.to_string());
        Self {
            config: config.clone(),
            log,
            store: tokio::sync::OnceCell::new(),
            refresh,
            checkpoint: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            tiles: Mutex::new(TileCache {
                capacity: tile_cache,
                bodies: HashMap::new(),
            }),
        }
    }

    fn log(&self) -> Result<&dyn LogStore, Reply> {
        self.log.as_deref().map_err(|e| {
            tracing::error!(error = %e, "the log cannot be opened");
            Reply::unavailable()
        })
    }

    async fn store(&self) -> Result<&Arc<dyn LedgerStore>, LedgerError> {
        self.store
            .get_or_try_init(|| async {
                let store =
                    ledger_actors::pg::store::PostgresLedgerStore::connect(&self.config).await?;
                Ok::<Arc<dyn LedgerStore>, LedgerError>(Arc::new(store))
            })
            .await
    }

    /// The latest stored checkpoint: read now when `fresh`, else possibly the one read at
    /// most `refresh` ago (then the flag returned is true).
    async fn checkpoint(
        &self,
        fresh: bool,
    ) -> Result<(Option<Arc<StoredCheckpoint>>, bool), Reply> {
        if !fresh && !self.refresh.is_zero() {
            // A poisoned lock only means a panic elsewhere while it was held: the cached
            // value is still a stored checkpoint.
            let cached = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, c)) = cached.as_ref()
                && (at.elapsed() < self.refresh || self.refreshing.load(Ordering::Acquire))
            {
                // Fresh enough, or another request of this worker is reading it now: one
                // read per worker at a time, not one per waiting request.
                return Ok((Some(Arc::clone(c)), true));
            }
        }
        let _reading = Refreshing::start(&self.refreshing);
        let latest = self
            .log()?
            .latest_checkpoint()
            .await
            .map_err(Reply::from_error)?
            .map(Arc::new);
        if let Some(c) = &latest {
            let mut cached = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
            // Never step back to an older checkpoint a slower concurrent read returned.
            if cached.as_ref().is_none_or(|(_, old)| old.size <= c.size) {
                *cached = Some((Instant::now(), Arc::clone(c)));
            }
        }
        Ok((latest, false))
    }
}

/// Marks a worker's checkpoint read in progress; cleared when dropped, also when the
/// request's future is dropped mid-read (the client went away).
struct Refreshing<'a>(&'a AtomicBool);

impl<'a> Refreshing<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// An answer before it becomes an [`HttpResponse`].
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    cache_control: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn ok(content_type: &'static str, cache_control: &'static str, body: Vec<u8>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type,
            cache_control,
            body,
        }
    }

    /// An error or "not there (yet)": plain text, never cached (a tile beyond the tree
    /// exists a moment later).
    fn text(status: StatusCode, message: impl Into<String>) -> Self {
        let mut body = message.into().into_bytes();
        body.push(b'\n');
        Self {
            status,
            content_type: api::CHECKPOINT_CONTENT_TYPE,
            cache_control: api::MUTABLE_CACHE_CONTROL,
            body,
        }
    }

    fn unavailable() -> Self {
        Self::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log's database is unavailable; try again",
        )
    }

    /// A database or log error. The client learns only its class; the operator's log has
    /// the rest (error texts never carry the DSN's secrets, but they name tables and hosts).
    fn from_error(e: LedgerError) -> Self {
        match e {
            LedgerError::Unavailable(_) | LedgerError::AccessDenied(_) => {
                tracing::warn!(error = %e, "the database cannot answer");
                Self::unavailable()
            }
            LedgerError::NotYetLogged(reason) => Self::text(StatusCode::NOT_FOUND, reason),
            other => {
                tracing::error!(error = %other, "cannot answer from the log");
                Self::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }

    /// The log's storage disagrees with itself: report it, answer 500.
    fn corrupt(what: String) -> Self {
        tracing::error!(problem = %what, "the stored log is inconsistent");
        Self::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored log is inconsistent; the operator has been told",
        )
    }

    fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, self.content_type));
        response.insert_header((header::CACHE_CONTROL, self.cache_control));
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.insert_header((header::ALLOW, HeaderValue::from_static("GET, HEAD")));
        }
        response.body(self.body)
    }
}

/// Every request: classify, answer, count.
async fn answer(req: HttpRequest, worker: web::Data<Worker>) -> HttpResponse {
    let started = Instant::now();
    let path = req.path();
    let route = route_of(path);
    let reply = if req.method() != Method::GET && req.method() != Method::HEAD {
        Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only: only GET and HEAD",
        )
    } else {
        let result = match route {
            labels::ROUTE_CHECKPOINT => checkpoint(&worker).await,
            labels::ROUTE_TILE | labels::ROUTE_ENTRIES => tile(&worker, path).await,
            labels::ROUTE_RECEIPT => receipt(&worker, path).await,
            _ => Err(Reply::text(StatusCode::NOT_FOUND, "no such resource")),
        };
        result.unwrap_or_else(|reply| reply)
    };
    ledger_actors::metrics::http_request(
        route,
        reply.status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    reply.into_response()
}

/// The route class of a path (bounded: one of [`labels::ROUTES`]).
fn route_of(path: &str) -> &'static str {
    if path == "/checkpoint" {
        labels::ROUTE_CHECKPOINT
    } else if path.starts_with("/tile/entries/") {
        labels::ROUTE_ENTRIES
    } else if path.starts_with("/tile/") {
        labels::ROUTE_TILE
    } else if path.starts_with("/receipt/") {
        labels::ROUTE_RECEIPT
    } else {
        labels::ROUTE_OTHER
    }
}

/// `/checkpoint`: the note `ledger checkpoint` prints, byte for byte. Always read now (and
/// it refreshes the worker's cached one): a client never gets an older note than the
/// database holds when it asks.
async fn checkpoint(worker: &Worker) -> Result<Reply, Reply> {
    let c = worker
        .checkpoint(true)
        .await?
        .0
        .ok_or_else(|| Reply::text(StatusCode::NOT_FOUND, "no checkpoint yet"))?;
    Ok(Reply::ok(
        api::CHECKPOINT_CONTENT_TYPE,
        api::MUTABLE_CACHE_CONTROL,
        ledger_actors::tlog::checkpoint_note(&c).into_bytes(),
    ))
}

/// `/tile/<L>/<N>[.p/<W>]` and `/tile/entries/<N>[.p/<W>]`.
async fn tile(worker: &Worker, path: &str) -> Result<Reply, Reply> {
    let request =
        api::parse(path).map_err(|e| Reply::text(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (latest, cached) = worker.checkpoint(false).await?;
    let mut size = latest.map_or(0, |c| c.size);
    if !api::covered(&request, size) && cached {
        // A client that just fetched a newer /checkpoint (from another worker) asks for its
        // tiles: look again before saying no.
        size = worker.checkpoint(true).await?.0.map_or(0, |c| c.size);
    }
    if !api::covered(&request, size) {
        return Err(Reply::text(
            StatusCode::NOT_FOUND,
            format!(
                "{} is not in the tree of the latest checkpoint (size {size})",
                request.path()
            ),
        ));
    }
    // A tile full in this tree never changes: read it whole once, keep it, and cut every
    // request (full, or an older size's `.p/<W>`) from it.
    let full = api::tile_width(request.tile(), size) == TILE_WIDTH;
    let key = (request.kind == TileKind::Entries, request.tile());
    // Bytes per hash or entry: AVL's entries are 32-byte hashes, 2 + 32 in a bundle.
    let per_item = match request.kind {
        TileKind::Hashes(_) => 32,
        TileKind::Entries => 34,
    };
    let cut = |body: &[u8]| body[..(request.width * per_item).min(body.len())].to_vec();
    if full && let Some(body) = lock(&worker.tiles).get(&key) {
        return Ok(Reply::ok(
            api::TILE_CONTENT_TYPE,
            api::IMMUTABLE_CACHE_CONTROL,
            cut(&body),
        ));
    }
    let read = TileRequest {
        width: if full { TILE_WIDTH } else { request.width },
        ..request
    };
    let log = worker.log()?;
    let hashes = read_tile(log, read.tile(), read.width).await?;
    let body = match read.kind {
        TileKind::Hashes(_) => ledger_tlog::tile::encode(&hashes),
        TileKind::Entries => entries(log, &read, &hashes).await?,
    };
    let reply = cut(&body);
    if full {
        lock(&worker.tiles).insert(key, Arc::from(body));
    }
    Ok(Reply::ok(
        api::TILE_CONTENT_TYPE,
        api::IMMUTABLE_CACHE_CONTROL,
        reply,
    ))
}

/// A worker's lock; a panic elsewhere while it was held leaves consistent data (every
/// update is one insert or remove), so carry on.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first `width` hashes of a stored tile (the stored one may be wider: the log has
/// grown since, or it is full and an older size's partial tile is asked for).
async fn read_tile(
    log: &dyn LogStore,
    id: TileId,
    width: usize,
) -> Result<Vec<ledger_tlog::Hash>, Reply> {
    let mut set = log.read_tiles(&[id]).await.map_err(Reply::from_error)?;
    let mut hashes = set.tiles.remove(&id).ok_or_else(|| {
        Reply::corrupt(format!(
            "tile {id:?} is covered by the checkpoint but not stored"
        ))
    })?;
    if hashes.len() < width {
        return Err(Reply::corrupt(format!(
            "tile {id:?} has {} hashes stored, the checkpoint covers {width}",
            hashes.len()
        )));
    }
    hashes.truncate(width);
    Ok(hashes)
}

/// The entry bundle for `request`: each leaf's record hash, checked against the level-0
/// tile (`leaves`) before it is served, so a bundle never disagrees with the tree.
async fn entries(
    log: &dyn LogStore,
    request: &TileRequest,
    leaves: &[ledger_tlog::Hash],
) -> Result<Vec<u8>, Reply> {
    let first = request.index * ledger_tlog::tile::TILE_WIDTH as u64;
    let rows = log
        .leaves(first, request.width)
        .await
        .map_err(Reply::from_error)?;
    if rows.len() != request.width {
        return Err(Reply::corrupt(format!(
            "leaves {first}..: {} stored, the checkpoint covers {}",
            rows.len(),
            request.width
        )));
    }
    let mut entries = Vec::with_capacity(rows.len());
    for ((i, row), leaf) in rows.iter().enumerate().zip(leaves) {
        let index = first + i as u64;
        let hash = row
            .hash
            .as_deref()
            .filter(|_| row.index == index)
            .and_then(|h| ledger_tlog::merkle::parse_hash(h).ok())
            .ok_or_else(|| Reply::corrupt(format!("leaf {index}: no stored record hash")))?;
        if api::entry_leaf(&hash) != *leaf {
            return Err(Reply::corrupt(format!(
                "leaf {index}: the record's hash does not hash to the stored leaf"
            )));
        }
        entries.push(hash);
    }
    api::entry_bundle(&entries).map_err(|e| Reply::corrupt(e.to_string()))
}

/// `/receipt/<rid>`: the receipt `ledger prove RID` prints, under the latest checkpoint.
async fn receipt(worker: &Worker, path: &str) -> Result<Reply, Reply> {
    let rid: uuid::Uuid = path
        .strip_prefix("/receipt/")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| Reply::text(StatusCode::BAD_REQUEST, "not a record id"))?;
    let log = worker.log()?;
    let store = worker.store().await.map_err(Reply::from_error)?;
    let receipt = ledger_actors::tlog::prove(store.as_ref(), log, rid)
        .await
        .map_err(Reply::from_error)?;
    let mut body = serde_json::to_string_pretty(&receipt)
        .map_err(|e| Reply::corrupt(format!("receipt to JSON: {e}")))?;
    body.push('\n');
    Ok(Reply::ok(
        "application/json",
        api::MUTABLE_CACHE_CONTROL,
        body.into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_cache_stays_bounded() {
        let key = |i| (false, TileId { level: 0, index: i });
        let mut cache = TileCache {
            capacity: 3,
            bodies: HashMap::new(),
        };
        for i in 0..10 {
            cache.insert(key(i), Arc::from(vec![i as u8; 4]));
            assert!(cache.bodies.len() <= 3);
            assert_eq!(cache.get(&key(i)).as_deref(), Some(&[i as u8; 4][..]));
        }
        let mut none = TileCache {
            capacity: 0,
            bodies: HashMap::new(),
        };
        none.insert(key(1), Arc::from(vec![1u8]));
        assert!(none.get(&key(1)).is_none());
    }

    #[test]
    fn routes_are_bounded() {
        assert_eq!(route_of("/checkpoint"), labels::ROUTE_CHECKPOINT);
        assert_eq!(route_of("/checkpoint/"), labels::ROUTE_OTHER);
        assert_eq!(route_of("/tile/0/000"), labels::ROUTE_TILE);
        assert_eq!(route_of("/tile/entries/000"), labels::ROUTE_ENTRIES);
        assert_eq!(route_of("/receipt/x"), labels::ROUTE_RECEIPT);
        assert_eq!(route_of("/"), labels::ROUTE_OTHER);
        for path in ["/a", "/tile", "/checkpointx", "/receipt"] {
            assert!(labels::ROUTES.contains(&route_of(path)), "{path}");
        }
    }
}
