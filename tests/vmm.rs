//! The embedded runner against real KVM, with tiny guests assembled from
//! tests/guests/mini.S. No mocks: a machine without /dev/kvm fails these
//! tests unless PGKRAFT_ALLOW_NO_KVM=1 (then the KVM-dependent ones skip).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgkraft::vmm::{self, Console, GuestExit, RunOutcome, VmConfig, VmmError};

mod common;
use common::kvm_available;

struct Guest {
    _dir: tempfile::TempDir,
    elf: PathBuf,
}

/// Assembles and links mini.S with `-D<defines>` into a fresh temp dir.
fn guest(defines: &[&str]) -> Guest {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests");
    let dir = tempfile::tempdir().expect("tempdir");
    let obj = dir.path().join("guest.o");
    let elf = dir.path().join("guest.elf");
    let mut cc = Command::new("cc");
    cc.arg("-c").arg(src.join("mini.S")).arg("-o").arg(&obj);
    for d in defines {
        cc.arg(format!("-D{d}"));
    }
    check(cc, "cc");
    let mut ld = Command::new("ld");
    ld.arg("-T")
        .arg(src.join("mini.ld"))
        .args([
            "-nostdlib",
            "-static",
            "--build-id=none",
            "--no-warn-rwx-segments",
        ])
        .arg("-o")
        .arg(&elf)
        .arg(&obj);
    check(ld, "ld");
    Guest { _dir: dir, elf }
}

fn check(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} not runnable: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn symbol(elf: &Path, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(elf).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"))
        .address()
}

fn capture(input: &[u8]) -> VmConfig {
    VmConfig {
        mem_mib: 64,
        cmdline: String::new(),
        timeout: Some(Duration::from_secs(10)),
        console: Console::Capture {
            input: input.to_vec(),
        },
        net: None,
        signals: None,
        volume: None,
        hibernate: None,
        vcpu_cpu: None,
    }
}

fn run_guest(name: &str, cfg: &VmConfig) -> RunOutcome {
    let g = guest(&[&format!("GUEST_{name}")]);
    vmm::run_file(&g.elf, cfg).unwrap_or_else(|e| panic!("run {name}: {e}"))
}

#[test]
fn hello_prints_and_exits_with_status() {
    if !kvm_available() {
        return;
    }
    let out = run_guest("HELLO", &capture(b""));
    assert_eq!(out.exit, GuestExit::Status(7));
    assert_eq!(String::from_utf8_lossy(&out.console), "hello from guest\n");
    // 3 phases + 1 hypercall + the exit write.
    assert_eq!(out.exits, 5, "{out:?}");
}

#[test]
fn phases_are_reported_in_order() {
    if !kvm_available() {
        return;
    }
    let out = run_guest("HELLO", &capture(b""));
    let names: Vec<_> = out.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "vmm_ready",
            "first_guest_instruction",
            "libos_ready",
            "main_entered",
            "exit"
        ]
    );
    assert!(out.phases.windows(2).all(|w| w[0].at <= w[1].at), "{out:?}");
}

#[test]
fn kvmclock_is_published_to_the_guest() {
    if !kvm_available() {
        return;
    }
    let out = run_guest("PVCLOCK", &capture(b""));
    assert_eq!(out.exit, GuestExit::Status(0));
    let b = &out.console;
    assert_eq!(b.len(), 32 + 12 + 8, "{b:x?}");
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    // struct pvclock_vcpu_time_info
    let version = u32_at(0);
    let tsc_timestamp = u64_at(8);
    let system_time = u64_at(16);
    let mul = u32_at(24);
    let shift = b[28] as i8;
    let flags = b[29];
    // struct pvclock_wall_clock
    let (wc_version, wc_sec, wc_nsec) = (u32_at(32), u32_at(36), u32_at(40));
    let tsc = u64_at(44);
    let delta = tsc.wrapping_sub(tsc_timestamp) as i64;
    let scaled = if shift >= 0 {
        (delta as i128) << shift
    } else {
        (delta as i128) >> -shift
    };
    let guest_ns = system_time as i128 + ((scaled * mul as i128) >> 32);
    eprintln!(
        "pvclock: version {version} tsc_timestamp {tsc_timestamp} system_time {system_time} \
         mul {mul} shift {shift} flags {flags:#x}; wall clock version {wc_version} \
         {wc_sec}.{wc_nsec:09}; guest time at sample {guest_ns} ns"
    );
    assert!(
        version != 0 && version % 2 == 0,
        "pvclock version {version}"
    );
    assert_ne!(mul, 0, "tsc_to_system_mul");
    assert!(guest_ns > 0, "kvmclock reads {guest_ns} ns");
    // The wall clock is "host real time when kvmclock read 0": within a day of now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now as i64 - wc_sec as i64).abs() < 86_400 * 365 * 10,
        "wall clock {wc_sec} vs now {now}"
    );
}

/// The guest must see (and be able to use) AVX and FSGSBASE when the host
/// has them, PVM included, where KVM's supported CPUID hides them.
#[test]
fn guest_sees_and_uses_host_cpu_features() {
    if !kvm_available() {
        return;
    }
    let out = run_guest("CPU", &capture(b""));
    assert_eq!(out.exit, GuestExit::Status(0));
    let b = &out.console;
    assert_eq!(b.len(), 24 + 32, "{b:x?}");
    let ecx1 = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let ebx7 = u32::from_le_bytes(b[4..8].try_into().unwrap());
    let xcr0 = u64::from_le_bytes(b[8..16].try_into().unwrap());
    let fsbase = u64::from_le_bytes(b[16..24].try_into().unwrap());
    eprintln!(
        "guest cpuid(1).ecx {ecx1:#x} cpuid(7).ebx {ebx7:#x} xcr0 {xcr0:#x} fs base {fsbase:#x}"
    );
    assert_ne!(ecx1 & 1, 0, "SSE3");
    if std::arch::is_x86_feature_detected!("avx") {
        assert_ne!(ecx1 & (1 << 28), 0, "AVX in cpuid");
        assert_ne!(ecx1 & (1 << 27), 0, "OSXSAVE in cpuid");
        assert_eq!(xcr0 & 7, 7, "XCR0 x87|SSE|AVX");
        assert_eq!(&b[24..], [0xff; 32], "AVX store");
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo.contains(" fsgsbase") {
        assert_ne!(ebx7 & 1, 0, "FSGSBASE in cpuid");
        assert_eq!(fsbase, 0x1234_5678_9000, "wrfsbase/rdfsbase");
    }
}

/// Guest RAM holds a copy of the image: bss next to file data reads as
/// zero, and what the guest writes never reaches the image file.
#[test]
fn image_pages_are_private_and_bss_is_zero() {
    if !kvm_available() {
        return;
    }
    let g = guest(&["GUEST_BSS"]);
    let before = std::fs::read(&g.elf).unwrap();
    let probe = symbol(&g.elf, "bss_probe");
    assert_ne!(probe % 4096, 0, "bss_probe must share a page with .data");
    // ...and the file bytes that a page-granular mapping would show there
    // are not zero (they are the symbol table), so the test means something.
    let in_file = {
        use object::{Object, ObjectSegment};
        let file = object::File::parse(&*before).unwrap();
        let seg = file.segments().next().unwrap();
        (seg.file_range().0 + probe - seg.address()) as usize
    };
    assert!(before[in_file..in_file + 64].iter().any(|&b| b != 0));
    let out = vmm::run_file(&g.elf, &capture(b"")).unwrap();
    assert_eq!(out.exit, GuestExit::Status(0));
    assert_eq!(out.console, [0u8; 64]);
    // The guest wrote its hypercall block in .data.
    assert_eq!(std::fs::read(&g.elf).unwrap(), before);
}

#[test]
fn endless_guest_stops_at_timeout() {
    if !kvm_available() {
        return;
    }
    let mut cfg = capture(b"");
    cfg.timeout = Some(Duration::from_secs(1));
    let t = Instant::now();
    let out = run_guest("LOOP", &cfg);
    let took = t.elapsed();
    // The run ended by its timeout (the guest never exits by itself), and
    // not before it: a lower bound, which a slow or loaded machine cannot
    // break (how soon after it the guest stops is printed, not asserted).
    assert_eq!(out.exit, GuestExit::Timeout);
    eprintln!("timeout 1 s: run() returned after {took:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let names: Vec<_> = out.phases.iter().map(|p| p.name).collect();
    assert_eq!(names, ["vmm_ready", "first_guest_instruction", "exit"]);
}

#[test]
fn ud2_with_empty_idt_is_reported_as_shutdown() {
    if !kvm_available() {
        return;
    }
    let g = guest(&["GUEST_UD2"]);
    let out_elf = g.elf.clone();
    let out = vmm::run_file(&g.elf, &capture(b"")).unwrap();
    let GuestExit::Shutdown { regs } = &out.exit else {
        panic!("expected Shutdown, got {out:?}");
    };
    eprintln!("ud2 with empty IDT:\n{regs}");
    // The dump names the faulting instruction.
    let ud2 = symbol(&out_elf, "ud2_here");
    assert!(regs.contains(&format!("rip={ud2:#018x}")), "{regs}");
    assert!(regs.contains("cr3="), "{regs}");
}

/// Without an I/O bitmap in the TSS, CPL3 port I/O relies on IOPL=3, which
/// hardware KVM honours and PVM does not; on PVM the report must say why.
#[test]
fn port_io_without_io_bitmap_is_explained() {
    if !kvm_available() {
        return;
    }
    let g = guest(&["GUEST_HELLO", "NO_IOBITMAP"]);
    let out = vmm::run_file(&g.elf, &capture(b"")).unwrap();
    match &out.exit {
        GuestExit::Status(7) => eprintln!("this KVM honours IOPL=3"),
        GuestExit::Shutdown { regs } => {
            eprintln!("{regs}");
            assert!(regs.contains("ignores RFLAGS.IOPL"), "{regs}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn console_read_echoes_captured_input() {
    if !kvm_available() {
        return;
    }
    let input =
        b"line one\nline two is a bit longer than sixty-four bytes, so it takes two reads\n";
    let out = run_guest("ECHO", &capture(input));
    assert_eq!(out.exit, GuestExit::Status(0));
    assert_eq!(out.console, input);
}

#[test]
fn serial_port_shares_the_console() {
    if !kvm_available() {
        return;
    }
    let out = run_guest("SERIAL", &capture(b"x"));
    assert_eq!(out.exit, GuestExit::Status(3));
    assert_eq!(String::from_utf8_lossy(&out.console), "serial ok\nx\n");
}

#[test]
fn mmio_outside_ram_is_a_guest_error() {
    if !kvm_available() {
        return;
    }
    let g = guest(&["GUEST_MMIO"]);
    match vmm::run_file(&g.elf, &capture(b"")) {
        Err(e @ VmmError::Guest { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("0x10000000"), "{msg}");
            assert!(msg.contains("rip="), "{msg}");
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}

#[test]
fn cmdline_reaches_the_guest() {
    if !kvm_available() {
        return;
    }
    let g = guest(&["GUEST_CMDLINE"]);
    // Short: next to the BootInfo. Long: at the top of RAM.
    for cmdline in [
        "postgres -D '/var/lib/my data'".to_string(),
        "x".repeat(6000),
    ] {
        let mut cfg = capture(b"");
        cfg.cmdline = cmdline.clone();
        let out = vmm::run_file(&g.elf, &cfg).unwrap();
        assert_eq!(out.exit, GuestExit::Status(0));
        assert_eq!(String::from_utf8_lossy(&out.console), cmdline);
    }
    let out = vmm::run_file(&g.elf, &capture(b"")).unwrap();
    assert_eq!(out.exit, GuestExit::Status(0));
    assert!(out.console.is_empty());
}

#[test]
fn bad_hypercalls_get_errno_and_sleep_sleeps() {
    if !kvm_available() {
        return;
    }
    let t = Instant::now();
    let out = run_guest("HCERR", &capture(b""));
    let took = t.elapsed();
    assert_eq!(out.exit, GuestExit::Status(0));
    let ret = |i: usize| i64::from_le_bytes(out.console[8 * i..8 * i + 8].try_into().unwrap());
    assert_eq!(ret(0), -38, "unknown op: -ENOSYS");
    assert_eq!(ret(1), -14, "write from outside RAM: -EFAULT");
    assert_eq!(ret(2), 0, "the 50 ms sleep was served");
    eprintln!("HCERR guest with a 50 ms sleep ran in {took:?}");
    // The sleep really slept: a lower bound only, which a slow or loaded
    // machine cannot break.
    assert!(took >= Duration::from_millis(50), "{took:?}");
}

#[test]
fn non_elf_file_is_not_a_pgkraft_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipe.yaml");
    std::fs::write(&path, "postgres: 17\n").unwrap();
    let err = vmm::run_file(&path, &capture(b"")).unwrap_err();
    assert!(matches!(err, VmmError::NotElf { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("recipe.yaml"), "{msg}");
    assert!(msg.contains("not a pgkraft image"), "{msg}");
    assert!(msg.contains("pgkraft build"), "{msg}");

    assert!(matches!(
        vmm::read_boot_note(b"\x7fELF\x01\x01\x01"),
        Err(VmmError::NotX86_64 { .. })
    ));
    assert!(matches!(
        vmm::read_boot_note(b""),
        Err(VmmError::NotElf { .. })
    ));
    // A 64-bit little-endian ELF header for AArch64 (e_machine 183).
    let mut arm = [0u8; 64];
    arm[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    arm[16] = 2; // ET_EXEC
    arm[18] = 183;
    arm[20] = 1; // EV_CURRENT
    let err = vmm::read_boot_note(&arm).unwrap_err();
    assert!(matches!(err, VmmError::NotX86_64 { .. }), "{err:?}");
    assert!(err.to_string().contains("machine type 183"), "{err}");
}

#[test]
fn elf_without_note_is_not_a_pgkraft_image() {
    let g = guest(&["GUEST_HELLO", "NO_NOTE"]);
    let err = vmm::run_file(&g.elf, &capture(b"")).unwrap_err();
    assert!(matches!(err, VmmError::NoBootNote { .. }), "{err:?}");
    assert!(err.to_string().contains("pgkraft build"), "{err}");
}

#[test]
fn boot_note_is_readable_without_kvm() {
    let g = guest(&["GUEST_HELLO"]);
    let note = vmm::read_boot_note(&std::fs::read(&g.elf).unwrap()).unwrap();
    assert_eq!(note.version, pgkraft_abi::BOOT_NOTE_VERSION);
    assert!(note.entry64 >= pgkraft_abi::IMAGE_BASE);
    assert_eq!(note.gdt_limit, 8 * 7 - 1);
    assert!(note.image_end > note.stack_top);
}

#[test]
fn too_little_memory_names_the_mem_needed() {
    let g = guest(&["GUEST_HELLO"]);
    let mut cfg = capture(b"");
    cfg.mem_mib = 1;
    let err = vmm::run_file(&g.elf, &cfg).unwrap_err();
    let VmmError::TooBig { needed_mib, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        err.to_string().contains(&format!("--mem {needed_mib}")),
        "{err}"
    );
    cfg.mem_mib = *needed_mib as u32;
    // The boot with enough memory needs KVM (without it the test counts
    // as skipped, though the refusal above was checked).
    if kvm_available() {
        assert_eq!(
            vmm::run_file(&g.elf, &cfg).unwrap().exit,
            GuestExit::Status(7)
        );
    }
}

/// The child half of `stdio_console_read_is_stoppable`: only does something
/// when that test starts this binary with PGKRAFT_VMM_STDIO_CHILD set.
/// Ignored, so that it is not counted as a test of its own.
#[test]
#[ignore = "run by stdio_console_read_is_stoppable in a child process"]
fn stdio_child() {
    let Ok(elf) = std::env::var("PGKRAFT_VMM_STDIO_CHILD") else {
        return;
    };
    let cfg = VmConfig {
        mem_mib: 64,
        cmdline: String::new(),
        timeout: Some(Duration::from_secs(1)),
        console: Console::Stdio,
        net: None,
        signals: None,
        volume: None,
        hibernate: None,
        vcpu_cpu: None,
    };
    let out = vmm::run_file(Path::new(&elf), &cfg).unwrap();
    assert_eq!(out.exit, GuestExit::Timeout);
    assert!(out.console.is_empty());
}

/// Stdio: guest output goes straight to our stdout, and a guest blocked in
/// CONSOLE_READ on a stdin that never ends still stops at the timeout.
#[test]
fn stdio_console_read_is_stoppable() {
    if !kvm_available() {
        return;
    }
    let g = guest(&["GUEST_ECHO"]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "stdio_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PGKRAFT_VMM_STDIO_CHILD", &g.elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping from the host\n").unwrap();
    stdin.flush().unwrap();
    // Keep `stdin` open while waiting: the guest must block, not see EOF.
    // That the runner stopped it at its timeout (and not at end of input)
    // is the child's assertion; how long that took is not asserted.
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ping from the host\n"), "{stdout}");
}

/// Boot-time figures of the minimal guest: `cargo test --release --test vmm
/// boot_time -- --nocapture` prints them. Nothing here asserts a time (a
/// loaded machine would make it flake); the boot time of real images is
/// measured by `pgkraft bench boot` (ci/bench.sh: `pgkraft_runner`, runner
/// start to guest exit, and the process figures, next to QEMU's).
#[test]
fn boot_time() {
    if !kvm_available() {
        return;
    }
    // With --nocapture this also prints the runner's own setup breakdown
    // (parse, create VM, memory, load, vCPU) for every run.
    let _ = env_logger::builder()
        .is_test(true)
        .filter_module("pgkraft_vmm", log::LevelFilter::Debug)
        .try_init();
    let g = guest(&["GUEST_HELLO"]);
    let cfg = capture(b"");
    let mut total = Vec::new();
    let mut ready = Vec::new();
    let mut guest = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = vmm::run_file(&g.elf, &cfg).unwrap();
        total.push(t.elapsed());
        let at = |n: &str| out.phases.iter().find(|p| p.name == n).unwrap().at;
        ready.push(at("vmm_ready"));
        guest.push(at("exit") - at("vmm_ready"));
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (t, r, gst) = (med(&mut total), med(&mut ready), med(&mut guest));
    eprintln!(
        "hello guest, median of 20: run() {t:?}: call to vmm_ready {r:?}, vmm_ready to exit {gst:?}"
    );
    assert!(r <= t, "vmm_ready {r:?} comes within run() {t:?}");
}

#[test]
fn a_volume_is_checked_at_boot_and_refused_by_snapshots() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = guest(&["GUEST_HELLO"]);
    // A missing directory fails the boot, before the guest runs.
    let mut cfg = capture(b"");
    cfg.volume = Some(vmm::VolumeConfig::new(dir.path().join("missing")));
    match vmm::run_file(&g.elf, &cfg) {
        Err(VmmError::Volume(vmm::VolumeError::Open { .. })) => {}
        other => panic!("{other:?}"),
    }
    // An existing one is attached; a guest that does not look at it runs
    // as without it.
    cfg.volume = Some(vmm::VolumeConfig::new(dir.path()));
    let out = vmm::run_file(&g.elf, &cfg).unwrap();
    assert_eq!(out.exit, GuestExit::Status(7));
    // Its open files would not be in a snapshot.
    let image = vmm::BootImage::open(&g.elf).unwrap();
    match vmm::boot(&image, &cfg).unwrap().run_to_ready() {
        Err(VmmError::NotSnapshottable { what }) => assert!(what.contains("volume"), "{what}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a VM with a volume was stopped for a snapshot"),
    }
}
