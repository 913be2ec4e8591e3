//! The process table and what changes it: clone (as vfork), execve, exit,
//! wait4, kill, sessions and groups, and the switch between processes.
//!
//! Every process runs the one program the image carries, in a slot of its
//! own (slot.rs); the libOS runs on the calling process's stack, so a
//! process that has nothing to do switches to another from inside its
//! system call (`idle`), and the VM waits in the runner only when no
//! process can go on. The libOS state that belongs to a process (open
//! files, signals, user-memory loans, working directory, umask, FS base)
//! lives in the usual statics for the running one and is swapped at a
//! switch: the rest of the libOS does not know about processes.
//!
//! Scheduling is cooperative: a process runs until it waits or exits.
//! Who may be ready is found by asking: every waiting process runs its own
//! check again once anything happened since it last looked (`EPOCH`, which
//! every system call advances) or its deadline passed.

use super::owned::Owned;
use super::slot;
use crate::arch::switch::{self, Start};
use crate::arch::{cpu, uaccess};
use crate::fs::inode::Inode;
use crate::syscall::{Errno, Result, signal};
use crate::{fd, fs, mem};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

/// Processes at once (PostgreSQL: max_connections + its helpers).
const MAX_PROCS: usize = 1024;
const SIGCHLD: u64 = 17;
const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const WNOHANG: u64 = 1;

/// Saved stack pointers, by table index (the switch writes them).
static CONTEXTS: [AtomicU64; MAX_PROCS] = [const { AtomicU64::new(0) }; MAX_PROCS];
/// The running process's table index.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// Advanced by every system call: a waiting process looks again once it
/// moved.
static EPOCH: AtomicU64 = AtomicU64::new(1);
/// When the running process last started to run on the vCPU (monotonic
/// ns): the start of the time `charge` adds to its CPU time.
static RAN_SINCE: AtomicU64 = AtomicU64::new(0);

/// Adds the time since RAN_SINCE to process `i`'s CPU time and starts a
/// new stretch. One vCPU runs one process at a time, so a process's CPU
/// time is the sum of its stretches; the libOS's work on its behalf (its
/// system calls are function calls) counts as user time, and so does a
/// synchronous volume request's wait for the host (the vCPU is held in
/// the request's exit, not in `hc::WAIT`).
fn charge(t: &mut Table, i: usize) {
    let now = crate::time::monotonic_ns();
    let since = RAN_SINCE.swap(now, Ordering::Relaxed);
    let p = t.get_mut(i);
    p.cpu_ns = p.cpu_ns.saturating_add(now.saturating_sub(since));
}

/// The VM waited in the runner until now: nobody ran.
fn ran_nobody() {
    RAN_SINCE.store(crate::time::monotonic_ns(), Ordering::Relaxed);
}

/// The running process's CPU time (ns), or its waited-for children's.
pub fn cpu_ns(children: bool) -> u64 {
    let mut t = table();
    let i = me();
    if children {
        return t.get(i).children_cpu_ns;
    }
    charge(&mut t, i);
    t.get(i).cpu_ns
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Running,
    /// In `idle`: looks again when `EPOCH` moves past `seen` or at `until`.
    Waiting,
    /// In clone: resumes when its vfork child has exec'd or exited.
    VforkParent,
    /// Exited; `status` is what wait4 reports.
    Zombie {
        status: u32,
    },
    /// Exited with nobody to wait for it (its parent ignores SIGCHLD):
    /// the entry goes once the process has switched away.
    Gone,
}

/// A process's share of libOS state while it is not running.
struct Saved {
    fds: fd::Table,
    signals: signal::Signals,
    loans: uaccess::Loans,
    cwd: Option<Arc<Inode>>,
    umask: u32,
    fs_base: u64,
}

impl Saved {
    /// Trade places with the running process's state.
    fn swap_with_current(&mut self) {
        fd::swap_current(&mut self.fds);
        signal::swap_current(&mut self.signals);
        uaccess::swap_loans(&mut self.loans);
        fs::swap_current(&mut self.cwd, &mut self.umask);
        let fs_base = cpu::fs_base();
        cpu::set_fs_base(self.fs_base);
        self.fs_base = fs_base;
    }
}

struct Process {
    pid: u32,
    ppid: u32,
    pgid: u32,
    sid: u32,
    state: State,
    saved: Option<Box<Saved>>,
    /// Its copy of the program (none for a vfork child before execve: it
    /// runs in its parent's).
    slot: Option<usize>,
    owned: Owned,
    /// Bytes of its main stack (part of `owned`; 0 once it left it).
    stack: u64,
    until: u64,
    seen: u64,
    /// The table index of the parent blocked in clone, until exec or exit.
    vfork_parent: Option<usize>,
    /// Sent to the parent at exit (clone's low byte; SIGCHLD).
    exit_signal: u64,
    /// prctl(PR_SET_PDEATHSIG): sent to this process when its parent exits.
    pdeath_signal: u64,
    /// CPU time: what it ran between switches, less the VM's waits in the
    /// runner (`charge`).
    cpu_ns: u64,
    /// It has waited on a TCP connection: it serves a client.
    client: bool,
    /// It waits now for its client's input: its session is idle.
    awaiting_client: bool,
    /// CPU time of its children it waited for, and of theirs.
    children_cpu_ns: u64,
}

struct Table {
    procs: Vec<Option<Process>>,
    next_pid: u32,
    /// Memory of processes that have exited or exec'd, freed once nothing
    /// runs on it any more (after the next switch or system call).
    reap: Vec<(u64, u64)>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    procs: Vec::new(),
    next_pid: 1,
    reap: Vec::new(),
});

fn table() -> spin::MutexGuard<'static, Table> {
    TABLE.try_lock().expect("process table locked twice")
}

impl Table {
    fn get(&self, i: usize) -> &Process {
        self.procs[i].as_ref().expect("a live table index")
    }

    fn get_mut(&mut self, i: usize) -> &mut Process {
        self.procs[i].as_mut().expect("a live table index")
    }

    fn index_of(&self, pid: u32) -> Option<usize> {
        self.procs
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.pid == pid))
    }

    /// The process a pid argument names: 0 the caller, else that pid.
    fn resolve(&self, pid: u64) -> core::result::Result<usize, Errno> {
        match pid {
            0 => Ok(me()),
            p => self.index_of(p as u32).ok_or(Errno::ESRCH),
        }
    }

    /// Whether `p` is in the set a kill/wait4 pid argument other than -1
    /// names: > 0 that process, 0 the caller's group, < -1 the group -pid.
    fn selects(pid: i64, p: &Process, my_pgid: u32) -> bool {
        match pid {
            0 => p.pgid == my_pgid,
            p_ if p_ > 0 => p.pid as i64 == p_,
            g => p.pgid as i64 == -g,
        }
    }

    fn insert(&mut self, p: Process) -> core::result::Result<usize, Errno> {
        if let Some(i) = self.procs.iter().position(Option::is_none) {
            self.procs[i] = Some(p);
            return Ok(i);
        }
        if self.procs.len() >= MAX_PROCS {
            return Err(Errno::EAGAIN);
        }
        self.procs.push(Some(p));
        Ok(self.procs.len() - 1)
    }

    fn new_pid(&mut self) -> u32 {
        loop {
            let pid = self.next_pid;
            self.next_pid = if pid >= 4_194_303 { 2 } else { pid + 1 };
            if self.index_of(pid).is_none() {
                return pid;
            }
        }
    }

    /// The next process after `me` (round robin) that should look again.
    fn pick(&self, me: usize, now: u64, epoch: u64) -> Option<usize> {
        let n = self.procs.len();
        (1..n).map(|k| (me + k) % n).find(|&i| {
            self.procs[i]
                .as_ref()
                .is_some_and(|p| p.state == State::Waiting && (p.seen != epoch || p.until <= now))
        })
    }

    fn earliest_deadline(&self) -> u64 {
        self.procs
            .iter()
            .flatten()
            .filter(|p| p.state == State::Waiting)
            .map(|p| p.until)
            .min()
            .unwrap_or(u64::MAX)
    }
}

fn new_process(pid: u32, ppid: u32, pgid: u32, sid: u32) -> Process {
    Process {
        pid,
        ppid,
        pgid,
        sid,
        state: State::Running,
        saved: None,
        slot: None,
        owned: Owned::default(),
        stack: 0,
        until: 0,
        seen: 0,
        vfork_parent: None,
        exit_signal: SIGCHLD,
        pdeath_signal: 0,
        cpu_ns: 0,
        children_cpu_ns: 0,
        client: false,
        awaiting_client: false,
    }
}

/// The first process (pid 1): the image's program, started by start.rs in
/// `slot` with its stack at `stack`.
pub fn init_first(slot: usize, stack: (u64, u64)) {
    let mut t = table();
    let pid = t.new_pid();
    let mut p = new_process(pid, 0, pid, pid);
    p.slot = Some(slot);
    p.owned.add(stack.0, stack.1);
    p.stack = stack.1;
    let i = t.insert(p).expect("an empty table has room");
    CURRENT.store(i, Ordering::Relaxed);
    // Its CPU time starts now, not at the clock's zero (the VMM's set-up).
    ran_nobody();
}

fn me() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

pub fn pid() -> u32 {
    TABLE
        .lock()
        .procs
        .get(me())
        .and_then(|p| p.as_ref())
        .map_or(1, |p| p.pid)
}

/// Whether the running process is the first one (the image's program as
/// booted): it has the program break, and its exit ends the VM.
pub fn is_first() -> bool {
    me() == 0
}

/// The running process's program base (0 for a vfork child before exec).
pub fn slot_base() -> u64 {
    table().get(me()).slot.map_or(0, slot::base)
}

pub fn ppid() -> u32 {
    table().get(me()).ppid
}

/// Whether any other process exists (a wait that only this process could
/// end would never end).
pub fn alone() -> bool {
    table().procs.iter().flatten().count() <= 1
}

/// RAM the processes own, in bytes (meminfo).
pub struct Memory {
    /// Their main stacks.
    pub stacks: u64,
    /// Everything else they own, and the program break's pages (which all
    /// processes share, as they share the one `mem`).
    pub mapped: u64,
}

/// `brk` is the break's pages, [start, end): musl's malloc maps its guard
/// page over the first one (MAP_FIXED), so a page may be both the break's
/// and a process's mapping; it is counted once.
pub fn memory(brk: (u64, u64)) -> Memory {
    let t = table();
    let procs = t.procs.iter().flatten();
    let (stacks, owned, in_brk) = procs.fold((0, 0, 0), |(s, o, b), p| {
        (
            s + p.stack,
            o + p.owned.bytes(),
            b + p.owned.bytes_within(brk.0, brk.1),
        )
    });
    Memory {
        stacks,
        mapped: owned.saturating_sub(stacks) + (brk.1 - brk.0) - in_brk,
    }
}

/// Memory the running process now owns (mmap, its stack).
pub fn own(at: u64, len: u64) {
    table().get_mut(me()).owned.add(at, len);
}

/// Memory the running process gave back (munmap).
pub fn disown(at: u64, len: u64) {
    table().get_mut(me()).owned.remove(at, len);
}

/// Every system call: something may have changed for a waiting process,
/// and memory of exited processes can go back now that nothing runs on it.
pub fn on_syscall() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    reap();
}

fn reap() {
    let ranges = {
        let mut t = table();
        let me = me();
        for (i, p) in t.procs.iter_mut().enumerate() {
            if i != me && p.as_ref().is_some_and(|p| p.state == State::Gone) {
                *p = None;
            }
        }
        if t.reap.is_empty() {
            return;
        }
        core::mem::take(&mut t.reap)
    };
    for (at, len) in ranges {
        let _ = mem::free(at, len);
    }
}

/// Switch from the running process `from` to `to` (the caller has set
/// `from`'s state). Returns when something switches back to `from`.
fn switch_to(mut t: spin::MutexGuard<'static, Table>, from: usize, to: usize) {
    charge(&mut t, from);
    let mut saved = t
        .get_mut(to)
        .saved
        .take()
        .expect("a waiting process has saved state");
    saved.swap_with_current();
    t.get_mut(from).saved = Some(saved);
    t.get_mut(to).state = State::Running;
    CURRENT.store(to, Ordering::Relaxed);
    drop(t);
    let load = CONTEXTS[to].load(Ordering::Relaxed);
    // SAFETY-free: arch::switch keeps the unsafe; `load` was saved by a
    // switch away from `to` or made by switch::frame.
    switch::switch(&CONTEXTS[from], load);
    // Whoever switched back to us restored our state and CURRENT.
    reap();
}

/// Nothing for the running process to do before `until` (monotonic ns)
/// unless something changes: let another process look, or, if none can
/// go on, wait in the runner (stack::idle_until) for a device or a
/// deadline. Returns to let the caller look again.
pub fn idle(until: u64) {
    let i = me();
    let now = crate::time::monotonic_ns();
    let mut t = table();
    let epoch = EPOCH.load(Ordering::Relaxed);
    {
        let p = t.get_mut(i);
        p.state = State::Waiting;
        p.until = until;
        p.seen = epoch;
    }
    if let Some(next) = t.pick(i, now, epoch) {
        switch_to(t, i, next);
        return;
    }
    let until = t.earliest_deadline().min(until);
    t.get_mut(i).state = State::Running;
    charge(&mut t, i);
    drop(t);
    crate::net::stack::idle_until(until);
    ran_nobody();
    // Time passed and devices may have work: everyone looks again.
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// The running process is about to wait on descriptors: `client` if they
/// include a TCP connection (it serves a client from now on), `reads` if it
/// waits for that connection's input (the session is idle until the wait
/// ends: the value returned says so while it lives). The runner's idle
/// timer counts sessions that are not idle (`busy_sessions`): a query
/// running, sleeping, waiting on a lock or writing to a slow client is
/// never frozen by a hibernation.
pub fn client_wait(client: bool, reads: bool) -> ClientWait {
    let mut t = table();
    let p = t.get_mut(me());
    p.client |= client;
    p.awaiting_client = client && reads;
    ClientWait(me())
}

/// Ends an idle session's wait when dropped ([`client_wait`]).
pub struct ClientWait(usize);

impl Drop for ClientWait {
    fn drop(&mut self) {
        if let Some(p) = table().procs.get_mut(self.0).and_then(|p| p.as_mut()) {
            p.awaiting_client = false;
        }
    }
}

/// Processes serving a client that are not waiting for its input.
pub fn busy_sessions() -> u32 {
    table()
        .procs
        .iter()
        .flatten()
        .filter(|p| p.state != State::Gone && p.client && !p.awaiting_client)
        .count() as u32
}

/// clone(2) as posix_spawn uses it: CLONE_VM | CLONE_VFORK, a stack of the
/// child's own. The child runs at once, in the parent's memory, until it
/// calls execve or exits; then the parent returns from here with its pid.
/// `ret` and `r9` are the caller's return address and r9 (musl's __clone
/// continues there in the child with rsp = `stack`).
pub fn clone(flags: u64, stack: u64, ret: u64, r9: u64) -> Result {
    const SUPPORTED: u64 = CLONE_VM | CLONE_VFORK | 0xff;
    if flags & (CLONE_VM | CLONE_VFORK) != CLONE_VM | CLONE_VFORK
        || flags & !SUPPORTED != 0
        || stack == 0
    {
        // Threads and fork need what one address space cannot give them.
        return Err(Errno::ENOSYS);
    }
    // The child starts on `stack` (musl's argument at [stack, stack+8)) and
    // its first switch frame sits just below it.
    uaccess::slice(stack.saturating_sub(128), 136)?;
    let parent = me();
    let mut t = table();
    let (ppid, pgid, sid) = {
        let p = t.get(parent);
        (p.pid, p.pgid, p.sid)
    };
    let pid = t.new_pid();
    let mut child = new_process(pid, ppid, pgid, sid);
    child.state = State::Waiting;
    child.vfork_parent = Some(parent);
    child.exit_signal = flags & 0xff;
    child.saved = Some(Box::new(Saved {
        fds: fd::copy_current(),
        signals: signal::for_child(),
        loans: uaccess::Loans::new(),
        cwd: Some(fs::cwd()),
        umask: fs::umask(),
        fs_base: cpu::fs_base(),
    }));
    let c = t.insert(child)?;
    CONTEXTS[c].store(
        switch::frame(stack, Start::CloneChild { ret, sp: stack, r9 }),
        Ordering::Relaxed,
    );
    t.get_mut(parent).state = State::VforkParent;
    switch_to(t, parent, c);
    Ok(pid as i64)
}

/// Process `pid` leaves the memory it owned (exit, execve): its System V
/// attachments end, shared file mappings give their pages back to their
/// files, and the memory itself is freed once nothing runs on it (reap).
fn leave_memory(pid: u32, owned: Vec<(u64, u64)>) {
    crate::syscall::shm::detach_all_of(pid);
    for &(at, len) in &owned {
        crate::syscall::mm::leave(at, len);
    }
    table().reap.extend(owned);
}

/// A vfork child has exec'd or exited: its parent may go on.
fn release_vfork_parent(t: &mut Table, child: usize) {
    if let Some(parent) = t.get_mut(child).vfork_parent.take() {
        let p = t.get_mut(parent);
        p.state = State::Waiting;
        p.seen = 0;
    }
}

/// execve of the image's program: a fresh copy in a slot, on a fresh stack
/// holding `argv` and `envp`. Never returns on success.
pub fn exec(argv: &[Vec<u8>], envp: &[Vec<u8>]) -> Result {
    let (index, base) = slot::take()?;
    let stack = match crate::start::new_stack(argv, envp, base) {
        Ok(s) => s,
        Err(e) => {
            slot::give_back(index);
            return Err(e);
        }
    };
    let closed = fd::close_on_exec();
    drop(closed);
    signal::reset_for_exec();
    cpu::set_fs_base(0);
    let i = me();
    let mut t = table();
    let p = t.get_mut(i);
    let old_slot = p.slot.replace(index);
    // A vfork child owns nothing yet (it ran in its parent's memory); a
    // process that exec's itself leaves its old stack and mappings, freed
    // once we are off that stack.
    let old = p.owned.take_all();
    p.owned.add(stack.base, stack.len);
    p.stack = stack.len;
    release_vfork_parent(&mut t, i);
    let pid = t.get(i).pid;
    drop(t);
    // Linux detaches System V segments and unmaps everything at execve.
    leave_memory(pid, old);
    if let Some(s) = old_slot {
        slot::give_back(s);
    }
    EPOCH.fetch_add(1, Ordering::Relaxed);
    cpu::enter_program(base + slot::program().entry, stack.sp)
}

/// exit_group(2).
pub fn exit(code: u64) -> ! {
    exit_with((code as u32 & 0xff) << 8)
}

/// A signal's default action ended the process.
pub fn exit_by_signal(sig: u64) -> ! {
    if me() == 0 {
        crate::log!("libos: terminated by signal {sig}");
    }
    exit_with(sig as u32 & 0x7f)
}

fn exit_with(status: u32) -> ! {
    let i = me();
    if i == 0 {
        // The image's program is the VM: its end is the VM's.
        let code = if status & 0x7f != 0 {
            128 + (status & 0x7f)
        } else {
            status >> 8
        };
        crate::platform::exit(code as u8)
    }
    // Close its files (outside the table lock: closing may wake others).
    let mut fds = fd::empty();
    fd::swap_current(&mut fds);
    drop(fds);
    let mut t = table();
    let (pid, ppid) = {
        let p = t.get(i);
        (p.pid, p.ppid)
    };
    let owned = t.get_mut(i).owned.take_all();
    t.get_mut(i).stack = 0;
    drop(t);
    leave_memory(pid, owned);
    let mut t = table();
    if let Some(s) = t.get_mut(i).slot.take() {
        slot::give_back(s);
    }
    release_vfork_parent(&mut t, i);
    // Orphans go to the first process, as to init; PR_SET_PDEATHSIG fires.
    let init_pid = t.get(0).pid;
    let mut death = Vec::new();
    for (j, p) in t.procs.iter_mut().enumerate() {
        if let Some(p) = p.as_mut().filter(|p| p.ppid == pid) {
            p.ppid = init_pid;
            if p.pdeath_signal != 0 {
                death.push((j, p.pdeath_signal));
            }
        }
    }
    for (j, sig) in death {
        send(&mut t, j, sig);
    }
    let exit_signal = t.get(i).exit_signal;
    let parent = t.index_of(ppid);
    if let Some(parent) = parent
        && exit_signal != 0
    {
        send(&mut t, parent, exit_signal);
    }
    let parent_ignores = parent
        .and_then(|p| t.get(p).saved.as_ref())
        .is_some_and(|s| s.signals.ignores_children());
    charge(&mut t, i);
    t.get_mut(i).state = match parent_ignores {
        true => State::Gone,
        false => State::Zombie { status },
    };
    EPOCH.fetch_add(1, Ordering::Relaxed);
    loop {
        let epoch = EPOCH.load(Ordering::Relaxed);
        if let Some(next) = t.pick(i, u64::MAX, epoch) {
            switch_to(t, i, next);
            unreachable!("a zombie is never switched back to");
        }
        // Nobody can go on yet (all wait on a vfork child?): wait.
        let until = t.earliest_deadline();
        drop(t);
        crate::net::stack::idle_until(until.min(crate::time::monotonic_ns() + 1_000_000_000));
        ran_nobody();
        EPOCH.fetch_add(1, Ordering::Relaxed);
        t = table();
    }
}

/// Make `sig` pending in process `i` and let it look again.
fn send(t: &mut Table, i: usize, sig: u64) {
    if i == me() {
        signal::raise(sig);
    } else if let Some(saved) = t.get_mut(i).saved.as_mut() {
        saved.signals.raise(sig);
    }
    let p = t.get_mut(i);
    if p.state == State::Waiting {
        p.seen = 0;
    }
}

/// Signals from the host (hc::WAIT): bit n is signal n, for the first
/// process (`pgkraft serve` asks the postmaster to shut down).
pub fn host_signals(mask: u32) {
    let mut t = table();
    if t.procs.first().is_none_or(Option::is_none) {
        return;
    }
    for sig in (1..32u64).filter(|s| mask & (1 << s) != 0) {
        send(&mut t, 0, sig);
    }
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// kill(2): pid > 0 one process, 0 the caller's group, -1 everyone but
/// the first process and the caller, < -1 the group -pid.
pub fn kill(pid: i64, sig: u64) -> Result {
    let mut t = table();
    let caller = me();
    let my_pgid = t.get(caller).pgid;
    let mut found = false;
    let mut live = Vec::new();
    for (i, p) in t.procs.iter().enumerate() {
        let Some(p) = p.as_ref().filter(|p| p.state != State::Gone) else {
            continue;
        };
        let zombie = matches!(p.state, State::Zombie { .. });
        let hit = match pid {
            -1 => i != 0 && i != caller && !zombie,
            // A group (or everyone) counts only live members; a pid names
            // a zombie too (kill succeeds and does nothing), as on Linux.
            p_ if p_ <= 0 => Table::selects(p_, p, my_pgid) && !zombie,
            _ => Table::selects(pid, p, my_pgid),
        };
        if hit {
            found = true;
            if !zombie {
                live.push(i);
            }
        }
    }
    if !found {
        return Err(Errno::ESRCH);
    }
    if sig != 0 {
        for i in live {
            send(&mut t, i, sig);
        }
    }
    Ok(0)
}

/// wait4(2) without rusage: a child that has exited, as `pid` selects it
/// (> 0 that one, -1 any, 0 the caller's group, < -1 the group -pid).
/// wait4(2); `rusage`, if not 0, gets the reaped child's CPU time
/// (with its own children's).
pub fn wait4(pid: i64, status: u64, options: u64, rusage: u64) -> Result {
    let reaped = if options & WNOHANG != 0 {
        reap_child(pid)?
    } else {
        let mut got = None;
        crate::syscall::poll::wait_for(None, || {
            got = reap_child(pid)?;
            Ok(got.is_some() as i64)
        })?;
        got
    };
    let Some((child, st, cpu)) = reaped else {
        return Ok(0);
    };
    if status != 0 {
        uaccess::write(status, &st)?;
    }
    if rusage != 0 {
        uaccess::write(rusage, &crate::syscall::process::rusage(cpu))?;
    }
    Ok(child as i64)
}

/// One look for wait4: the pid, status and CPU time of an exited child
/// `pid` selects, taken out of the table (its CPU time added to its
/// parent's children's); None while its children all run; ECHILD without
/// any.
fn reap_child(pid: i64) -> core::result::Result<Option<(u32, u32, u64)>, Errno> {
    let mut t = table();
    let (my_pid, my_pgid) = {
        let p = t.get(me());
        (p.pid, p.pgid)
    };
    let mut any = false;
    for j in 0..t.procs.len() {
        let Some(p) = t.procs[j]
            .as_ref()
            .filter(|p| p.ppid == my_pid && p.state != State::Gone)
        else {
            continue;
        };
        if pid != -1 && !Table::selects(pid, p, my_pgid) {
            continue;
        }
        any = true;
        if let State::Zombie { status } = p.state {
            let child = p.pid;
            let cpu = p.cpu_ns.saturating_add(p.children_cpu_ns);
            t.procs[j] = None;
            let me = t.get_mut(me());
            me.children_cpu_ns = me.children_cpu_ns.saturating_add(cpu);
            return Ok(Some((child, status, cpu)));
        }
    }
    if any { Ok(None) } else { Err(Errno::ECHILD) }
}

pub fn setsid() -> Result {
    let mut t = table();
    let i = me();
    let p = t.get(i);
    let pid = p.pid;
    let leads = t
        .procs
        .iter()
        .flatten()
        .any(|q| q.pgid == pid && q.pid != pid)
        || p.pgid == pid;
    if leads {
        return Err(Errno::EPERM);
    }
    let p = t.get_mut(i);
    p.sid = pid;
    p.pgid = pid;
    Ok(pid as i64)
}

pub fn setpgid(pid: u64, pgid: u64) -> Result {
    let mut t = table();
    let target = t.resolve(pid)?;
    let new = if pgid == 0 {
        t.get(target).pid
    } else {
        pgid as u32
    };
    t.get_mut(target).pgid = new;
    Ok(0)
}

pub fn getpgid(pid: u64) -> Result {
    let t = table();
    Ok(t.get(t.resolve(pid)?).pgid as i64)
}

pub fn getsid(pid: u64) -> Result {
    let t = table();
    Ok(t.get(t.resolve(pid)?).sid as i64)
}

pub fn set_pdeath_signal(sig: u64) {
    table().get_mut(me()).pdeath_signal = sig;
}

pub fn pdeath_signal() -> u64 {
    table().get(me()).pdeath_signal
}
