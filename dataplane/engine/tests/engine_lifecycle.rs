//! Starting and stopping the engine repeatedly leaves nothing behind: no XDP program on the
//! ports, no descriptor, no thread. Alone in its binary so that no other test opens
//! descriptors or threads while it counts them.

mod engine_lab;
mod xsk_support;

use std::time::{Duration, Instant};

use corridor_engine::engine::Engine;
use engine_lab::Lab;
use xsk_support::open_fds;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// The thread count once it has settled at `expected`, or after two seconds what it is then:
/// a thread that was joined can stay listed in /proc/self/task for a moment on a busy host.
fn threads_settled_at(expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = threads();
        if now == expected || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn start_and_stop_twenty_times_leaks_nothing() {
    let lab = Lab::new("life");
    let fib = lab.fib();
    // Warm up once, so lazily opened globals are not counted as leaks.
    drop(Engine::start(lab.engine_config(), vec![fib.reader()]).expect("first start"));
    let (fds, tasks) = (open_fds(), threads());
    for round in 0..20 {
        let began = Instant::now();
        let mut engine = Engine::start(lab.engine_config(), vec![fib.reader()]).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(engine.running() && lab.has_xdp("d0") && lab.has_xdp("d1"), "round {round}: attached");
        let stopping = Instant::now();
        engine.stop().unwrap();
        // Generous for a busy host: a stop waits for the workers' last drain (100 ms at most).
        assert!(stopping.elapsed() < Duration::from_secs(2), "round {round}: stop took {:?}", stopping.elapsed());
        assert!(!lab.has_xdp("d0") && !lab.has_xdp("d1"), "round {round}: XDP left attached");
        assert!(began.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(open_fds(), fds, "descriptors leaked over 20 rounds");
    assert_eq!(threads_settled_at(tasks), tasks, "threads left behind");
    // Dropping without stop does the same.
    let engine = Engine::start(lab.engine_config(), vec![fib.reader()]).unwrap();
    drop(engine);
    assert!(!lab.has_xdp("d0") && !lab.has_xdp("d1"));
    assert_eq!(open_fds(), fds);
}
