//! The runner's error type: every variant is a message a user can act on.
//!
//! docs/ARCHITECTURE.md §4.

use std::path::PathBuf;

/// Everything [`run`](super::run) and [`read_boot_note`](super::read_boot_note)
/// can fail with. A guest that *exits* (even by crashing) is not an error; see
/// [`GuestExit`](super::GuestExit).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(
        "/dev/kvm does not exist: this machine (or container) has no KVM. pgkraft boots images \
         under its own KVM-based runner, so it needs a Linux host with KVM enabled (a kvm \
         module loaded, or a container started with --device /dev/kvm)"
    )]
    KvmMissing,

    #[error(
        "/dev/kvm exists but this user may not open it for reading and writing ({source}). Add \
         the user to the kvm group (`sudo usermod -aG kvm $USER`, then log in again; on some \
         systems the group that owns /dev/kvm has another name, see `ls -l /dev/kvm`), or run \
         pgkraft as a user that is already in it"
    )]
    KvmPermission { source: std::io::Error },

    #[error("could not open /dev/kvm: {source}")]
    KvmOpen { source: std::io::Error },

    #[error("could not read image {path}: {source}")]
    ReadImage {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{} is not an ELF file, so this is not a pgkraft image; build one with `pgkraft build`",
        show(path)
    )]
    NotElf { path: Option<PathBuf> },

    #[error(
        "{} is an ELF file but not a 64-bit x86-64 one ({detail}), so this is not a pgkraft \
         image; build one with `pgkraft build`",
        show(path)
    )]
    NotX86_64 {
        path: Option<PathBuf>,
        detail: String,
    },

    #[error(
        "{} is an x86-64 ELF file without the `pgkraft` boot note, so this is not a pgkraft \
         image (a plain kernel or program cannot be entered directly); build one with \
         `pgkraft build`",
        show(path)
    )]
    NoBootNote { path: Option<PathBuf> },

    #[error(
        "{} has a malformed pgkraft boot note or segment table: {detail}. The image is damaged \
         or was built by an incompatible pgkraft; rebuild it with `pgkraft build`",
        show(path)
    )]
    BadImage {
        path: Option<PathBuf>,
        detail: String,
    },

    #[error(
        "the image does not fit in {mem_mib} MiB of guest memory: {what} reaches guest address \
         {end:#x}. Run it with --mem {needed_mib} or more"
    )]
    TooBig {
        mem_mib: u32,
        needed_mib: u64,
        what: String,
        end: u64,
    },

    #[error("could not reserve {mem_mib} MiB of guest memory: {detail}")]
    Memory { mem_mib: u32, detail: String },

    #[error("KVM ioctl {ioctl} failed: {source}")]
    Ioctl {
        ioctl: &'static str,
        source: kvm_ioctls::Error,
    },

    #[error("could not start the vCPU thread: {source}")]
    Thread { source: std::io::Error },

    /// `VmConfig::vcpu_cpu` names a CPU the vCPU cannot have to itself.
    #[error("cannot pin the vCPU to CPU {cpu}: {detail}")]
    Placement { cpu: usize, detail: String },

    /// A published address could not be bound, or the network not set up.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),

    #[error(
        "this VM cannot be snapshotted: {what} is not saved in snapshots yet; snapshot it \
         without a network (no --publish or --tap) and without a volume"
    )]
    NotSnapshottable { what: &'static str },

    /// The volume's directory cannot be served (missing, not a directory,
    /// not readable) or its tag is not valid.
    #[error(transparent)]
    Volume(#[from] crate::p9::VolumeError),

    #[error(
        "a resumed VM cannot have a volume yet (snapshots do not hold its open files); \
         resume it without one"
    )]
    VolumeOnResume,

    #[error(
        "a resumed VM cannot have a network device yet (snapshots hold none); resume it \
         without one"
    )]
    NetOnResume,

    #[error(
        "a VM hibernates when no client is connected to its published ports, so it needs the \
         user-mode network: give it --publish (not --tap)"
    )]
    HibernateNeedsPublish,

    #[error("hibernating the VM: could not {what} {}: {source}", path.display())]
    Hibernate {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The guest did something this runner cannot continue from (MMIO outside RAM,
    /// an exit reason it does not handle). `console` holds the output captured
    /// before it (empty with `Console::Stdio`, where it was already printed).
    #[error("the guest stopped with an error: {reason}\n{regs}")]
    Guest {
        reason: String,
        regs: String,
        console: Vec<u8>,
    },
}

fn show(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "the file".to_string(),
    }
}

impl VmmError {
    /// Opening /dev/kvm failed with `errno`.
    pub(crate) fn kvm_open(errno: i32) -> VmmError {
        let source = std::io::Error::from_raw_os_error(errno);
        match errno {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => VmmError::KvmMissing,
            libc::EACCES | libc::EPERM => VmmError::KvmPermission { source },
            _ => VmmError::KvmOpen { source },
        }
    }

    pub(crate) fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::Ioctl { ioctl, source }
    }

    /// Attaches the image path to errors found while parsing its bytes.
    pub fn with_path(self, p: &std::path::Path) -> VmmError {
        let some = Some(p.to_path_buf());
        match self {
            VmmError::NotElf { path: None } => VmmError::NotElf { path: some },
            VmmError::NotX86_64 { path: None, detail } => {
                VmmError::NotX86_64 { path: some, detail }
            }
            VmmError::NoBootNote { path: None } => VmmError::NoBootNote { path: some },
            VmmError::BadImage { path: None, detail } => VmmError::BadImage { path: some, detail },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_open_errors_say_what_to_do() {
        let missing = VmmError::kvm_open(libc::ENOENT).to_string();
        assert!(missing.contains("no KVM"), "{missing}");
        let denied = VmmError::kvm_open(libc::EACCES).to_string();
        assert!(denied.contains("kvm group"), "{denied}");
        assert!(matches!(
            VmmError::kvm_open(libc::EMFILE),
            VmmError::KvmOpen { .. }
        ));
    }

    #[test]
    fn image_errors_name_the_file_and_the_fix() {
        let e = VmmError::NotElf { path: None }.with_path(std::path::Path::new("/x/db.img"));
        let msg = e.to_string();
        assert!(msg.starts_with("/x/db.img is not an ELF file"), "{msg}");
        assert!(msg.contains("`pgkraft build`"), "{msg}");
        let e = VmmError::TooBig {
            mem_mib: 16,
            needed_mib: 40,
            what: "a segment at 0x100000".into(),
            end: 39 << 20,
        };
        assert!(e.to_string().contains("--mem 40"), "{e}");
    }
}
