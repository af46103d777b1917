//! Starting worker processes with the crate's [`Process`] API.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::pool::dispatcher::{Spawner, WorkerProc};
use crate::pool::worker::{worker_main, WorkerArgs, WorkerSock};
use crate::process::{ExitStatus, Process, StartMethod};

struct ProcWorker(Process<()>);

impl WorkerProc for ProcWorker {
    fn pid(&self) -> u32 {
        self.0.pid()
    }

    fn kill(&mut self) {
        // An error means it is gone already.
        let _ = self.0.kill();
    }

    fn reap(&mut self, timeout: Duration) -> Option<ExitStatus> {
        // The worker's return value is (); what matters is how it ended.
        let _ = self.0.join_timeout(timeout);
        self.0.exit_status()
    }
}

static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Starts daemon worker processes with `method` (or the default start method).
pub(crate) fn process_spawner(method: Option<StartMethod>) -> Spawner {
    Box::new(move |sock: OwnedFd, init| {
        let n = WORKERS.fetch_add(1, Ordering::Relaxed) + 1;
        let mut b = Process::builder().daemon(true).name(format!("PoolWorker-{n}"));
        if let Some(m) = method {
            b = b.start_method(m);
        }
        let args = WorkerArgs {
            sock: WorkerSock(sock),
            init: init.clone(),
        };
        let p = b
            .spawn(args, worker_main)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Box::new(ProcWorker(p)) as Box<dyn WorkerProc>)
    })
}
