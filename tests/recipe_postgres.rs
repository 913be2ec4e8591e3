//! `kind: postgres` recipes: the shipped ones, defaults, canonical values,
//! and bad inputs whose messages must say where (file:line:column, field
//! path), what was expected and what to change.

mod common;
use common::{has, repo};

use std::fs;

use pgkraft::recipe::postgres::{self as pg, Compression, Optimize};
use pgkraft::recipe::{self, Auth, Kind, PostgresSpec, RecipeError};

/// A temp dir holding a stand-in PostgreSQL 17 tarball and the recipe
/// `r.yaml`.
struct Fixture {
    dir: tempfile::TempDir,
}

const TARBALL: &str = "postgresql-17_17.11.orig.tar.bz2";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TARBALL), "not really a tarball").unwrap();
        fs::write(
            dir.path().join("postgresql-15_15.18.orig.tar.bz2"),
            "not one either",
        )
        .unwrap();
        Fixture { dir }
    }

    fn load(&self, text: &str) -> Result<recipe::Recipe, RecipeError> {
        let p = self.dir.path().join("r.yaml");
        fs::write(&p, text).unwrap();
        recipe::load(&p)
    }

    fn spec(&self, text: &str) -> PostgresSpec {
        match self.load(text).unwrap_or_else(|e| panic!("{e}")).kind {
            Kind::Postgres(p) => *p,
            Kind::Program(_) => panic!("not a postgres recipe"),
        }
    }

    fn err(&self, text: &str) -> String {
        match self.load(text) {
            Ok(r) => panic!("recipe unexpectedly loaded: {r:?}"),
            Err(e) => e.to_string(),
        }
    }
}

const HEAD: &str = "name: pg\nkind: postgres\npostgres:\n  version: \"17\"\n";

#[test]
fn default_recipe_is_postgres_17() {
    let r = recipe::load(&repo().join("recipes/postgres-17.yaml")).unwrap();
    assert_eq!(r.name, "postgres-17");
    assert_eq!(r.vm.memory_mib, 512);
    assert!(r.args.is_empty());
    let Kind::Postgres(p) = &r.kind else {
        panic!("postgres-17.yaml is a postgres recipe")
    };
    assert_eq!(p.major, 17);
    assert!(p.source_pinned);
    assert_eq!(p.source, recipe::postgres_pin(17).unwrap().spec());
    assert_eq!(p.source.path, None);
    assert_eq!(p.configure.optimize, Optimize::Os);
    assert!(p.configure.extra.is_empty());
    assert_eq!(p.extensions, ["plpgsql"]);
    assert_eq!(
        p.settings.iter().collect::<Vec<_>>(),
        [
            (&"listen_addresses".to_owned(), &"*".to_owned()),
            (&"max_connections".to_owned(), &"20".to_owned()),
            (&"shared_buffers".to_owned(), &"16MB".to_owned()),
        ]
    );
    let c = &p.cluster;
    assert!(c.preinit && !c.text_search);
    assert_eq!(
        (c.encoding.as_str(), c.locale.as_str(), c.wal_segsize_mib),
        ("UTF8", "C", 1)
    );
    assert_eq!(c.superuser, "postgres");
    assert_eq!(c.timezone, "UTC");
    assert_eq!(
        c.auth,
        Auth::ScramSha256 {
            password_env: "PGKRAFT_PASSWORD".into()
        }
    );
    assert_eq!(p.rootfs.compression, Compression::Zstd { level: 19 });
    assert_eq!(
        p.postgresql_conf(),
        "default_text_search_config = 'pg_catalog.simple'\n\
         dynamic_shared_memory_type = 'sysv'\n\
         listen_addresses = '*'\n\
         log_timezone = 'UTC'\n\
         max_connections = '20'\n\
         shared_buffers = '16MB'\n\
         timezone = 'UTC'\n"
    );
    assert_eq!(p.timezone_abbreviations(), "Default");
}

#[test]
fn postgres_15_recipe() {
    let r = recipe::load(&repo().join("recipes/postgres-15.yaml")).unwrap();
    let Kind::Postgres(p) = &r.kind else {
        panic!("postgres-15.yaml is a postgres recipe")
    };
    assert_eq!(p.major, 15);
    let pin = recipe::postgres_pin(15).unwrap();
    assert_eq!(p.source, pin.spec());
    assert_eq!(
        p.source.sha256,
        "11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4"
    );
}

#[test]
fn postgres_18_recipe() {
    let r = recipe::load(&repo().join("recipes/postgres-18.yaml")).unwrap();
    assert_eq!(r.name, "postgres-18");
    let Kind::Postgres(p) = &r.kind else {
        panic!("postgres-18.yaml is a postgres recipe")
    };
    assert_eq!(p.major, 18);
    let pin = recipe::postgres_pin(18).unwrap();
    assert_eq!(p.source, pin.spec());
    assert_eq!(pin.version, "18.6");
    assert_eq!(
        p.source.sha256,
        "555610c24d53e4316da5b7d3fc25c279d96856d5e0e23ee308c328c5fa881d9f"
    );
}

#[test]
fn defaults_when_only_the_version_is_given() {
    let f = Fixture::new();
    let r = f
        .load("name: pg\nkind: postgres\npostgres:\n  version: 17\n")
        .unwrap();
    assert_eq!(r.vm.memory_mib, recipe::DEFAULT_POSTGRES_MEMORY_MIB);
    assert_eq!(r.libos.config, recipe::KernelConfig::default());
    let Kind::Postgres(p) = r.kind else { panic!() };
    assert_eq!(p.major, 17);
    assert!(p.source_pinned);
    assert_eq!(p.configure.optimize, Optimize::O2);
    assert_eq!(p.extensions, ["plpgsql"]);
    assert!(p.settings.is_empty());
    let c = &p.cluster;
    assert!(c.preinit && !c.text_search);
    assert_eq!(c.encoding, pg::DEFAULT_ENCODING);
    assert_eq!(c.locale, pg::DEFAULT_LOCALE);
    assert_eq!(c.wal_segsize_mib, pg::DEFAULT_WAL_SEGSIZE_MIB);
    assert_eq!(c.superuser, pg::DEFAULT_SUPERUSER);
    assert_eq!(c.auth.password_env(), Some(pg::DEFAULT_PASSWORD_ENV));
    assert_eq!(c.timezone, pg::DEFAULT_TIMEZONE);
    assert_eq!(
        p.rootfs.compression,
        Compression::Zstd {
            level: pg::DEFAULT_ZSTD_LEVEL
        }
    );
}

#[test]
fn unsupported_versions() {
    let f = Fixture::new();
    let e = f.err("name: pg\nkind: postgres\npostgres:\n  version: \"16\"\n");
    has(
        &e,
        &[
            "r.yaml:4:12: postgres.version: PostgreSQL `16` is not supported",
            "supported major versions: 15, 17, 18",
            "fix: use one of them, e.g. `version: \"18\"`",
        ],
    );
    let e = f.err("name: pg\nkind: postgres\npostgres:\n  version: \"17.2\"\n");
    has(
        &e,
        &[
            "r.yaml:4:12: postgres.version: `17.2` is a release",
            "major version only",
            "write `version: \"17\"`",
        ],
    );
    let e = f.err("name: pg\nkind: postgres\npostgres:\n  version: latest\n");
    has(&e, &["PostgreSQL `latest` is not supported"]);
    let e = f.err("name: pg\nkind: postgres\npostgres:\n  source: {sha256: x}\n");
    has(
        &e,
        &[
            "postgres.version: missing required key `version`",
            "under `postgres`",
        ],
    );
}

#[test]
fn own_source() {
    let f = Fixture::new();
    let p = f.spec(&format!(
        "{HEAD}  source:\n    path: ./{TARBALL}\n    sha256: \"{}\"\n",
        SHA.to_uppercase()
    ));
    assert!(!p.source_pinned);
    assert_eq!(
        p.source.path,
        Some(f.dir.path().join(TARBALL).canonicalize().unwrap())
    );
    assert_eq!(p.source.sha256, SHA, "hashes are lowercased");
    assert_eq!(p.source.url, None);

    let p = f.spec(&format!(
        "{HEAD}  source:\n    url: https://example.org/postgresql-17.11.tar.bz2\n    sha256: {SHA}\n"
    ));
    assert_eq!(
        p.source.url.as_deref(),
        Some("https://example.org/postgresql-17.11.tar.bz2")
    );
    // Neither: found by hash in the source stores.
    let p = f.spec(&format!("{HEAD}  source:\n    sha256: {SHA}\n"));
    assert_eq!((p.source.url, p.source.path), (None, None));
}

#[test]
fn bad_sources() {
    let f = Fixture::new();
    let e = f.err(&format!(
        "{HEAD}  source:\n    path: {TARBALL}\n    sha256: abc\n"
    ));
    has(
        &e,
        &[
            "r.yaml:7:13: postgres.source.sha256: `abc` is not a sha256",
            "fix:",
        ],
    );
    let e = f.err(&format!(
        "{HEAD}  source:\n    path: nope.tar.bz2\n    sha256: {SHA}\n"
    ));
    has(
        &e,
        &[
            "r.yaml:6:11: postgres.source.path: source tarball `nope.tar.bz2` does not exist",
            "relative to the recipe's directory",
        ],
    );
    let e = f.err(&format!(
        "{HEAD}  source:\n    path: {TARBALL}\n    url: https://x/{TARBALL}\n    sha256: {SHA}\n"
    ));
    has(
        &e,
        &["postgres.source.path: give `path` or `url`, not both"],
    );
    let e = f.err(&format!(
        "{HEAD}  source:\n    url: ftp://x/{TARBALL}\n    sha256: {SHA}\n"
    ));
    has(
        &e,
        &[
            "r.yaml:6:10: postgres.source.url: `ftp://x/",
            "not an http://",
        ],
    );
    let e = f.err(&format!(
        "{HEAD}  source:\n    path: postgresql-15_15.18.orig.tar.bz2\n    sha256: {SHA}\n"
    ));
    has(
        &e,
        &[
            "postgres.source.path: `postgresql-15_15.18.orig.tar.bz2` is a PostgreSQL 15 tarball, but `postgres.version` is 17",
            "set `version: \"15\"`",
        ],
    );
    let e = f.err(&format!("{HEAD}  source:\n    path: {TARBALL}\n"));
    has(
        &e,
        &[
            "postgres.source.sha256: missing required key `sha256`",
            "fix: add under `postgres.source`",
        ],
    );
    let e = f.err(&format!("{HEAD}  source:\n    file: {TARBALL}\n"));
    has(
        &e,
        &[
            "r.yaml:6:5: postgres.source.file: unknown key `file`",
            "`path`, `url`, `sha256`",
        ],
    );
}

#[test]
fn configure_options() {
    let f = Fixture::new();
    let p = f.spec(&format!(
        "{HEAD}  configure:\n    optimize: -Os\n    extra: [--enable-debug, \"CFLAGS=-g\"]\n"
    ));
    assert_eq!(p.configure.optimize, Optimize::Os);
    assert_eq!(p.configure.optimize.flag(), "-Os");
    assert_eq!(p.configure.extra, ["--enable-debug", "CFLAGS=-g"]);

    let e = f.err(&format!("{HEAD}  configure:\n    optimize: -O4\n"));
    has(
        &e,
        &[
            "r.yaml:6:15: postgres.configure.optimize: unknown optimization level `-O4`",
            "-O0, -O1, -O2, -O3, -Os, -Og",
        ],
    );
    let e = f.err(&format!("{HEAD}  configure:\n    optimize: O2\n"));
    has(&e, &["did you mean `optimize: -O2`?"]);
    let e = f.err(&format!(
        "{HEAD}  configure:\n    extra: [--enable-debug, --prefix=/opt/pg]\n"
    ));
    has(
        &e,
        &[
            "r.yaml:6:29: postgres.configure.extra[1]: `--prefix` cannot be set here",
            "fix: remove it",
        ],
    );
    let e = f.err(&format!("{HEAD}  configure:\n    extra: [\"\"]\n"));
    has(
        &e,
        &["postgres.configure.extra[0]: empty configure argument"],
    );
}

#[test]
fn extensions() {
    let f = Fixture::new();
    let p = f.spec(&format!("{HEAD}  extensions: [pg_trgm, hstore, plpgsql]\n"));
    assert_eq!(p.extensions, ["hstore", "pg_trgm", "plpgsql"], "sorted");
    let p = f.spec(&format!("{HEAD}  extensions: []\n"));
    assert!(p.extensions.is_empty());

    let e = f.err(&format!("{HEAD}  extensions: [plpgsq]\n"));
    has(
        &e,
        &[
            "r.yaml:5:16: postgres.extensions[0]: unknown extension `plpgsq`",
            "linked into it",
            "did you mean `plpgsql`?",
        ],
    );
    let e = f.err(&format!("{HEAD}  extensions: [plpgsql, pgcrypto]\n"));
    has(
        &e,
        &[
            "postgres.extensions[1]: extension `pgcrypto` cannot be linked into an image: it needs OpenSSL",
            "fix: remove `pgcrypto`",
        ],
    );
    let e = f.err(&format!("{HEAD}  extensions: [hstore, hstore]\n"));
    has(
        &e,
        &["postgres.extensions[1]: `hstore` is listed twice (also postgres.extensions[0])"],
    );
}

#[test]
fn settings_are_canonical() {
    let f = Fixture::new();
    let p = f.spec(&format!(
        "{HEAD}  settings:\n    Shared_Buffers: 16MB\n    fsync: no\n    log_connections: yes\n    \
         jit: false\n    max_connections: 20\n    random_page_cost: 1.10\n    \
         log_min_duration_statement: -1\n    search_path: \"'$user', public\"\n    \
         plpgsql.variable_conflict: use_column\n    application_name: \"\"\n    \
         timezone_abbreviations: Australia\n"
    ));
    let s = &p.settings;
    assert_eq!(s["shared_buffers"], "16MB");
    assert_eq!(s["fsync"], "off");
    assert_eq!(s["log_connections"], "on");
    assert_eq!(s["jit"], "off");
    assert_eq!(s["max_connections"], "20");
    assert_eq!(s["random_page_cost"], "1.1");
    assert_eq!(s["log_min_duration_statement"], "-1");
    assert_eq!(s["search_path"], "'$user', public");
    assert_eq!(s["plpgsql.variable_conflict"], "use_column");
    assert_eq!(s["application_name"], "");
    assert!(!s.contains_key("Shared_Buffers"));
    assert_eq!(p.timezone_abbreviations(), "Australia");
    let conf = p.postgresql_conf();
    assert!(
        conf.contains("search_path = '''$user'', public'\n"),
        "{conf}"
    );
    assert!(conf.contains("application_name = ''\n"), "{conf}");
    // With text search on, initdb's own default text search configuration stays.
    let p = f.spec(&format!("{HEAD}cluster:\n  text_search: true\n"));
    assert!(
        !p.server_settings()
            .contains_key("default_text_search_config")
    );
}

#[test]
fn bad_settings() {
    let f = Fixture::new();
    let e = f.err(&format!("{HEAD}  settings:\n    timezone: Europe/Paris\n"));
    has(
        &e,
        &[
            "r.yaml:6:5: postgres.settings.timezone: `timezone` cannot be set in postgres.settings",
            "fix: set `cluster.timezone` instead",
        ],
    );
    let e = f.err(&format!(
        "{HEAD}  settings:\n    work_mem: 4MB\n    WORK_MEM: 8MB\n"
    ));
    has(&e, &["are the same setting (names ignore case)"]);
    let e = f.err(&format!("{HEAD}  settings:\n    work-mem: 4MB\n"));
    has(
        &e,
        &["r.yaml:6:5: postgres.settings.work-mem: `work-mem` is not a setting name"],
    );
    let e = f.err(&format!("{HEAD}  settings:\n    work_mem:\n"));
    has(
        &e,
        &[
            "r.yaml:6:",
            "postgres.settings.work_mem: expected a string, number or boolean",
            "found nothing (null)",
        ],
    );
    let e = f.err(&format!("{HEAD}  settings:\n    work_mem: [4MB]\n"));
    has(
        &e,
        &[
            "postgres.settings.work_mem: expected a string, number or boolean",
            "found a list",
        ],
    );
    let e = f.err(&format!(
        "{HEAD}  settings:\n    timezone_abbreviations: ../etc\n"
    ));
    has(
        &e,
        &["postgres.settings.timezone_abbreviations: `../etc` is not an abbreviation set"],
    );
    let e = f.err(&format!("{HEAD}  settings: [a]\n"));
    has(
        &e,
        &["r.yaml:5:13: postgres.settings: expected a mapping of setting: value"],
    );
}

#[test]
fn cluster_options() {
    let f = Fixture::new();
    let p = f.spec(&format!(
        "{HEAD}cluster:\n  preinit: false\n  encoding: utf-8\n  locale: C.utf8\n  \
         wal_segsize_mib: 16\n  superuser: admin\n  auth: trust\n  timezone: Europe/Paris\n  \
         text_search: true\n"
    ));
    let c = &p.cluster;
    assert!(!c.preinit && c.text_search);
    assert_eq!(c.encoding, "UTF8");
    assert_eq!(c.locale, "C.UTF-8");
    assert_eq!(c.wal_segsize_mib, 16);
    assert_eq!(c.superuser, "admin");
    assert_eq!(c.auth, Auth::Trust);
    assert_eq!(c.auth.as_str(), "trust");
    assert_eq!(c.auth.password_env(), None);
    assert_eq!(c.timezone, "Europe/Paris");
    let p = f.spec(&format!(
        "{HEAD}cluster:\n  encoding: LATIN1\n  password_env: MY_PW\n"
    ));
    assert_eq!(p.cluster.encoding, "LATIN1");
    assert_eq!(p.cluster.auth.password_env(), Some("MY_PW"));
}

#[test]
fn bad_cluster_options() {
    let f = Fixture::new();
    let e = f.err(&format!("{HEAD}cluster:\n  wal_segsize_mib: 3\n"));
    has(
        &e,
        &[
            "r.yaml:6:20: cluster.wal_segsize_mib: 3 MiB is not a WAL segment size",
            "power of two from 1 to 1024",
            "wal_segsize_mib: 2",
        ],
    );
    has(
        &f.err(&format!("{HEAD}cluster:\n  wal_segsize_mib: 2048\n")),
        &[
            "2048 MiB is not a WAL segment size",
            "wal_segsize_mib: 1024",
        ],
    );
    has(
        &f.err(&format!("{HEAD}cluster:\n  wal_segsize_mib: 0\n")),
        &["0 MiB is not a WAL segment size"],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  encoding: UTF-16\n"));
    has(
        &e,
        &[
            "r.yaml:6:13: cluster.encoding: `UTF-16` is not a server encoding",
            "fix:",
        ],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  locale: en_US.UTF-8\n"));
    has(
        &e,
        &[
            "r.yaml:6:11: cluster.locale: locale `en_US.UTF-8` is not available",
            "musl",
            "fix: use `C`",
        ],
    );
    let e = f.err(&format!(
        "{HEAD}cluster:\n  locale: C.UTF-8\n  encoding: LATIN1\n"
    ));
    has(
        &e,
        &["cluster.encoding: locale C.UTF-8 needs encoding UTF8"],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  superuser: pg_admin\n"));
    has(
        &e,
        &[
            "cluster.superuser: invalid role name `pg_admin`",
            "reserved",
        ],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  auth: md5\n"));
    has(
        &e,
        &[
            "r.yaml:6:9: cluster.auth: unknown authentication method `md5`",
            "it replaces md5",
        ],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  auth: scram\n"));
    has(&e, &["did you mean `auth: scram-sha-256`?"]);
    let e = f.err(&format!(
        "{HEAD}cluster:\n  auth: trust\n  password_env: PW\n"
    ));
    has(
        &e,
        &[
            "r.yaml:7:17: cluster.password_env: `auth: trust` uses no password",
            "remove `password_env`",
        ],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  password_env: 1PW\n"));
    has(
        &e,
        &["cluster.password_env: `1PW` is not an environment variable name"],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  timezone: /etc/localtime\n"));
    has(
        &e,
        &["r.yaml:6:13: cluster.timezone: invalid time zone `/etc/localtime`"],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  preinit: maybe\n"));
    has(
        &e,
        &["r.yaml:6:", "cluster.preinit: expected true or false"],
    );
    let e = f.err(&format!("{HEAD}cluster:\n  timezon: UTC\n"));
    has(
        &e,
        &[
            "r.yaml:6:3: cluster.timezon: unknown key `timezon`",
            "did you mean `timezone`?",
        ],
    );
}

#[test]
fn rootfs_options() {
    let f = Fixture::new();
    let p = f.spec(&format!("{HEAD}rootfs:\n  compression: none\n"));
    assert_eq!(p.rootfs.compression, Compression::None);
    assert_eq!(p.rootfs.compression.extension(), "tar");
    let p = f.spec(&format!("{HEAD}rootfs:\n  zstd_level: 3\n"));
    assert_eq!(p.rootfs.compression, Compression::Zstd { level: 3 });

    let e = f.err(&format!(
        "{HEAD}rootfs:\n  compression: none\n  zstd_level: 3\n"
    ));
    has(
        &e,
        &["r.yaml:7:15: rootfs.zstd_level: `zstd_level` has no effect with `compression: none`"],
    );
    let e = f.err(&format!("{HEAD}rootfs:\n  zstd_level: 23\n"));
    has(
        &e,
        &["rootfs.zstd_level: zstd level 23 is out of range: expected 1 to 22"],
    );
    let e = f.err(&format!("{HEAD}rootfs:\n  zstd_level: -1\n"));
    has(
        &e,
        &["rootfs.zstd_level: expected a whole number from 1 to 22"],
    );
    let e = f.err(&format!("{HEAD}rootfs:\n  compression: gzip\n"));
    has(
        &e,
        &["rootfs.compression: unknown compression `gzip`; expected zstd or none"],
    );
    let e = f.err(&format!("{HEAD}rootfs:\n  compression: zst\n"));
    has(&e, &["did you mean `compression: zstd`?"]);
}

#[test]
fn sections_of_the_other_kind_are_refused() {
    let f = Fixture::new();
    fs::write(f.dir.path().join("main.c"), "int main(void){return 0;}\n").unwrap();
    let program = "name: app\nkind: program\nprogram:\n  sources: [main.c]\n";
    let e = f.err(&format!("{program}cluster:\n  timezone: UTC\n"));
    has(
        &e,
        &[
            "r.yaml:5:1: cluster: `cluster` belongs to `kind: postgres` recipes, and this one is `kind: program`",
            "fix: remove the `cluster` section, or set `kind: postgres`",
        ],
    );
    has(
        &f.err(&format!("{program}rootfs:\n  compression: none\n")),
        &["`rootfs` belongs to `kind: postgres`"],
    );
    has(
        &f.err(&format!("{program}postgres:\n  version: 17\n")),
        &["`postgres` belongs to `kind: postgres`"],
    );
    let e = f.err(&format!("{HEAD}program:\n  sources: [main.c]\n"));
    has(
        &e,
        &["r.yaml:5:1: program: `program` belongs to `kind: program` recipes"],
    );
    let e = f.err(&format!("{HEAD}args: [-c, fsync=off]\n"));
    has(
        &e,
        &[
            "r.yaml:5:8: args: `args` are a program's arguments",
            "postgres.settings",
        ],
    );
    let e = f.err("name: pg\nkind: postgres\n");
    has(
        &e,
        &[
            "r.yaml:2:7: postgres: `kind: postgres` needs a `postgres` section",
            "version: \"17\"",
        ],
    );
}

#[test]
fn misplaced_keys_point_to_their_section() {
    let f = Fixture::new();
    let e = f.err(&format!("{HEAD}zstd_level: 3\n"));
    has(
        &e,
        &[
            "r.yaml:5:1: zstd_level: unknown key",
            "did you mean `zstd_level` under `rootfs:`?",
        ],
    );
    let e = f.err(&format!("{HEAD}  superuser: me\n"));
    has(
        &e,
        &[
            "r.yaml:5:3: postgres.superuser: unknown key `superuser`",
            "did you mean `superuser` under `cluster:`?",
        ],
    );
    let e = f.err("name: pg\nkind: postgres\npostgres:\n  versoin: 17\n");
    has(
        &e,
        &["postgres.versoin: unknown key", "did you mean `version`?"],
    );
}

#[test]
fn memory_default_and_override() {
    let f = Fixture::new();
    let r = f.load(&format!("{HEAD}vm:\n  memory_mib: 512\n")).unwrap();
    assert_eq!(r.vm.memory_mib, 512);
    let e = f.err(&format!("{HEAD}vm:\n  memory_mib: 8\n"));
    has(
        &e,
        &["8 MiB is out of range", "`memory_mib: 256` (the default)"],
    );
}

#[test]
fn cluster_timezones_trims_the_tz_database_to_a_list() {
    let f = Fixture::new();
    let p = f.spec(HEAD);
    assert_eq!(p.cluster.timezones, None, "the whole database by default");
    let p = f.spec(&format!(
        "{HEAD}cluster:\n  timezones: [Europe/Paris, America/New_York]\n"
    ));
    assert_eq!(
        p.cluster.timezones,
        Some(vec![
            "Europe/Paris".to_owned(),
            "America/New_York".to_owned()
        ])
    );
    let e = f.err(&format!(
        "{HEAD}cluster:\n  timezones: [\"../etc/passwd\"]\n"
    ));
    has(
        &e,
        &[
            "cluster.timezones: invalid time zone `../etc/passwd`",
            "fix: list tz database names",
        ],
    );
}

#[test]
fn test_modules() {
    let f = Fixture::new();
    assert!(f.spec(HEAD).test_modules.is_empty());
    let p = f.spec(&format!(
        "{HEAD}  test_modules: [regress, refint, autoinc]\n"
    ));
    assert_eq!(p.test_modules, ["autoinc", "refint", "regress"]);

    let e = f.err(&format!("{HEAD}  test_modules: [regress.so]\n"));
    has(
        &e,
        &[
            "r.yaml:5:18: postgres.test_modules[0]: unknown test module `regress.so`",
            "autoinc, insert_username, moddatetime, refint, regress",
            "did you mean `regress`?",
        ],
    );
    let e = f.err(&format!("{HEAD}  test_modules: [regress, pg_trgm]\n"));
    has(
        &e,
        &[
            "postgres.test_modules[1]: `pg_trgm` is an extension, not a test module",
            "list it in postgres.extensions",
        ],
    );
    let e = f.err(&format!("{HEAD}  test_modules: [refint, refint]\n"));
    has(
        &e,
        &[
            "postgres.test_modules[1]: `refint` is listed twice (also postgres.test_modules[0])",
            "fix: list each test module once",
        ],
    );
    let e = f.err(&format!("{HEAD}  test_module: [regress]\n"));
    has(&e, &["did you mean `test_modules`?"]);
}

#[test]
fn rootfs_files() {
    let f = Fixture::new();
    let d = f.dir.path();
    fs::create_dir_all(d.join("data/sub")).unwrap();
    fs::write(d.join("data/a.csv"), "1,2\n").unwrap();
    fs::write(d.join("one.txt"), "one\n").unwrap();

    assert!(f.spec(HEAD).rootfs.files.is_empty());
    let p = f.spec(&format!(
        "{HEAD}rootfs:\n  files:\n    - from: data\n      to: /srv/in\n    - from: ./one.txt\n      to: /srv/one.txt\n"
    ));
    let canon = d.canonicalize().unwrap();
    let got: Vec<_> = p
        .rootfs
        .files
        .iter()
        .map(|h| (h.from.clone(), h.to.display().to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (canon.join("data"), "/srv/in".to_owned()),
            (canon.join("one.txt"), "/srv/one.txt".to_owned()),
        ]
    );

    let e = f.err(&format!(
        "{HEAD}rootfs:\n  files:\n    - from: missing.txt\n      to: /srv/x\n"
    ));
    has(
        &e,
        &[
            "r.yaml:7:13: rootfs.files[0].from: `missing.txt` does not exist",
            "fix: paths are relative to the recipe's directory",
        ],
    );
    for (to, why) in [
        ("srv/x", "it is not absolute"),
        ("/", "it is the root directory itself"),
        ("/srv/../etc", "it has `.` or `..` parts"),
        ("/srv//x", "it has doubled or trailing slashes"),
    ] {
        let e = f.err(&format!(
            "{HEAD}rootfs:\n  files:\n    - from: one.txt\n      to: \"{to}\"\n"
        ));
        has(
            &e,
            &[
                &format!(
                    "r.yaml:8:11: rootfs.files[0].to: `{to}` is not a path the image can carry: {why}"
                ),
                "fix: write the absolute path in the guest",
            ],
        );
    }
    let e = f.err(&format!(
        "{HEAD}rootfs:\n  files:\n    - from: data\n      to: /srv\n    - from: one.txt\n      to: /srv/one.txt\n"
    ));
    has(
        &e,
        &["rootfs.files[1].to: `/srv/one.txt` overlaps rootfs.files[0].to (`/srv`)"],
    );
    let e = f.err(&format!(
        "{HEAD}rootfs:\n  files:\n    - from: one.txt\n      into: /srv/one.txt\n"
    ));
    has(&e, &["rootfs.files[0]", "unknown key `into`"]);
    let e = f.err(&format!("{HEAD}rootfs:\n  files:\n    - from: one.txt\n"));
    has(&e, &["rootfs.files[0]", "`to`"]);
}
