//! Starting control plane processes, recording them, and stopping exactly those again.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What ends the processes a cluster starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// They outlive the starting process, until `down` stops them.
    Detached,
    /// They are killed when the starting process exits, however it exits.
    TiedToThisProcess,
}

/// A started process, identified by pid and kernel start time so that a reused pid is never
/// mistaken for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot.
    pub start_time: u64,
    pub log: PathBuf,
}

impl ProcessRecord {
    /// Whether this very process (not just its pid) is still alive.
    pub fn is_running(&self) -> bool {
        matches!(proc_stat(self.pid), Some(stat) if stat.start_time == self.start_time && !stat.exited)
    }
}

/// A process started by [`spawn`], with its record and handle.
#[derive(Debug)]
pub struct Started {
    pub record: ProcessRecord,
    pub child: Child,
}

/// Environment variables, name and value.
pub type Environment = Vec<(String, String)>;

/// The command line and environment of running process `pid`, to start it again or a second
/// one like it.
pub fn command_of(pid: u32) -> Result<(Vec<String>, Environment)> {
    let split = |file: &str| -> Result<Vec<String>> {
        let path = format!("/proc/{pid}/{file}");
        Ok(fs::read(&path)
            .with_context(|| format!("reading {path}"))?
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    };
    let env = split("environ")?
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    Ok((split("cmdline")?, env))
}

/// Starts `cmd` as `name` in its own process group, stdin null, stdout and stderr appended to
/// `log`.
pub fn spawn(name: &str, mut cmd: Command, log: &Path, lifetime: Lifetime) -> Result<Started> {
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent)?;
    }
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = match lifetime {
        Lifetime::Detached => {
            // A session of its own (hence also its own process group): neither a Ctrl-C nor
            // the hangup of the terminal that ran `up` reaches it.
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.spawn()
        }
        Lifetime::TiedToThisProcess => {
            // Its own group keeps a Ctrl-C aimed at the test run from killing it before the
            // tests notice; it dies with this process anyway.
            cmd.process_group(0);
            spawn_tied(cmd)
        }
    }
    .with_context(|| format!("starting {name} ({program})"))?;
    let pid = child.id();
    let start_time = proc_stat(pid)
        .map(|stat| stat.start_time)
        .with_context(|| format!("reading /proc/{pid}/stat of {name}"))?;
    Ok(Started {
        record: ProcessRecord {
            name: name.to_owned(),
            pid,
            start_time,
            log: log.to_owned(),
        },
        child,
    })
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Children are spawned by one thread that lives as long as the process, with
/// `PR_SET_PDEATHSIG(SIGKILL)`: the kernel then kills them when this process exits, even by
/// SIGKILL or a panic, which no destructor could guarantee (statics are never dropped). The
/// signal fires when the *thread* that forked exits, hence a dedicated thread instead of the
/// caller's, which may be a short-lived tokio worker of one test.
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("cluster-process-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // Unreachable while the static sender lives, but the thread must never end.
                loop {
                    std::thread::park();
                }
            })
            .expect("starting the process spawner thread");
        tx
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| io::Error::other("process spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("process spawner thread is gone"))?
}

struct ProcStat {
    start_time: u64,
    exited: bool,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after it don't.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); starttime is field 22.
    Some(ProcStat {
        exited: matches!(*fields.first()?, "Z" | "X" | "x"),
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// Stops the recorded process if it is still that process: SIGTERM, then SIGKILL after
/// `grace`. Returns whether it was running.
pub fn stop(record: &ProcessRecord, grace: Duration) -> Result<bool> {
    // A pidfd pins the process: once its start time has been checked through /proc, signals
    // sent through the fd cannot reach a different process that reused the pid.
    let Some(pidfd) = pidfd_open(record.pid) else {
        return Ok(false);
    };
    if !record.is_running() {
        return Ok(false);
    }
    pidfd_signal(&pidfd, libc::SIGTERM)?;
    if wait_exit(&pidfd, record, grace) {
        return Ok(true);
    }
    eprintln!(
        "local-cluster: {} (pid {}) ignored SIGTERM for {grace:?}, sending SIGKILL",
        record.name, record.pid
    );
    pidfd_signal(&pidfd, libc::SIGKILL)?;
    if !wait_exit(&pidfd, record, Duration::from_secs(10)) {
        bail!(
            "{} (pid {}) is still running after SIGKILL",
            record.name,
            record.pid
        );
    }
    Ok(true)
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(pidfd: &OwnedFd, signal: libc::c_int) -> Result<()> {
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    let err = io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() != Some(libc::ESRCH) {
        return Err(err).context("pidfd_send_signal");
    }
    Ok(())
}

/// Waits until the process has exited (a pidfd turns readable then).
fn wait_exit(pidfd: &OwnedFd, record: &ProcessRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Capped so that an exit is also noticed through /proc should poll not report it.
        let ms = left.as_millis().min(200) as libc::c_int;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready > 0 || !record.is_running() {
            return true;
        }
        if left.is_zero() {
            return false;
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(64 * 1024);
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut text).is_err() {
        return format!("(cannot read {})", path.display());
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", path.display())
}

/// The error of a startup that waited too long: what it waited for, the last answer it got, and
/// the end of each log.
pub fn startup_timeout<'a>(
    waited: Duration,
    what: &str,
    last: &str,
    logs: impl IntoIterator<Item = &'a Path>,
) -> anyhow::Error {
    let tails: Vec<_> = logs.into_iter().map(|log| log_tail(log, 20)).collect();
    anyhow::anyhow!(
        "timed out after {waited:?} waiting for {what} (last: {last})\n{}",
        tails.join("\n")
    )
}
