//! build::postgres from the real pinned tarballs, in the real default
//! cache: the first run compiles PostgreSQL (minutes), later runs reuse it.
//!
//! A missing tarball fails with the command that fetches it; nothing here
//! is skipped silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use pgkraft::build::cache::Cache;
use pgkraft::build::fetch::{SourceSpec, VerifiedSource, fetch};
use pgkraft::build::musl::{MUSL_PIN, MuslFlavor, MuslSysroot, build_musl};
use pgkraft::build::postgres::{
    self, Auth, ClusterSpec, PgBuild, PgError, PgLogs, PgSpec, initdb, prepare, single_user,
};

fn logs_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("postgres-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn local(sha256: &str, name: &str, cache: &Cache, fix: &str) -> VerifiedSource {
    let spec = SourceSpec {
        url: None,
        path: None,
        sha256: sha256.to_string(),
    };
    fetch(&spec, name, cache)
        .unwrap_or_else(|e| panic!("{name} is not available locally: {fix}. Details: {e}"))
}

fn stock_musl() -> &'static MuslSysroot {
    static MUSL: OnceLock<MuslSysroot> = OnceLock::new();
    MUSL.get_or_init(|| {
        let cache = Cache::from_env().unwrap();
        let src = local(
            MUSL_PIN.sha256,
            MUSL_PIN.file_name,
            &cache,
            "run ci/fetch-sources.sh musl",
        );
        build_musl(
            &src,
            MuslFlavor::Stock,
            &cache,
            &logs_dir().join("musl.log"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn pg_source(major: u32, cache: &Cache) -> VerifiedSource {
    let pin = postgres::pin(major).unwrap();
    local(
        pin.sha256,
        pin.file_name,
        cache,
        &format!("run ci/fetch-sources.sh postgresql-{major}"),
    )
}

const EXTENSIONS: &[&str] = &["pg_trgm", "hstore"];

/// One build per major per test process; builds run one at a time (two
/// cores are busy enough with one).
fn pg(major: u32) -> &'static PgBuild {
    static BUILDS: OnceLock<Mutex<BTreeMap<u32, &'static PgBuild>>> = OnceLock::new();
    let map = BUILDS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = map.get(&major) {
        return b;
    }
    let cache = Cache::from_env().unwrap();
    let source = pg_source(major, &cache);
    let extensions: Vec<String> = EXTENSIONS.iter().map(|s| s.to_string()).collect();
    // The stock recipe's optimization, so the compile stage is the one the
    // image tests build too (one PostgreSQL compile per major in a run).
    let stock = pgkraft::recipe::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("recipes/postgres-{major}.yaml")),
    )
    .expect("the stock recipe loads");
    let pgkraft::recipe::Kind::Postgres(stock) = stock.kind else {
        panic!("postgres-{major}.yaml is a postgres recipe")
    };
    let spec = PgSpec {
        major,
        source: &source,
        optimize: stock.configure.optimize.flag(),
        extensions: &extensions,
        configure_extra: &[],
        test_modules: &[],
        text_search: true,
    };
    let started = Instant::now();
    let b = postgres::build(
        &spec,
        stock_musl(),
        &cache,
        &PgLogs::in_dir(&logs_dir().join(major.to_string())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "PostgreSQL {} ready in {:.1?}: {}",
        b.version,
        started.elapsed(),
        b.install.display()
    );
    let b: &'static PgBuild = Box::leak(Box::new(b));
    map.insert(major, b);
    b
}

fn cluster() -> ClusterSpec {
    ClusterSpec {
        password: Some("s3cret pass".into()),
        settings: BTreeMap::from([("max_connections".into(), "20".into())]),
        hba: vec!["host all all 0.0.0.0/0 scram-sha-256".into()],
        ..ClusterSpec::default()
    }
}

fn answers_sql(major: u32) {
    let b = pg(major);
    assert!(b.version.starts_with(&format!("{major}.")), "{}", b.version);
    for m in [
        "plpgsql",
        "dict_snowball",
        "utf8_and_iso8859_1",
        "pg_trgm",
        "hstore",
    ] {
        assert!(
            b.modules.iter().any(|x| x == m),
            "{m} not in {:?}",
            b.modules
        );
    }
    for f in [
        "bin/postgres",
        "bin/initdb",
        "bin/pg_ctl",
        "share/postgres.bki",
        "share/timezone/UTC",
        "share/timezonesets/Default",
        "share/extension/plpgsql.control",
        "share/extension/pg_trgm.control",
        "share/extension/hstore.control",
    ] {
        assert!(
            b.install.join(f).exists(),
            "{f} missing in {}",
            b.install.display()
        );
    }
    assert!(
        !b.install.join("share/extension/citext.control").exists(),
        "an extension that was not chosen is installed"
    );
    assert!(b.image_objects.iter().all(|p| p.is_file()));

    let cache = Cache::from_env().unwrap();
    let log = logs_dir().join(format!("{major}/initdb.log"));
    let data = initdb(b, &cluster(), &cache, &log).unwrap_or_else(|e| panic!("{e}"));
    assert!(data.join("PG_VERSION").is_file());
    let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    assert!(conf.ends_with("max_connections = '20'\n"), "{conf}");

    // A single-user backend logs NOTICEs (to stderr) only when asked to.
    let sql = "SELECT 1+1;\n\
               SET log_min_messages = notice;\n\
               DO $$ BEGIN RAISE NOTICE 'plpgsql says hi'; END $$;\n\
               CREATE FUNCTION answer() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 41 + 1; END $$;\n\
               SELECT answer() AS answer;\n\
               CREATE EXTENSION pg_trgm;\n\
               SELECT similarity('pgkraft', 'pgkraft') AS sim;\n\
               CREATE EXTENSION hstore;\n\
               SELECT ('a=>1'::hstore) -> 'a' AS h;\n\
               SELECT count(*) AS n FROM pg_authid WHERE rolname = 'postgres' AND rolpassword LIKE 'SCRAM-SHA-256$%';\n";
    let out = single_user(
        b,
        &data,
        "postgres",
        sql,
        &logs_dir().join(format!("{major}/single.log")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for want in [
        "?column? = \"2\"",
        "answer = \"42\"",
        "sim = \"1\"",
        "h = \"1\"",
        "n = \"1\"",
    ] {
        assert!(out.stdout.contains(want), "no {want} in:\n{}", out.stdout);
    }
    assert!(
        out.stderr.contains("NOTICE:  plpgsql says hi"),
        "{}",
        out.stderr
    );
}

#[test]
fn postgres_15_builds_and_answers_sql() {
    answers_sql(15);
}

#[test]
fn postgres_17_builds_and_answers_sql() {
    answers_sql(17);
}

#[test]
fn postgres_18_builds_and_answers_sql() {
    answers_sql(18);
}

/// The pinned PostgreSQL 17 tarball must be there: fail, don't skip.
#[test]
fn postgres_17_tarball_is_available() {
    let cache = Cache::from_env().unwrap();
    let _ = pg_source(17, &cache);
}

#[test]
fn a_patch_that_does_not_apply_is_named() {
    let cache = Cache::from_env().unwrap();
    let source = pg_source(15, &cache);
    let t = tempfile::tempdir().unwrap();
    let patches = t.path().join("patches");
    std::fs::create_dir(&patches).unwrap();
    std::fs::write(
        patches.join("0001-bogus.patch"),
        "Why: to prove a broken patch is reported.\n\n\
         --- a/src/backend/main/main.c\n\
         +++ b/src/backend/main/main.c\n\
         @@ -1,3 +1,3 @@\n\
         -this line is not in main.c\n\
         +neither is this one\n \n \n",
    )
    .unwrap();
    std::fs::write(patches.join("series"), "# test\n0001-bogus.patch\n").unwrap();
    let scratch_cache = Cache::new(t.path().join("cache"));
    let log = t.path().join("prepare.log");
    let err = prepare::prepare(&source, 15, &patches, &scratch_cache, &log).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PgError::Patch(_)), "{msg}");
    assert!(msg.contains("0001-bogus.patch"), "{msg}");
    assert!(msg.contains("fix:"), "{msg}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn an_unknown_extension_lists_the_supported_ones() {
    let cache = Cache::from_env().unwrap();
    let source = pg_source(15, &cache);
    let extensions = vec!["pg_trgm".to_string(), "pgcrypto".to_string()];
    let spec = PgSpec {
        major: 15,
        source: &source,
        optimize: "-O2",
        extensions: &extensions,
        configure_extra: &[],
        test_modules: &[],
        text_search: true,
    };
    let t = tempfile::tempdir().unwrap();
    let err = postgres::build(&spec, stock_musl(), &cache, &PgLogs::in_dir(t.path())).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`pgcrypto`"), "{msg}");
    for e in postgres::supported_extensions(15) {
        assert!(msg.contains(e), "{e} not listed: {msg}");
    }
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn an_unknown_test_module_is_refused_before_anything_builds() {
    let cache = Cache::from_env().unwrap();
    let source = pg_source(17, &cache);
    let tests = vec!["regress".to_string(), "isolation".to_string()];
    let spec = PgSpec {
        major: 17,
        source: &source,
        optimize: "-O2",
        extensions: &[],
        configure_extra: &[],
        test_modules: &tests,
        text_search: true,
    };
    let t = tempfile::tempdir().unwrap();
    let err = postgres::build(&spec, stock_musl(), &cache, &PgLogs::in_dir(t.path())).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("test module `isolation`"), "{msg}");
    assert!(
        msg.contains("fix: use one of autoinc, insert_username"),
        "{msg}"
    );
    assert_eq!(err.exit_code(), 2);
    // Refused before the prepare stage wrote its log.
    assert!(!t.path().join("postgres-prepare.log").exists());
}

/// Every file's relative path, mode and contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if meta.is_dir() {
                out.insert(rel, (meta.permissions().mode(), Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, (meta.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn initdb_is_reproducible(major: u32) {
    let b = pg(major);
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("initdb.log");
    let mut runs = Vec::new();
    for i in 0..2 {
        // Separate caches, so initdb really runs twice.
        let cache = Cache::new(t.path().join(format!("cache{i}")));
        let data = initdb(b, &cluster(), &cache, &log).unwrap_or_else(|e| panic!("{e}"));
        runs.push(snapshot(&data));
    }
    let (a, b) = (&runs[0], &runs[1]);
    let differ: Vec<&PathBuf> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    assert!(differ.is_empty(), "these differ between runs: {differ:?}");
    assert!(a.len() > 500, "suspiciously few files: {}", a.len());
}

#[test]
fn two_initdb_runs_are_identical_15() {
    initdb_is_reproducible(15);
}

#[test]
fn two_initdb_runs_are_identical_17() {
    initdb_is_reproducible(17);
}

#[test]
fn trust_needs_no_password_and_scram_does() {
    let no_password = ClusterSpec::default();
    assert!(
        no_password
            .validate()
            .unwrap_err()
            .to_string()
            .contains("password")
    );
    let trust = ClusterSpec {
        auth: Auth::Trust,
        ..ClusterSpec::default()
    };
    trust.validate().unwrap();
    let bad_locale = ClusterSpec {
        locale: "en_US.UTF-8".into(),
        ..cluster()
    };
    assert!(bad_locale.validate().is_err());
}

/// PostgreSQL computes a secret for a password with a random salt; pgkraft
/// must compute the same secret from that salt.
#[test]
fn scram_secret_matches_postgres() {
    let b = pg(15);
    let cache = Cache::from_env().unwrap();
    let data = initdb(b, &cluster(), &cache, &logs_dir().join("15/initdb.log")).unwrap();
    let out = single_user(
        b,
        &data,
        "postgres",
        "SET password_encryption = 'scram-sha-256';\n\
         ALTER ROLE postgres PASSWORD 'pencil';\n\
         SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres';\n",
        &logs_dir().join("15/scram.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let secret = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("1: rolpassword = \""))
        .and_then(|l| l.split('"').next())
        .unwrap_or_else(|| panic!("no secret in {}", out.stdout))
        .to_string();
    let salt_b64 = secret.split(['$', ':']).nth(2).unwrap();
    let salt = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, salt_b64)
        .unwrap_or_else(|e| panic!("salt {salt_b64:?}: {e}"));
    let ours = postgres::scram::secret("pencil", &salt, 4096).unwrap();
    assert_eq!(ours, secret);
}
