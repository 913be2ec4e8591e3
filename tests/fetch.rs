//! build::fetch against real files, a real (unreachable) URL and a real
//! child process for the environment-driven lookup.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgkraft::build::cache::{Cache, sha256_file};
use pgkraft::build::fetch::{FetchError, SOURCES_STAGE, SourceSpec, fetch, fetch_from};

const OTHER_SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn tarball(dir: &Path, name: &str, contents: &[u8]) -> (PathBuf, String) {
    let p = dir.join(name);
    fs::write(&p, contents).unwrap();
    let sha = sha256_file(&p).unwrap();
    (p, sha)
}

fn spec(url: Option<&str>, path: Option<&Path>, sha256: &str) -> SourceSpec {
    SourceSpec {
        url: url.map(String::from),
        path: path.map(Path::to_path_buf),
        sha256: sha256.to_string(),
    }
}

/// Everything under the cache's sources stage, temporary entries included.
fn sources_contents(cache: &Cache) -> Vec<PathBuf> {
    match fs::read_dir(cache.stage_dir(SOURCES_STAGE)) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn local_path_with_matching_hash() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    let (p, sha) = tarball(t.path(), "thing-1.0.tar.gz", b"not really gzip");
    let v = fetch_from(&spec(None, Some(&p), &sha), "thing", &cache, &[]).unwrap();
    assert_eq!(v.path, p);
    assert_eq!(v.sha256, sha);
    // Upper case, as some tools print it, is the same hash.
    let v = fetch_from(
        &spec(None, Some(&p), &sha.to_uppercase()),
        "thing",
        &cache,
        &[],
    )
    .unwrap();
    assert_eq!(v.sha256, sha);
}

#[test]
fn local_path_with_wrong_hash_names_file_and_both_hashes() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    let (p, sha) = tarball(t.path(), "thing-1.0.tar.gz", b"contents");
    let err = fetch_from(&spec(None, Some(&p), OTHER_SHA), "thing", &cache, &[]).unwrap_err();
    assert!(matches!(err, FetchError::Mismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(msg.contains(OTHER_SHA), "{msg}");
    assert!(msg.contains(&sha), "{msg}");
    assert!(
        msg.contains("sha256:"),
        "should say how to fix the recipe: {msg}"
    );
}

#[test]
fn missing_local_path_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    let p = t.path().join("no-such-1.0.tar.gz");
    let err = fetch_from(&spec(None, Some(&p), OTHER_SHA), "thing", &cache, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::MissingPath { .. }), "{err:?}");
    assert!(
        msg.contains(&p.display().to_string()) && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn url_and_path_together_are_rejected() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    let s = spec(
        Some("https://example.invalid/x.tar.gz"),
        Some(Path::new("x.tar.gz")),
        OTHER_SHA,
    );
    let err = fetch_from(&s, "x", &cache, &[]).unwrap_err();
    assert!(matches!(err, FetchError::Spec(_)), "{err:?}");
}

#[test]
fn lookup_by_hash_in_source_dirs_imports_into_cache() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    let store = t.path().join("store");
    fs::create_dir(&store).unwrap();
    tarball(&store, "decoy-1.0.tar.gz", b"decoy");
    tarball(&store, "notes.txt", b"wanted"); // same bytes, but not a tarball name
    let (_, sha) = tarball(&store, "wanted-2.0.tar.xz", b"wanted");

    let dirs = [t.path().join("absent"), store.clone()];
    let v = fetch_from(&spec(None, None, &sha), "wanted", &cache, &dirs).unwrap();
    assert_eq!(v.sha256, sha);
    assert!(
        v.path.starts_with(cache.root()),
        "{:?} should be in the cache",
        v.path
    );
    assert_eq!(v.path.file_name().unwrap(), "wanted-2.0.tar.xz");
    assert_eq!(fs::read(&v.path).unwrap(), b"wanted");

    // Once imported, the store is no longer needed.
    fs::remove_dir_all(&store).unwrap();
    let again = fetch_from(&spec(None, None, &sha), "wanted", &cache, &[]).unwrap();
    assert_eq!(again, v);
}

#[test]
fn hash_not_found_anywhere_lists_places_and_the_script() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    let store = t.path().join("store");
    fs::create_dir(&store).unwrap();
    let err = fetch_from(
        &spec(None, None, OTHER_SHA),
        "musl",
        &cache,
        std::slice::from_ref(&store),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    assert!(msg.contains(OTHER_SHA), "{msg}");
    assert!(msg.contains(&store.display().to_string()), "{msg}");
    assert!(msg.contains("ci/fetch-sources.sh"), "{msg}");
}

#[test]
fn damaged_cache_entry_is_discarded_and_refilled() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    let store = t.path().join("store");
    fs::create_dir(&store).unwrap();
    let (_, sha) = tarball(&store, "x-1.tar.gz", b"good bytes");
    let v = fetch_from(
        &spec(None, None, &sha),
        "x",
        &cache,
        std::slice::from_ref(&store),
    )
    .unwrap();
    fs::write(&v.path, b"bad bytes").unwrap();
    let again = fetch_from(&spec(None, None, &sha), "x", &cache, &[store]).unwrap();
    assert_eq!(fs::read(&again.path).unwrap(), b"good bytes");
}

#[test]
fn unreachable_url_fails_clearly_and_leaves_no_trace() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::new(t.path().join("cache"));
    // Port 9 (discard) on loopback: connection refused at once.
    let url = "http://127.0.0.1:9/x-1.0.tar.gz";
    let err = fetch_from(&spec(Some(url), None, OTHER_SHA), "x", &cache, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Download { .. }), "{err:?}");
    assert!(msg.contains(url), "{msg}");
    assert!(msg.contains(OTHER_SHA), "{msg}");
    assert!(msg.contains("ci/fetch-sources.sh"), "{msg}");
    assert!(
        sources_contents(&cache).is_empty(),
        "{:?}",
        sources_contents(&cache)
    );
}

const CHILD_FLAG: &str = "PGKRAFT_FETCH_TEST_CHILD";

/// Runs `env_child` in a child process with PGKRAFT_CACHE and
/// PGKRAFT_SOURCES set: the environment is process-wide, so a test must not
/// change its own.
#[test]
fn pgkraft_sources_and_pgkraft_cache_from_environment() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    fs::create_dir(&store).unwrap();
    let (_, sha) = tarball(&store, "envthing-3.tar.bz2", b"from the environment");
    let cache_root = t.path().join("envcache");
    let sources = std::env::join_paths([t.path().join("absent"), store]).unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "env_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_FLAG, &sha)
        .env("PGKRAFT_CACHE", &cache_root)
        .env("PGKRAFT_SOURCES", &sources)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "child test did not run: {text}");
    let entry = cache_root
        .join(SOURCES_STAGE)
        .join(&sha)
        .join("envthing-3.tar.bz2");
    assert_eq!(fs::read(&entry).unwrap(), b"from the environment");
}

#[test]
#[ignore = "run by pgkraft_sources_and_pgkraft_cache_from_environment in a child process"]
fn env_child() {
    let Ok(sha) = std::env::var(CHILD_FLAG) else {
        return;
    };
    let cache = Cache::from_env().unwrap();
    let v = fetch(&spec(None, None, &sha), "envthing", &cache).unwrap();
    assert!(v.path.starts_with(cache.root()), "{v:?}");
}

#[test]
fn source_spec_from_recipe_yaml_like_json() {
    let s: SourceSpec =
        serde_json::from_str(r#"{"sha256": "ab", "url": "https://x/y.tar.gz"}"#).unwrap();
    assert_eq!(s.url.as_deref(), Some("https://x/y.tar.gz"));
    assert!(s.path.is_none());
    assert!(serde_json::from_str::<SourceSpec>(r#"{"sha256": "ab", "uri": "x"}"#).is_err());
}
