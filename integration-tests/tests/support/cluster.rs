//! Extra PostgreSQL servers for tests that need more than the shared one: a primary with a
//! streaming standby, or several servers. Made with Debian's `pg_createcluster` (the
//! `postgresql-common` tools; a standby with `pg_basebackup -R`, run as the `postgres`
//! user), each on a free port of 127.0.0.1, and dropped with `pg_dropcluster --stop` when
//! the handle is dropped. The shared `main` cluster is never touched.
//!
//! Clusters are named `avl_<tag>_<pid>_<n>`; one left behind by a test process that died is
//! dropped by the next [`Cluster::primary`] call. A machine without the tools fails the
//! test saying how to provide them; it never skips.

#![allow(dead_code, reason = "each test binary uses a different part of it")]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

const PREFIX: &str = "avl_";

/// A PostgreSQL cluster of this test process.
pub struct Cluster {
    /// `pg_createcluster`'s name.
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    version: String,
    dropped: bool,
}

fn version() -> String {
    let dir = std::fs::read_dir("/etc/postgresql").unwrap_or_else(|e| {
        panic!(
            "no /etc/postgresql ({e}): these tests make extra PostgreSQL servers with Debian's \
             postgresql-common tools; install them with `apt-get install postgresql`"
        )
    });
    let mut versions: Vec<String> = dir
        .filter_map(|d| d.ok())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions
        .pop()
        .expect("a PostgreSQL version under /etc/postgresql")
}

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{shown}: {e} (the extra-server tests need Debian's postgresql-common: \
             `apt-get install postgresql`)"
        )
    });
    assert!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Drops clusters of earlier test processes that are no longer running.
fn drop_orphans(version: &str) {
    let Ok(dir) = std::fs::read_dir(format!("/etc/postgresql/{version}")) else {
        return;
    };
    for entry in dir.filter_map(|d| d.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !PathBuf::from(format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("pg_dropcluster")
                .args(["--stop", version, &name])
                .output();
        }
    }
}

impl Cluster {
    fn name_for(tag: &str) -> String {
        format!(
            "{PREFIX}{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn conf_path(&self, file: &str) -> PathBuf {
        PathBuf::from(format!(
            "/etc/postgresql/{}/{}/{file}",
            self.version, self.name
        ))
    }

    fn data_dir(&self) -> PathBuf {
        PathBuf::from(format!(
            "/var/lib/postgresql/{}/{}",
            self.version, self.name
        ))
    }

    fn append_conf(&self, lines: &[&str]) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.conf_path("postgresql.conf"))
            .expect("postgresql.conf");
        for line in lines {
            writeln!(f, "{line}").expect("write postgresql.conf");
        }
    }

    fn create(tag: &str) -> Cluster {
        let version = version();
        let cluster = Cluster {
            name: Self::name_for(tag),
            port: free_port(),
            version,
            dropped: false,
        };
        run(Command::new("pg_createcluster").args([
            &cluster.version,
            &cluster.name,
            "--port",
            &cluster.port.to_string(),
            "--",
            "--auth=trust",
        ]));
        cluster.append_conf(&[
            "listen_addresses = '127.0.0.1'",
            "wal_level = replica",
            "max_wal_senders = 8",
            "max_connections = 60",
            "shared_buffers = 32MB",
            "fsync = on",
        ]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.conf_path("pg_hba.conf"))
            .and_then(|mut f| {
                use std::io::Write as _;
                writeln!(f, "host replication all 127.0.0.1/32 trust")
            })
            .expect("pg_hba.conf");
        cluster
    }

    /// A new primary, started, with `conf` appended to its `postgresql.conf` (e.g.
    /// `synchronous_standby_names = '*'`).
    pub fn primary(tag: &str, conf: &[&str]) -> Cluster {
        drop_orphans(&version());
        let cluster = Self::create(tag);
        cluster.append_conf(conf);
        cluster.start();
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started and streaming, with
    /// `conf` appended to its own `postgresql.conf` (which a promotion keeps).
    pub fn standby_of(primary: &Cluster, tag: &str, conf: &[&str]) -> Cluster {
        let cluster = Self::create(tag);
        cluster.append_conf(conf);
        let data = cluster.data_dir();
        // pg_basebackup wants an empty directory owned by postgres.
        std::fs::remove_dir_all(&data).expect("empty the standby's data directory");
        std::fs::create_dir(&data).expect("standby data directory");
        run(Command::new("chown").args(["postgres:postgres", &data.to_string_lossy()]));
        run(Command::new("chmod").args(["700", &data.to_string_lossy()]));
        run(Command::new("runuser").args([
            "-u",
            "postgres",
            "--",
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
            "-D",
            &data.to_string_lossy(),
            "-R",
            "-X",
            "stream",
            // An immediate checkpoint: the default spread one took 100 s on a just
            // promoted server.
            "--checkpoint=fast",
            // The standby's name in pg_stat_replication.
            "-d",
            &format!("application_name={}", cluster.name),
        ]));
        cluster.start();
        cluster
    }

    /// Starts the server and waits until it answers.
    pub fn start(&self) {
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            "start",
        ]));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once (`-m immediate`: a crash, no shutdown checkpoint).
    pub fn crash(&self) {
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            "stop",
            "-m",
            "immediate",
        ]));
    }

    /// Promotes a standby and waits until it takes writes.
    pub fn promote(&self) {
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            "promote",
        ]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sql("SELECT pg_is_in_recovery()").trim() != "f" {
            assert!(Instant::now() < deadline, "{} was not promoted", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql` with psql on database `postgres` and returns its unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// Runs `sql` with psql on database `db` and returns its unaligned output.
    pub fn sql_in(&self, db: &str, sql: &str) -> String {
        run(Command::new("psql").args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ]))
    }

    /// Waits until `standbys` standbys stream to this primary as synchronous.
    pub fn wait_sync_standbys(&self, standbys: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: usize = self
                .sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')")
                .trim()
                .parse()
                .unwrap_or(0);
            if n >= standbys {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {n} synchronous standbys after 30 s, expected {standbys}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The DSN of database `db` on this server.
    pub fn dsn(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's socket address (for a proxy in front of it).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.dropped {
            self.dropped = true;
            let _ = Command::new("pg_dropcluster")
                .args(["--stop", &self.version, &self.name])
                .output();
        }
    }
}
