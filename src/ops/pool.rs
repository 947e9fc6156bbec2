//! The CPU backend's worker threads: `for_each(tasks, f)` runs `f(0..tasks)` on the calling
//! thread and the workers together.
//!
//! Why not rayon: a forward is ~170 short ops, and at B = 1 most parallel sections last 20 to
//! 500 µs. Rayon's workers go to sleep within microseconds of running dry, so every section
//! paid a futex wake (≈ 550 context switches per TR-DETR forward; on a VM a wake can cost tens
//! of µs), and two threads were no faster than one. Here idle workers spin on the job counter
//! for `SPIN` (2 ms) before they park, so the sections of one forward find them awake; between
//! forwards they park and cost nothing. One job runs at a time: a `for_each` from another
//! thread while one runs (two executables used at once) or from inside a task runs serially.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::SharedOut;

/// How long an idle worker waits awake for the next job before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// Threads that run tasks (the caller included): `MOMENT_CPU_THREADS`, else the machine's.
pub fn threads() -> usize {
    pool().threads
}

/// Runs `f(t)` for every `t` in `0..tasks`, spread over the pool; returns when all are done.
pub fn for_each(tasks: usize, f: impl Fn(usize) + Sync) {
    let pool = pool();
    let guard = if tasks > 1 && pool.threads > 1 && !IN_TASK.get() { pool.submit.try_lock().ok() } else { None };
    let Some(_guard) = guard else {
        // Serially, unmarked: a single task still lets a `for_each` inside it use the pool.
        return (0..tasks).for_each(&f);
    };
    let shared = &pool.shared;
    let job: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: only the holder of `submit` writes the slot, and only while `open` is false and
    // no worker is busy (the previous job's close waited for that); the lifetime is erased
    // because workers touch the job only while `open`, which is cleared before we return.
    unsafe {
        *shared.job.get() = Some(Job { f: std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static _>(job), tasks });
    }
    shared.next.store(0, SeqCst);
    shared.open.store(true, SeqCst);
    shared.epoch.fetch_add(1, SeqCst);
    if shared.parked.load(SeqCst) > 0 {
        let _lock = shared.park_lock.lock().unwrap_or_else(|e| e.into_inner());
        shared.wake.notify_all();
    }
    // Closes the job even if `f` panics here, so no worker is left holding a dead closure.
    let close = CloseOnDrop(shared);
    run_marked(|| shared.run_tasks(job, tasks));
    drop(close);
    if shared.worker_panicked.swap(false, SeqCst) {
        panic!("a CPU backend task panicked on a worker thread");
    }
}

struct CloseOnDrop<'a>(&'a Shared);

impl Drop for CloseOnDrop<'_> {
    /// Closes the job, then waits for the workers still inside it.
    fn drop(&mut self) {
        self.0.open.store(false, SeqCst);
        while self.0.busy.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

/// Runs `f(t, chunk)` over `out` cut into chunks of `chunk_len` values (the last may be
/// shorter), chunk `t` starting at `t · chunk_len`.
pub fn for_each_chunk(out: &mut [f32], chunk_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk_len = chunk_len.max(1);
    let len = out.len();
    let shared = SharedOut::new(out);
    for_each(len.div_ceil(chunk_len), |t| {
        let start = t * chunk_len;
        // SAFETY: chunk `t` is written by task `t` alone.
        f(t, unsafe { shared.part(start, chunk_len.min(len - start)) })
    });
}

thread_local! {
    /// Set while this thread runs tasks: a `for_each` inside a task runs serially.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

fn run_marked(body: impl FnOnce()) {
    let was = IN_TASK.replace(true);
    body();
    IN_TASK.set(was);
}

#[derive(Clone, Copy)]
struct Job {
    f: &'static (dyn Fn(usize) + Sync),
    tasks: usize,
}

struct Shared {
    /// Bumped for every job; workers wait for it to change.
    epoch: AtomicU64,
    /// The current job may be joined.
    open: AtomicBool,
    /// Workers inside a job (they entered while it was open).
    busy: AtomicUsize,
    /// Next task index to hand out.
    next: AtomicUsize,
    job: std::cell::UnsafeCell<Option<Job>>,
    worker_panicked: AtomicBool,
    parked: AtomicUsize,
    park_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only under the protocol described in `for_each`.
unsafe impl Sync for Shared {}

impl Shared {
    fn run_tasks(&self, f: &(dyn Fn(usize) + Sync), tasks: usize) {
        loop {
            let t = self.next.fetch_add(1, SeqCst);
            if t >= tasks {
                return;
            }
            f(t);
        }
    }

    fn worker(&self) {
        IN_TASK.set(true);
        let mut seen = self.epoch.load(SeqCst);
        loop {
            seen = self.wait_for_job(seen);
            // Announce ourselves before looking at `open`: the closer clears `open` before it
            // waits for `busy`, so either it waits for us or we see the job closed.
            self.busy.fetch_add(1, SeqCst);
            if self.open.load(SeqCst) {
                // SAFETY: the job is open, so its slot is written and stays valid until we
                // leave `busy`.
                let job = unsafe { (*self.job.get()).expect("an open job has a slot") };
                let run = std::panic::AssertUnwindSafe(|| self.run_tasks(job.f, job.tasks));
                if std::panic::catch_unwind(run).is_err() {
                    // The caller re-raises it; skip this job's remaining tasks.
                    self.next.store(usize::MAX / 2, SeqCst);
                    self.worker_panicked.store(true, SeqCst);
                }
            }
            self.busy.fetch_sub(1, SeqCst);
        }
    }

    /// Waits until the epoch differs from `seen`: awake for [`SPIN`], then parked.
    fn wait_for_job(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = self.epoch.load(SeqCst);
            if epoch != seen {
                return epoch;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                break;
            }
        }
        let mut lock = self.park_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.parked.fetch_add(1, SeqCst);
        while self.epoch.load(SeqCst) == seen {
            lock = self.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
        }
        self.parked.fetch_sub(1, SeqCst);
        self.epoch.load(SeqCst)
    }
}

struct Pool {
    threads: usize,
    /// Held by the thread whose job is in the slot.
    submit: Mutex<()>,
    shared: &'static Shared,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("MOMENT_CPU_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicU64::new(0),
            open: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            job: std::cell::UnsafeCell::new(None),
            worker_panicked: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        let mut started = 1;
        for i in 1..threads {
            let spawned = std::thread::Builder::new().name(format!("moment-cpu-{i}")).spawn(move || shared.worker());
            if spawned.is_ok() {
                started += 1;
            }
        }
        Pool { threads: started, submit: Mutex::new(()), shared }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every task runs exactly once, across many jobs (workers spinning and parked), with
    /// nested calls running serially inside a task.
    #[test]
    fn every_task_runs_once() {
        for round in 0..200 {
            let tasks = round % 37;
            let counts: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
            for_each(tasks, |t| {
                counts[t].fetch_add(1, SeqCst);
                let inner = AtomicU32::new(0);
                for_each(3, |_| {
                    inner.fetch_add(1, SeqCst);
                });
                assert_eq!(inner.load(SeqCst), 3);
            });
            assert!(counts.iter().all(|c| c.load(SeqCst) == 1), "round {round}");
            if round % 50 == 0 {
                std::thread::sleep(SPIN * 2); // let the workers park
            }
        }
    }

    /// Jobs submitted from several threads at once all complete (the losers run serially).
    #[test]
    fn concurrent_callers_each_finish_their_job() {
        std::thread::scope(|s| {
            for caller in 0..4 {
                s.spawn(move || {
                    for _ in 0..100 {
                        let sum = AtomicUsize::new(0);
                        for_each(64, |t| {
                            sum.fetch_add(t, SeqCst);
                        });
                        assert_eq!(sum.load(SeqCst), 64 * 63 / 2, "caller {caller}");
                    }
                });
            }
        });
    }
}
