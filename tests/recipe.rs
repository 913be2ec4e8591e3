//! Recipe loading against real files: the example recipes, and bad inputs
//! whose messages must carry what a user needs to fix them (file, line:column,
//! field path, expectation, fix).

mod common;
use common::{has, repo};

use std::fs;
use std::path::PathBuf;

use pgkraft::recipe::{self, KernelConfig, Kind, RecipeError};

/// A temp dir holding `main.c`, `util.c`, a `frag.config` and the recipe
/// `r.yaml` with the given text.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("main.c"), "int main(void) { return 0; }\n").unwrap();
        fs::write(dir.path().join("util.c"), "int util(void) { return 1; }\n").unwrap();
        fs::write(dir.path().join("frag.config"), "CONFIG_MAX_FDS=64\n").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        p
    }

    fn load(&self, text: &str) -> Result<recipe::Recipe, RecipeError> {
        recipe::load(&self.write("r.yaml", text))
    }

    /// The error message for a recipe that must fail.
    fn err(&self, text: &str) -> String {
        match self.load(text) {
            Ok(r) => panic!("recipe unexpectedly loaded: {r:?}"),
            Err(e) => e.to_string(),
        }
    }
}

const OK: &str = "name: app\nkind: program\nprogram:\n  sources: [main.c]\n";

#[test]
fn every_example_recipe_loads() {
    let mut seen = 0;
    for entry in fs::read_dir(repo().join("recipes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let r = recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.name, path.file_stem().unwrap().to_str().unwrap());
        assert_eq!(r.file, path.canonicalize().unwrap());
        assert_eq!(r.source_text, fs::read_to_string(&path).unwrap());
        match &r.kind {
            Kind::Program(p) => {
                assert!(!p.sources.is_empty());
                for s in &p.sources {
                    assert!(s.is_absolute() && s.is_file(), "{}", s.display());
                }
            }
            Kind::Postgres(pg) => {
                assert!(recipe::SUPPORTED_MAJORS.contains(&pg.major));
                assert!(
                    pg.source_pinned,
                    "{}: example recipes use the pins",
                    path.display()
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 9, "expected the nine example recipes, found {seen}");
}

#[test]
fn hello_recipe_contents() {
    let r = recipe::load(&repo().join("recipes/hello.yaml")).unwrap();
    assert_eq!(r.args, ["hello", "world"]);
    assert_eq!(r.argv(), ["hello", "hello", "world"]);
    assert_eq!(r.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(r.vm.memory_mib, 64);
    let Kind::Program(p) = &r.kind else {
        panic!("hello.yaml is a program recipe")
    };
    assert_eq!(
        p.sources,
        [repo().join("test-vms/apps/hello.c").canonicalize().unwrap()]
    );
    assert_eq!(p.cflags, ["-O2"]);
    assert_eq!(
        r.libos.fragments,
        [repo()
            .join("kernel-config/default.config")
            .canonicalize()
            .unwrap()]
    );
    assert_eq!(r.libos.config, KernelConfig::default());
}

#[test]
fn defaults_when_optional_fields_are_omitted() {
    let f = Fixture::new();
    let r = f.load(OK).unwrap();
    assert!(r.args.is_empty() && r.env.is_empty());
    assert_eq!(r.vm.memory_mib, recipe::DEFAULT_MEMORY_MIB);
    assert!(r.libos.fragments.is_empty());
    assert_eq!(r.libos.config, KernelConfig::default());
    assert_eq!(r.libos.config.consts["MAX_FDS"], 1024);
    assert!(!r.libos.config.enabled("trace-syscalls"));
}

#[test]
fn fragments_apply_in_order() {
    let f = Fixture::new();
    f.write(
        "trace.config",
        "CONFIG_TRACE_SYSCALLS=y\nCONFIG_MAX_FDS=32\n",
    );
    let r = f
        .load(&format!(
            "{OK}libos:\n  config: [trace.config, frag.config]\n"
        ))
        .unwrap();
    assert_eq!(r.libos.fragments.len(), 2);
    assert!(r.libos.config.enabled("trace-syscalls"));
    assert_eq!(r.libos.config.consts["MAX_FDS"], 64);
    assert_eq!(r.libos.config.consts["MAIN_STACK_KIB"], 8192);
    // The shipped debug fragment turns tracing on.
    let debug = repo().join("kernel-config/debug.config");
    let cfg = KernelConfig::from_files(&[debug]).unwrap();
    assert!(cfg.enabled("trace-syscalls"));
}

#[test]
fn values_that_look_like_other_types_stay_strings() {
    let f = Fixture::new();
    let r = f
        .load(&format!(
            "{OK}args: [yes, 1, 2.5, \"\"]\nenv:\n  PORT: 5432\n  ON: true\n"
        ))
        .unwrap();
    assert_eq!(r.args, ["yes", "1", "2.5", ""]);
    assert_eq!(r.env["PORT"], "5432");
    assert_eq!(r.env["ON"], "true");
}

#[test]
fn missing_recipe_file() {
    let f = Fixture::new();
    let p = f.path("nope.yaml");
    let e = recipe::load(&p).unwrap_err();
    assert!(matches!(e, RecipeError::NotFound { .. }));
    has(
        &e.to_string(),
        &[&p.display().to_string(), "does not exist", "fix:"],
    );
}

#[test]
fn yaml_syntax_error() {
    let f = Fixture::new();
    let e = f.err("name: app\nkind: program\nprogram:\n  sources: [main.c\n  cflags: [-O2]\n");
    has(
        &e,
        &[
            "r.yaml:5:",
            "YAML syntax error",
            "fix:",
            "  5 |   cflags: [-O2]",
        ],
    );
    let e = f.err("name: \"app\nkind: program\n");
    has(&e, &["r.yaml:1:7", "YAML syntax error", "unclosed quote"]);
}

#[test]
fn unknown_top_level_key() {
    let f = Fixture::new();
    let e = f.err(&format!("{OK}nmae: x\n"));
    has(
        &e,
        &[
            "r.yaml:5:1: nmae: unknown key `nmae`",
            "`name`",
            "`vm`",
            "did you mean `name`?",
        ],
    );
    // A key that exists, but at another level.
    let e = f.err(&format!("{OK}memory_mib: 64\n"));
    has(
        &e,
        &[
            "r.yaml:5:1: memory_mib: unknown key",
            "did you mean `memory_mib` under `vm:`?",
        ],
    );
}

#[test]
fn unknown_nested_key_with_suggestion() {
    let f = Fixture::new();
    let e = f.err("name: app\nkind: program\nprogram:\n  srcs: [main.c]\n");
    has(
        &e,
        &[
            "r.yaml:4:3: program.srcs: unknown key `srcs`",
            "under `program` are `sources`, `cflags`",
            "did you mean `sources`?",
            "  4 |   srcs: [main.c]\n    |   ^",
        ],
    );
}

#[test]
fn missing_required_key() {
    let f = Fixture::new();
    let e = f.err("kind: program\nprogram:\n  sources: [main.c]\n");
    has(
        &e,
        &[
            "name: missing required key `name`",
            "fix: add at the top level:",
            "name: hello",
        ],
    );
    let e = f.err("name: app\nkind: program\nprogram:\n  cflags: []\n");
    has(
        &e,
        &[
            "program.sources: missing required key `sources`",
            "under `program`",
        ],
    );
    let e = f.err("name: app\nkind: program\n");
    has(&e, &["r.yaml:2:7: program:", "needs a `program` section"]);
}

#[test]
fn wrong_type() {
    let f = Fixture::new();
    let e = f.err(&format!("{OK}vm:\n  memory_mib: \"lots\"\n"));
    has(
        &e,
        &[
            "r.yaml:6:15: vm.memory_mib: expected a whole number of MiB from 16 to 65536",
            "memory_mib: 64",
        ],
    );
    let e = f.err("name: app\nkind: program\nprogram:\n  sources: main.c\n");
    has(
        &e,
        &[
            "r.yaml:4:12: program.sources: expected a list of C file paths",
            "sources: [main.c, util.c]",
        ],
    );
    let e = f.err(&format!("{OK}env: [A]\n"));
    has(&e, &["r.yaml:5:6: env: expected a mapping of NAME: value"]);
    let e = f.err(&format!("{OK}libos:\n  config: {{a: b}}\n"));
    has(
        &e,
        &["r.yaml:6:11: libos.config: expected a path or a list of paths"],
    );
}

#[test]
fn bad_name() {
    let f = Fixture::new();
    let e = f.err("name: My_App\nkind: program\nprogram:\n  sources: [main.c]\n");
    has(
        &e,
        &[
            "r.yaml:1:7: name: invalid image name `My_App`",
            "name: my-app",
        ],
    );
    let long = "a".repeat(65);
    let e = f.err(&format!(
        "name: {long}\nkind: program\nprogram:\n  sources: [main.c]\n"
    ));
    has(&e, &["longer than 64"]);
}

#[test]
fn missing_source_file() {
    let f = Fixture::new();
    let e = f.err("name: app\nkind: program\nprogram:\n  sources: [main.c, nope.c]\n");
    has(
        &e,
        &[
            "r.yaml:4:21: program.sources[1]: source file `nope.c` does not exist",
            &f.dir
                .path()
                .canonicalize()
                .unwrap()
                .join("nope.c")
                .display()
                .to_string(),
            "relative to the recipe's directory",
        ],
    );
    let e = f.err("name: app\nkind: program\nprogram:\n  sources: []\n");
    has(&e, &["r.yaml:4:3: program.sources: no source files"]);
    let e = f.err("name: app\nkind: program\nprogram:\n  sources: [main.c, ./main.c]\n");
    has(
        &e,
        &["program.sources[1]", "same file as program.sources[0]"],
    );
    f.write("x.h", "");
    let e = f.err("name: app\nkind: program\nprogram:\n  sources: [x.h]\n");
    has(&e, &["program.sources[0]", "not a C source file"]);
}

#[test]
fn unknown_kind() {
    let f = Fixture::new();
    let e = f.err("name: app\nkind: progam\nprogram:\n  sources: [main.c]\n");
    has(
        &e,
        &[
            "r.yaml:2:7: kind: unknown kind `progam`",
            "supported kinds: program",
            "did you mean `kind: program`?",
        ],
    );
    let e = f.err("name: app\nkind: postgre\n");
    has(
        &e,
        &[
            "r.yaml:2:7: kind: unknown kind `postgre`",
            "supported kinds: program, postgres",
            "did you mean `kind: postgres`?",
        ],
    );
}

#[test]
fn memory_out_of_range() {
    let f = Fixture::new();
    let e = f.err(&format!("{OK}vm:\n  memory_mib: 8\n"));
    has(
        &e,
        &[
            "r.yaml:6:15: vm.memory_mib: 8 MiB is out of range: expected 16 to 65536 MiB",
            "fix:",
        ],
    );
    let e = f.err(&format!("{OK}vm:\n  memory_mib: 70000\n"));
    has(&e, &["70000 MiB is out of range"]);
}

#[test]
fn bad_env() {
    let f = Fixture::new();
    let e = f.err(&format!("{OK}env:\n  1BAD: x\n"));
    has(
        &e,
        &[
            "r.yaml:6:3: env.1BAD: invalid environment variable name",
            "fix:",
        ],
    );
    let e = f.err(&format!("{OK}env:\n  EMPTY:\n"));
    has(
        &e,
        &[
            "r.yaml:6:8: env.EMPTY: expected a string",
            "found nothing (null)",
        ],
    );
}

#[test]
fn bad_kernel_config_line() {
    let f = Fixture::new();
    let frag = f.write("bad.config", "# comment\n\nCONFIG_MAX_FDS=8\n");
    let e = f
        .load(&format!(
            "{OK}libos:\n  config: [frag.config, bad.config]\n"
        ))
        .unwrap_err();
    assert!(matches!(e, RecipeError::KernelConfig(_)));
    let e = e.to_string();
    has(
        &e,
        &[
            &format!(
                "{}:3: CONFIG_MAX_FDS: value out of range `8`",
                frag.canonicalize().unwrap().display()
            ),
            "from 16 to 65536",
            "note: this fragment is libos.config[1] of ",
            "r.yaml:6:25",
        ],
    );
    f.write("bad.config", "CONFIG_TRACE_SYSCALLS\n");
    let e = f.err(&format!("{OK}libos:\n  config: bad.config\n"));
    has(
        &e,
        &[
            "bad.config:1: malformed line `CONFIG_TRACE_SYSCALLS`",
            "CONFIG_NAME=value",
        ],
    );
}

#[test]
fn unknown_kernel_config_key() {
    let f = Fixture::new();
    f.write("bad.config", "CONFIG_TRACE_SYSCALL=y\n");
    let e = f.err(&format!("{OK}libos:\n  config: bad.config\n"));
    has(
        &e,
        &[
            "bad.config:1: CONFIG_TRACE_SYSCALL: unknown kernel-config key",
            "did you mean CONFIG_TRACE_SYSCALLS?",
            "CONFIG_MAIN_STACK_KIB, CONFIG_MAX_FDS, CONFIG_TRACE_SYSCALLS",
        ],
    );
}

#[test]
fn missing_kernel_config_fragment() {
    let f = Fixture::new();
    let e = f.err(&format!(
        "{OK}libos:\n  config: [frag.config, gone.config]\n"
    ));
    has(
        &e,
        &["r.yaml:6:25: libos.config[1]: kernel-config fragment `gone.config` does not exist"],
    );
}

#[test]
fn empty_and_multi_document_recipes() {
    let f = Fixture::new();
    has(
        &f.err("# nothing here\n"),
        &["the recipe is empty", "name: hello"],
    );
    has(
        &f.err(&format!("{OK}---\nname: b\n")),
        &["single YAML document", "---"],
    );
    has(
        &f.err(&format!("{OK}name: b\n")),
        &["r.yaml:5:1", "`name` appears twice"],
    );
}

#[test]
fn load_yaml_for_other_files() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Vm {
        memory: u32,
        #[serde(default)]
        value: Option<u32>,
    }
    let f = Fixture::new();
    let p = f.write("vm.yaml", "memory: 5\nvalu: 3\n");
    let e = recipe::load_yaml::<Vm>(&p, "test VM definition")
        .unwrap_err()
        .to_string();
    has(
        &e,
        &[
            "vm.yaml:2:1: valu: unknown key `valu`",
            "did you mean `value`?",
        ],
    );
    let e = recipe::load_yaml::<Vm>(&f.path("gone.yaml"), "test VM definition").unwrap_err();
    has(&e.to_string(), &["test VM definition", "does not exist"]);
    assert_eq!(
        recipe::load_yaml::<Vm>(&f.write("ok.yaml", "memory: 5\n"), "x")
            .unwrap()
            .memory,
        5
    );
}

#[test]
fn docs_cover_every_field_and_key() {
    let docs = fs::read_to_string(repo().join("README.md")).unwrap();
    for field in [
        "name",
        "kind",
        "program.sources",
        "program.cflags",
        "args",
        "env",
        "libos.config",
        "vm.memory_mib",
        "postgres",
        "postgres.version",
        "postgres.source",
        "postgres.source.path",
        "postgres.source.url",
        "postgres.source.sha256",
        "postgres.configure.optimize",
        "postgres.configure.extra",
        "postgres.extensions",
        "postgres.settings",
        "cluster.preinit",
        "cluster.encoding",
        "cluster.locale",
        "cluster.wal_segsize_mib",
        "cluster.superuser",
        "cluster.auth",
        "cluster.password_env",
        "cluster.timezone",
        "cluster.text_search",
        "rootfs.compression",
        "rootfs.zstd_level",
    ] {
        assert!(
            docs.contains(&format!("`{field}`")),
            "README.md lacks `{field}`"
        );
    }
    // Defaults that the table must state as the code has them.
    for default in [
        format!("`{}`", recipe::DEFAULT_MEMORY_MIB),
        format!("`{}`", recipe::DEFAULT_POSTGRES_MEMORY_MIB),
        format!("`{}`", recipe::postgres::DEFAULT_ENCODING),
        format!("`{}`", recipe::postgres::DEFAULT_LOCALE),
        format!("`{}`", recipe::postgres::DEFAULT_SUPERUSER),
        format!("`{}`", recipe::postgres::DEFAULT_PASSWORD_ENV),
        format!("`{}`", recipe::postgres::DEFAULT_TIMEZONE),
        format!("`{}`", recipe::postgres::DEFAULT_ZSTD_LEVEL),
        format!("`{}`", recipe::postgres::DEFAULT_WAL_SEGSIZE_MIB),
    ] {
        assert!(
            docs.contains(&default),
            "README.md lacks the default {default}"
        );
    }
    for name in recipe::supported_extensions(17) {
        assert!(docs.contains(name), "README.md lacks the extension {name}");
    }
    for key in recipe::KEYS {
        assert!(docs.contains(key.name), "README.md lacks {}", key.name);
        assert!(
            docs.contains(&key.default_text()),
            "README.md lacks {}'s default",
            key.name
        );
    }
}
