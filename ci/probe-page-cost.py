#!/usr/bin/env python3
"""What a guest's first touch of a page costs on this host's KVM, by how the
host backs the page: the numbers behind the runner's resume design (README
"Design notes"). Uses the machine's own probe guest (../shared/tools/
kvm-probe.py: identity mapped, 2 MiB guest pages), with guest RAM 2 MiB
aligned so the host can back it with huge pages. Run as root:

    python3 ci/probe-page-cost.py

Each line: 16 MiB touched by a CPL3 loop, one byte per 4 KiB page, and the
cost per page. A measuring stick, not a test: it asserts nothing.
"""
import ctypes, importlib.util, mmap, os, struct, sys, tempfile

PROBE = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'tools', 'kvm-probe.py')
if not os.path.exists(PROBE):
    sys.exit('probe-page-cost: %s not found (it is this machine\'s tool)' % PROBE)
spec = importlib.util.spec_from_file_location('kvm_probe', PROBE)
kp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kp)

MB = 1 << 20
BASE, SIZE = 16 * MB, 16 * MB
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_RANDOM, MADV_HUGEPAGE, MADV_POPULATE_READ, MADV_POPULATE_WRITE = 1, 14, 22, 23
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANON = 0x01, 0x02, 0x10, 0x20


class _AlignedMmap:
    """kvm-probe's `mmap` module, except that anonymous guest RAM is 2 MiB aligned."""
    keep = []

    def __getattr__(self, name):
        return getattr(mmap, name)

    def mmap(self, fd, size, *args, **kw):
        if fd != -1:
            return mmap.mmap(fd, size, *args, **kw)
        raw = mmap.mmap(-1, size + 2 * MB)
        addr = (ctypes.addressof(ctypes.c_char.from_buffer(raw)) + 2 * MB - 1) & ~(2 * MB - 1)
        self.keep.append(raw)
        return (ctypes.c_char * size).from_address(addr)


kp.mmap = _AlignedMmap()
data = tempfile.NamedTemporaryFile(dir=os.environ.get('TMPDIR', '/var/tmp'))
data.write(os.urandom(SIZE))
data.flush()


def run(name, backing, write=False):
    g = kp.Guest(memsz=0x4000000)
    for i in range(8, 16):  # 16-32 MiB: user pages
        struct.pack_into('Q', g.mem, 0x4000 + 8 * i, (i * 0x200000) | 0x87)
    addr = ctypes.addressof(g.mem) + BASE
    backing(addr)
    n = SIZE // 4096
    op = b'\x88\x07' if write else b'\x8a\x07'  # mov [rdi],al / mov al,[rdi]
    code = b'\x48\xbf' + struct.pack('Q', BASE) + kp.loop(n, op + b'\x48\x81\xc7' + struct.pack('I', 4096)) + b'\xe6\x99'
    g.mem[0x100000:0x100000 + len(code)] = code
    g.start(0x100000, 3, 0x1ff000)
    dt, exits, ports = g.go()
    ok = 'ok' if ports and ports[-1] == kp.DONE else 'FAILED'
    print('%-58s %-6s %8.2f ms  %6.2f us/page' % (name, ok, dt * 1e3, dt * 1e6 / n))


def anon(huge=False, populate=False):
    def back(addr):
        assert libc.mmap(addr, SIZE, 3, MAP_PRIVATE | MAP_ANON | MAP_FIXED, -1, 0) == addr
        if huge:
            libc.madvise(addr, SIZE, MADV_HUGEPAGE)
        if populate:
            libc.madvise(addr, SIZE, MADV_POPULATE_WRITE)
    return back


def file(flags, advice=(), populate=None):
    def back(addr):
        os.posix_fadvise(data.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert libc.mmap(addr, SIZE, 3, flags | MAP_FIXED, data.fileno(), 0) == addr
        for a in advice:
            libc.madvise(addr, SIZE, a)
        if populate:
            libc.madvise(addr, SIZE, populate)
    return back


for write in (False, True):
    t = 'write' if write else 'read'
    run('anonymous, fresh, 4 KiB: ' + t, anon(), write)
    run('anonymous, populated, 4 KiB: ' + t, anon(populate=True), write)
    run('anonymous, fresh, huge pages: ' + t, anon(huge=True), write)
    run('file MAP_PRIVATE, populated read, huge folios: ' + t,
        file(MAP_PRIVATE, (MADV_HUGEPAGE, MADV_RANDOM), MADV_POPULATE_READ), write)
    run('file MAP_PRIVATE, populated write (private copies): ' + t,
        file(MAP_PRIVATE, (), MADV_POPULATE_WRITE), write)
