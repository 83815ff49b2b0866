//! `ledger serve` end to end against a real PostgreSQL (a database per test), through the
//! binary and plain HTTP: the log grown through sizes 1, 255, 256, 257 and 65,537 (around
//! tile boundaries), and at each size the tiles and entry bundles fetched over HTTP equal
//! the stored tree (the root recomputed from fetched tiles is the checkpoint's, the bytes
//! are the stored tiles', each entry hashes to its leaf and is the stored record's hash),
//! inclusion proofs computed from fetched tiles verify against the checkpoint, the partial
//! tiles and bundles of every earlier size are still served and are prefixes of today's,
//! nothing beyond the checkpoint is served; `/checkpoint` is `ledger checkpoint`'s output
//! byte for byte, `/receipt/<rid>` is `ledger prove`'s and passes `ledger verify-receipt`;
//! malformed paths get 400, unknown ones 404, writes 405; SIGINT stops it with exit 0.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};

use common::TestContext;
use ledger_tlog::Hash;
use ledger_tlog::api::{self, TileKind, TileRequest};
use ledger_tlog::merkle::{inclusion_proof, leaf_hash, parse_hash, tree_root, verify_inclusion};
use ledger_tlog::note::{Checkpoint, NoteVerifier};
use ledger_tlog::tile::{TILE_WIDTH, TileId, TileSet, decode};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use support::{command, ledger, stderr, stdout};

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// `METHOD path` over a fresh connection (HTTP/1.1, `Connection: close`).
fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no header end in {raw:?}"));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<HashMap<_, _>>();
    if let Some(len) = headers.get("content-length")
        && method != "HEAD"
    {
        assert_eq!(len.parse::<usize>().unwrap(), body.len(), "{path}");
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path)
}

/// GET that must answer 200: its body.
fn fetch(addr: SocketAddr, path: &str) -> Vec<u8> {
    let a = get(addr, path);
    assert_eq!(
        a.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&a.body)
    );
    a.body
}

/// A `ledger serve` child, killed if the test fails before stopping it.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGINT to the server: it must stop gracefully (exit 0, its "stopped" line, nothing
/// listening any more). Returns its standard error.
fn stop(mut server: Server, addr: SocketAddr) -> String {
    let mut child = server.0.take().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("ledger serve: stopped"), "{err}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after the stop"
    );
    err
}

/// `ledger serve` on a free port: the child and its address.
fn start_serve(dsn: &str) -> (Server, SocketAddr) {
    let mut child = command(dsn, &["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("ledger serve: listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Server(Some(child)), addr)
}

/// Grows the log by `anchors × per_anchor` records (signed checkpoints every 0.2 s) and
/// waits until a checkpoint covers them all.
fn grow(dsn: &str, key: &Path, anchors: usize, per_anchor: usize, expected_size: u64) {
    let out = command(
        dsn,
        &[
            "loadtest",
            "--anchors",
            &anchors.to_string(),
            "--appends-per-anchor",
            &per_anchor.to_string(),
            "--concurrency",
            "64",
            "--json",
        ],
    )
    .env("LEDGER_CHECKPOINT_KEY", key)
    .env("LEDGER_CHECKPOINT_INTERVAL", "0.2")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["errors"], 0);
    assert_eq!(result["integration"]["covers_all_appends"], true);
    assert_eq!(result["checkpoint"]["size"], expected_size);
}

/// What the database holds: every tile, and the record hash of every leaf in order.
async fn stored(ctx: &TestContext) -> (HashMap<TileId, Vec<Hash>>, Vec<Hash>) {
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT level, idx, hashes FROM ledger_tiles",
        ))
        .await
        .unwrap();
    let tiles = rows
        .iter()
        .map(|r| {
            let level: i16 = r.try_get("", "level").unwrap();
            let idx: i64 = r.try_get("", "idx").unwrap();
            let bytes: Vec<u8> = r.try_get("", "hashes").unwrap();
            (
                TileId {
                    level: u8::try_from(level).unwrap(),
                    index: u64::try_from(idx).unwrap(),
                },
                decode(&bytes).unwrap(),
            )
        })
        .collect();
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT r.hash FROM ledger_log l JOIN ledger_records r ON r.rid = l.rid \
             ORDER BY l.leaf_index",
        ))
        .await
        .unwrap();
    let leaves = rows
        .iter()
        .map(|r| parse_hash(&r.try_get::<String>("", "hash").unwrap()).unwrap())
        .collect();
    (tiles, leaves)
}

/// Every tile request a tree of `size` leaves answers (hashes of each level, then the
/// entry bundles), at its width in that tree.
fn requests(size: u64) -> Vec<TileRequest> {
    let mut out = Vec::new();
    for level in 0..8u8 {
        for index in 0.. {
            let width = api::tile_width(TileId { level, index }, size);
            if width == 0 {
                break;
            }
            out.push(TileRequest {
                kind: TileKind::Hashes(level),
                index,
                width,
            });
            if level == 0 {
                out.push(TileRequest {
                    kind: TileKind::Entries,
                    index,
                    width,
                });
            }
        }
    }
    out
}

/// What one size's check keeps for later sizes: its checkpoint, and the bytes of every
/// tile and bundle it fetched.
struct Snapshot {
    size: u64,
    root: Hash,
    fetched: BTreeMap<String, Vec<u8>>,
}

/// Checks the server at the log's current size (see the module doc); returns what a later
/// size re-checks.
fn check_size(
    rt: &tokio::runtime::Runtime,
    ctx: &TestContext,
    addr: SocketAddr,
    verifier: &NoteVerifier,
    size: u64,
    earlier: &[Snapshot],
) -> Snapshot {
    // /checkpoint: `ledger checkpoint`'s bytes, signed, at this size.
    let served = get(addr, "/checkpoint");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), api::CHECKPOINT_CONTENT_TYPE);
    assert_eq!(served.header("cache-control"), api::MUTABLE_CACHE_CONTROL);
    let printed = ledger(&ctx.dsn, &["checkpoint"], "");
    assert_eq!(printed.status.code(), Some(0), "{}", stderr(&printed));
    assert_eq!(
        served.body, printed.stdout,
        "/checkpoint differs from `ledger checkpoint`"
    );
    let note = String::from_utf8(served.body).unwrap();
    let checkpoint = Checkpoint::parse(verifier.open(&note).unwrap()).unwrap();
    assert_eq!(checkpoint.size, size);

    // Every tile and bundle of this size, as the spec names them.
    let (stored_tiles, stored_leaves) = rt.block_on(stored(ctx));
    assert_eq!(stored_leaves.len() as u64, size);
    let mut set = TileSet::default();
    let mut fetched = BTreeMap::new();
    let mut entries: Vec<Hash> = Vec::new();
    for r in requests(size) {
        let path = format!("/{}", r.path());
        let answer = get(addr, &path);
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(
            answer.header("content-type"),
            api::TILE_CONTENT_TYPE,
            "{path}"
        );
        assert_eq!(
            answer.header("cache-control"),
            api::IMMUTABLE_CACHE_CONTROL,
            "{path}"
        );
        let tile = r.tile();
        let stored = &stored_tiles[&tile];
        match r.kind {
            TileKind::Hashes(_) => {
                let hashes = decode(&answer.body).unwrap();
                assert_eq!(hashes.len(), r.width, "{path}");
                assert_eq!(
                    &stored[..r.width],
                    &hashes[..],
                    "{path} is not the stored tile"
                );
                set.insert(tile, hashes);
            }
            TileKind::Entries => {
                let bundle = api::parse_entry_bundle(&answer.body).unwrap();
                assert_eq!(bundle.len(), r.width, "{path}");
                for (i, entry) in bundle.iter().enumerate() {
                    let leaf = r.index as usize * TILE_WIDTH + i;
                    let entry: Hash = (*entry).try_into().unwrap();
                    assert_eq!(entry, stored_leaves[leaf], "{path}: entry {i}");
                    assert_eq!(leaf_hash(&entry), stored[i], "{path}: entry {i}'s leaf");
                    entries.push(entry);
                }
            }
        }
        fetched.insert(path, answer.body);
    }
    assert_eq!(entries.len() as u64, size);

    // The tree from fetched tiles alone: its root is the checkpoint's, and inclusion proofs
    // computed from them verify against it.
    assert_eq!(
        tree_root(size, &set).unwrap(),
        checkpoint.root,
        "root at {size}"
    );
    let mut indexes = vec![
        0,
        size / 2,
        size - 1,
        size.saturating_sub(256),
        255.min(size - 1),
    ];
    indexes.dedup();
    for i in indexes {
        let proof = inclusion_proof(i, size, &set).unwrap();
        verify_inclusion(
            i,
            size,
            &leaf_hash(&entries[i as usize]),
            &proof,
            &checkpoint.root,
        )
        .unwrap_or_else(|e| panic!("leaf {i} of {size}: {e}"));
    }

    // Nothing beyond the checkpoint: the tile after the last of each level, the full tile
    // of a partial one, a partial tile one wider than the tree.
    let all = requests(size);
    for r in all.iter().copied().filter(|r| {
        !all.iter()
            .any(|n| n.kind == r.kind && n.index == r.index + 1)
    }) {
        let next = TileRequest {
            index: r.index + 1,
            width: 1,
            ..r
        };
        let a = get(addr, &format!("/{}", next.path()));
        assert_eq!(a.status, 404, "{}", next.path());
        assert_eq!(a.header("cache-control"), api::MUTABLE_CACHE_CONTROL);
        if r.is_partial() {
            for beyond in [
                TileRequest {
                    width: TILE_WIDTH,
                    ..r
                },
                TileRequest {
                    width: r.width + 1,
                    ..r
                },
            ] {
                if beyond.width <= TILE_WIDTH {
                    let a = get(addr, &format!("/{}", beyond.path()));
                    assert_eq!(a.status, 404, "{} at size {size}", beyond.path());
                }
            }
        }
    }

    // Every earlier size's tiles and bundles are still served, unchanged, and each is a
    // prefix of today's; the earlier roots follow from them.
    for old in earlier {
        let mut old_set = TileSet::default();
        for (path, bytes) in &old.fetched {
            let again = fetch(addr, path);
            assert_eq!(&again, bytes, "{path} (size {}) changed", old.size);
            let r = api::parse(path).unwrap();
            let now = requests(size)
                .into_iter()
                .find(|n| n.kind == r.kind && n.index == r.index)
                .unwrap();
            let today = &fetched[&format!("/{}", now.path())];
            assert!(
                today.starts_with(bytes),
                "{path} is not a prefix of {}",
                now.path()
            );
            if let TileKind::Hashes(_) = r.kind {
                old_set.insert(r.tile(), decode(bytes).unwrap());
            }
        }
        assert_eq!(tree_root(old.size, &old_set).unwrap(), old.root);
    }
    Snapshot {
        size,
        root: checkpoint.root,
        fetched,
    }
}

/// See the module doc.
#[test]
fn serve_answers_the_stored_tree_at_tile_boundaries() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = rt.block_on(TestContext::new("cli_serve"));
    let dir = std::env::temp_dir().join(format!("avl-cli-serve-{}", uuid::Uuid::new_v4()));
    let out = ledger(
        &ctx.dsn,
        &[
            "keygen",
            "--origin",
            "example.com/avl-serve",
            "--out",
            dir.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let key = dir.join("checkpoint.key");
    let public = dir.join("checkpoint.pub");
    let verifier = NoteVerifier::parse(&std::fs::read_to_string(&public).unwrap()).unwrap();

    let (server, addr) = start_serve(&ctx.dsn);

    // Before any checkpoint: nothing to serve, and no tile either.
    assert_eq!(get(addr, "/checkpoint").status, 404);
    assert_eq!(get(addr, "/tile/0/000.p/1").status, 404);
    assert_eq!(get(addr, "/tile/entries/000.p/1").status, 404);

    let mut snapshots: Vec<Snapshot> = Vec::new();
    let mut size = 0u64;
    for (anchors, per_anchor) in [(1, 1), (2, 127), (1, 1), (1, 1), (255, 256)] {
        size += (anchors * per_anchor) as u64;
        grow(&ctx.dsn, &key, anchors, per_anchor, size);
        let snapshot = check_size(&rt, &ctx, addr, &verifier, size, &snapshots);
        snapshots.push(snapshot);
    }
    assert_eq!(size, 65_537);

    // Paths as the spec writes them, by hand: 65,537 leaves are 256 full level-0 tiles and
    // one of width 1, one full level-1 tile (and no partial one: 65,537 / 256 is 256), one
    // level-2 tile of width 1.
    for (path, len) in [
        ("/tile/0/000", 8192),
        ("/tile/0/255", 8192),
        ("/tile/0/256.p/1", 32),
        ("/tile/0/000.p/255", 255 * 32),
        ("/tile/1/000", 8192),
        ("/tile/2/000.p/1", 32),
        ("/tile/entries/255", 256 * 34),
        ("/tile/entries/256.p/1", 34),
    ] {
        assert_eq!(fetch(addr, path).len(), len, "{path}");
    }
    for path in [
        "/tile/0/256",
        "/tile/1/001",
        "/tile/1/001.p/1",
        "/tile/2/000",
        "/tile/3/000.p/1",
        "/tile/0/x001/000",
    ] {
        assert_eq!(get(addr, path).status, 404, "{path}");
    }
    // Malformed tile paths: 400; unknown resources: 404; writes: 405.
    for path in [
        "/tile/00/000",
        "/tile/64/000",
        "/tile/0/0",
        "/tile/0/x000/256",
        "/tile/0/001/000",
        "/tile/0/000.p/0",
        "/tile/0/000.p/256",
        "/tile/0/000.p/05",
        "/tile/entries/abc",
        "/tile/entries/000.p/",
        "/tile/x/000",
        "/tile/0/%30%30%30",
        "/receipt/not-a-record-id",
        "/receipt/",
    ] {
        let a = get(addr, path);
        assert_eq!(
            a.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    for path in ["/", "/checkpoint/", "/tiles/0/000", "/metrics"] {
        assert_eq!(get(addr, path).status, 404, "{path}");
    }
    let unknown = format!("/receipt/{}", uuid::Uuid::new_v4());
    assert_eq!(get(addr, &unknown).status, 404);
    for method in ["POST", "PUT", "DELETE"] {
        let a = request(addr, method, "/checkpoint");
        assert_eq!(a.status, 405, "{method}");
        assert_eq!(a.header("allow"), "GET, HEAD");
    }
    let head = request(addr, "HEAD", "/tile/0/000");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "8192");
    assert!(head.body.is_empty(), "HEAD has no body");

    // /receipt/<rid>: `ledger prove RID` byte for byte, and it verifies offline.
    let row = rt
        .block_on(ctx.db.query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT rid::text AS rid FROM ledger_log WHERE leaf_index = 65536",
        )))
        .unwrap()
        .unwrap();
    let rid: String = row.try_get("", "rid").unwrap();
    let served = get(addr, &format!("/receipt/{rid}"));
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), "application/json");
    let proved = ledger(&ctx.dsn, &["prove", &rid], "");
    assert_eq!(proved.status.code(), Some(0), "{}", stderr(&proved));
    assert_eq!(
        served.body, proved.stdout,
        "/receipt differs from `ledger prove`"
    );
    let file = dir.join("receipt.json");
    std::fs::write(&file, &served.body).unwrap();
    let verified = ledger(
        &ctx.dsn,
        &[
            "verify-receipt",
            file.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains("is leaf 65536 of 65537"),
        "{}",
        stdout(&verified)
    );

    // Tiles the integrator wrote past the latest checkpoint are not served: the partial
    // level-0 tile grown by one hash in the database is still cut to the checkpoint's width.
    let before = fetch(addr, "/tile/0/256.p/1");
    let exec = |sql: &str| {
        rt.block_on(ctx.db.execute_unprepared(sql)).unwrap();
    };
    exec(
        "UPDATE ledger_tiles SET hashes = hashes || decode(repeat('ab', 32), 'hex'), \
         width = width + 1 WHERE level = 0 AND idx = 256",
    );
    assert_eq!(get(addr, "/tile/0/256.p/2").status, 404);
    assert_eq!(get(addr, "/tile/entries/256.p/2").status, 404);
    assert_eq!(fetch(addr, "/tile/0/256.p/1"), before);
    // A full tile or bundle a worker served is kept by it (they never change). The stored
    // tile 0 is then corrupted: a new server reads the database, and an entry that does not
    // hash to its stored leaf is never served (500, and the operator's log says why); the
    // first server answers from what it verified.
    let tile0 = fetch(addr, "/tile/0/000");
    // Four connections in a row: actix hands them to its two workers in turn.
    let bundle0 = fetch(addr, "/tile/entries/000");
    for _ in 0..3 {
        assert_eq!(fetch(addr, "/tile/entries/000"), bundle0);
    }
    let bundle1 = fetch(addr, "/tile/entries/001");
    exec(
        "UPDATE ledger_tiles SET hashes = overlay(hashes placing decode(repeat('00', 32), 'hex') \
         from 1 for 32) WHERE level = 0 AND idx = 0",
    );
    let (second, addr2) = start_serve(&ctx.dsn);
    assert_eq!(get(addr2, "/tile/entries/000").status, 500);
    assert_eq!(fetch(addr2, "/tile/entries/001"), bundle1);
    assert_ne!(
        fetch(addr2, "/tile/0/000"),
        tile0,
        "the corrupted tile as stored"
    );
    let err = stop(second, addr2);
    assert!(err.contains("the stored log is inconsistent"), "{err}");
    for _ in 0..4 {
        assert_eq!(fetch(addr, "/tile/entries/000"), bundle0);
    }

    // SIGINT: a graceful stop, exit 0.
    let err = stop(server, addr);
    assert!(!err.contains("inconsistent"), "{err}");

    std::fs::remove_dir_all(&dir).ok();
    rt.block_on(ctx.teardown());
}

/// The memory backend has no log outside its process: `ledger serve` refuses to start.
#[test]
fn serve_refuses_the_memory_backend() {
    let out = command(
        "postgres://unused@127.0.0.1:1/none",
        &["serve", "--listen", "127.0.0.1:0"],
    )
    .env("LEDGER_BACKEND", "memory")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("memory backend"), "{}", stderr(&out));
}
