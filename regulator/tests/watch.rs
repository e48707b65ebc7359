//! Reloading from a watched file (real time, real file system, bounded polling).

use std::time::Duration;

use regulator::{Regulator, Request};

/// Real time and a real file system: bounded polling, no fixed sleeps as waits.
#[tokio::test]
async fn a_config_file_edit_retunes_and_a_bad_one_is_ignored() {
    let dir = std::env::temp_dir().join(format!(
        "regulator-watch-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("regulator.json");
    let write = |text: &str| {
        // Write aside and rename over, as editors do.
        let tmp = dir.join(".regulator.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write(r#"{"queues": {"q": {"max_concurrency": 1}}}"#);
    let r = Regulator::new(serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap())
        .unwrap();
    let q = r.queue("q").unwrap();
    let _hold = q.ask(Request::new()).await.unwrap();
    let handle = r
        .watch_file(path.clone(), |text| {
            serde_json::from_str(text).map_err(|e| e.to_string())
        })
        .unwrap();

    let wait_for = |cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the watcher"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    write(r#"{"queues": {"q": {"max_concurrency": 4}}}"#);
    wait_for(&|| q.concurrency_limit() == Some(4));
    assert_eq!(q.in_flight(), 1, "state kept across the reload");
    let applied = handle.applied();
    assert!(applied >= 1);

    write(r#"{"queues": {"q": {"max_concurrency": "lots"}}}"#);
    wait_for(&|| handle.failed() >= 1);
    assert_eq!(
        q.concurrency_limit(),
        Some(4),
        "a bad file keeps the running config"
    );

    write(r#"{"queues": {"q": {"max_concurrency": 0}}}"#);
    wait_for(&|| handle.failed() >= 2);
    assert_eq!(
        q.concurrency_limit(),
        Some(4),
        "an invalid config keeps the running one"
    );

    drop(handle);
    std::fs::remove_dir_all(&dir).unwrap();
}
