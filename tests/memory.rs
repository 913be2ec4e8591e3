//! Guest memory the server stops using goes back to the host (issue 13):
//! a long-running server's runner does not stay at its high-water mark.
//! The libOS gives free RAM that was used back when the VM idles
//! (`hc::DISCARD`, the runner's MADV_DONTNEED), so the serve process's
//! resident memory falls again after a query that needed a lot.

mod common;
use common::serve::Serve;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn memory_a_query_used_goes_back_to_the_host_once_idle() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let server = Serve::start(&image, &["--mem".as_ref(), "1024".as_ref()]);
    let pid = server.pid();
    let before = rss_kib(pid);
    // A backend builds a ~96 MB string (its buffer doubles to 128 MiB,
    // malloc'd as mappings of their own), then exits; the runner's RSS is
    // sampled meanwhile for the high-water mark.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let mut c = server.client();
    let len: i32 = c
        .query_one(
            "SELECT length(string_agg(md5(g::text), '')) FROM generate_series(1, 3000000) g",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(len, 96_000_000);
    drop(c);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert!(
        peak > before + 100 * 1024,
        "the query should have raised the runner's RSS by over 100 MiB: {before} -> {peak} KiB"
    );
    // Idle now: within a bounded wait the RSS falls by most of what the
    // query added (the libOS looks at most once a second).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = rss_kib(pid);
    while now > peak - 100 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = rss_kib(pid);
    }
    assert!(
        now <= peak - 100 * 1024,
        "RSS {before} KiB before, {peak} KiB at the peak, still {now} KiB after idling"
    );
    let log = server.stop();
    assert!(!log.contains("PANIC"), "{log}");
}
