//! A real `redis-server` for the tests of the `redis` feature: started on a free loopback
//! port with persistence off, stopped (killed) when dropped.
//!
//! `redis-server` must be on the `PATH` (`.ci/run` installs Debian's package); a test that
//! cannot start it fails and says so.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::MultiplexedConnection;

/// One `redis-server` process.
pub(crate) struct RedisServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1 and waits until it answers `PING`.
    pub(crate) async fn start() -> Self {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            listener.local_addr().unwrap().port()
        };
        let dir =
            std::env::temp_dir().join(format!("palisade-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// Where clients connect.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A connection of the test's own, to inspect and to misbehave with (without a response
    /// timeout: `DEBUG SLEEP` answers late).
    pub(crate) async fn admin(&self) -> MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("the test's own connection")
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (persistence is off): what a client
    /// sees of a Redis that crashed and came back.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server could not be started: the `redis` feature's tests need it on the \
                 PATH (apt-get install -y redis-server)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING")
                        .query_async::<String>(&mut connection)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How many times Redis ran `command` since the last `CONFIG RESETSTAT`, from
/// `INFO commandstats`.
pub(crate) async fn calls(admin: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// The commands clients sent since the last `CONFIG RESETSTAT`: every command Redis counted
/// but the test's own inspection (`INFO`, `CONFIG`) and the ones the store's scripts run
/// inside (Redis counts those too).
pub(crate) async fn commands(admin: &mut MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter_map(|line| {
            let (name, rest) = line.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            let inspection = name.starts_with("info") || name.starts_with("config");
            (!inspection && !SCRIPT_COMMANDS.contains(&name)).then(|| (name.to_owned(), calls))
        })
        .collect()
}

/// The commands the store's scripts call.
const SCRIPT_COMMANDS: &[&str] = &[
    "time",
    "set",
    "get",
    "hmget",
    "hget",
    "hset",
    "hdel",
    "del",
    "pexpire",
    "pexpireat",
    "zadd",
    "zrange",
    "zrem",
    "zremrangebyscore",
    "zcard",
];

/// Resets Redis's command counts.
pub(crate) async fn reset_stats(admin: &mut MultiplexedConnection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(admin)
        .await
        .unwrap();
}
