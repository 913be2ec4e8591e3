/* What PostgreSQL's single-user mode needs besides files, checked the same
 * way natively and in the image: System V shared memory, shared and private
 * file mappings, pending signals and their delivery on unblock, signalfd,
 * an interval timer interrupting waits, eventfd, poll/select on pipes and
 * a futex's timeout. Prints only values that do not depend on the
 * machine (no addresses, pids or times). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* musl ships no kernel headers: the two futex operations used here. */
#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129

static int failures;

static void check(int ok, const char *what) {
    printf("%s: %s\n", what, ok ? "ok" : "FAILED");
    if (!ok)
        failures++;
}

static void sysv_shm(void) {
    int id = shmget(IPC_PRIVATE, 10000, IPC_CREAT | 0600);
    check(id >= 0, "shmget");
    char *p = shmat(id, NULL, 0), *q = shmat(id, NULL, 0);
    check(p != (void *)-1 && q != (void *)-1, "shmat twice");
    check(p[9999] == 0, "a new segment reads as zero");
    strcpy(p, "written through the first attach");
    check(strcmp(q, "written through the first attach") == 0, "both attaches see one segment");
    struct shmid_ds ds;
    check(shmctl(id, IPC_STAT, &ds) == 0, "IPC_STAT");
    printf("  segsz %zu nattch %lu mode %o\n", (size_t)ds.shm_segsz,
           (unsigned long)ds.shm_nattch, ds.shm_perm.mode & 0777);
    check(shmctl(id, IPC_RMID, NULL) == 0, "IPC_RMID while attached");
    check(shmdt(q) == 0 && shmdt(p) == 0, "shmdt both");
    errno = 0;
    check(shmctl(id, IPC_STAT, &ds) == -1 && errno == EINVAL, "gone after the last detach");
    check(shmget(0x70676b72, 4096, 0600) == -1 && errno == ENOENT, "unknown key without IPC_CREAT");
}

static void file_mappings(void) {
    char path[] = "/tmp/pgkraft-ipc-XXXXXX";
    int fd = mkstemp(path);
    check(fd >= 0, "mkstemp");
    check(ftruncate(fd, 3 * 4096) == 0, "ftruncate to three pages");
    int ro = open(path, O_RDONLY);
    unlink(path);
    void *r = mmap(NULL, 4096, PROT_READ, MAP_SHARED, ro, 0);
    check(r != MAP_FAILED, "read-only fd: MAP_SHARED for reading");
    munmap(r, 4096);
    errno = 0;
    check(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED && errno == EACCES,
          "read-only fd: MAP_SHARED for writing is EACCES");
    close(ro);
    char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    check(m != MAP_FAILED, "mmap MAP_SHARED");
    memcpy(m + 4096 + 10, "via the mapping", 16);
    char buf[32] = {0};
    check(pread(fd, buf, 16, 4096 + 10) == 16 && strcmp(buf, "via the mapping") == 0,
          "a store in the mapping is in the file");
    check(pwrite(fd, "via pwrite", 11, 2 * 4096) == 11, "pwrite");
    check(strcmp(m + 2 * 4096, "via pwrite") == 0, "a write to the file is in the mapping");
    check(madvise(m, 3 * 4096, MADV_DONTNEED) == 0 && strcmp(m + 2 * 4096, "via pwrite") == 0,
          "MADV_DONTNEED on a shared file mapping keeps the file's bytes");
    char *priv = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 4096);
    check(priv != MAP_FAILED && strcmp(priv + 10, "via the mapping") == 0,
          "MAP_PRIVATE sees the file");
    strcpy(priv + 10, "private change");
    check(munmap(m, 3 * 4096) == 0, "munmap the shared mapping");
    memset(buf, 0, sizeof buf);
    check(pread(fd, buf, 16, 4096 + 10) == 16 && strcmp(buf, "via the mapping") == 0,
          "the file keeps the mapping's bytes, not the private change");
    munmap(priv, 4096);
    close(fd);
    int *anon = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    check(anon != MAP_FAILED && anon[2047] == 0, "MAP_SHARED|MAP_ANONYMOUS reads as zero");
    munmap(anon, 8192);
}

static volatile sig_atomic_t usr1, alrm;
static void on_usr1(int sig) { (void)sig; usr1++; }
static void on_alrm(int sig) { (void)sig; alrm++; }

static void pending_signals(void) {
    signal(SIGUSR1, on_usr1);
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    kill(getpid(), SIGUSR1);
    sigpending(&pending);
    check(usr1 == 0 && sigismember(&pending, SIGUSR1), "a blocked signal stays pending");
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    check(usr1 == 1, "unblocking delivers it before sigprocmask returns");
    signal(SIGUSR1, SIG_IGN);
    kill(getpid(), SIGUSR1);
    check(usr1 == 1, "an ignored signal does nothing");
}

static void signal_fd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    check(sfd >= 0, "signalfd");
    struct pollfd p = {.fd = sfd, .events = POLLIN};
    check(poll(&p, 1, 0) == 0, "nothing to read yet");
    struct signalfd_siginfo si;
    errno = 0;
    check(read(sfd, &si, sizeof si) == -1 && errno == EAGAIN, "read: EAGAIN");
    kill(getpid(), SIGUSR2);
    check(poll(&p, 1, 0) == 1 && (p.revents & POLLIN), "readable after kill");
    check(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2, "reads SIGUSR2");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42}, out;
    check(epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) == 0, "epoll_ctl ADD");
    check(epoll_wait(ep, &out, 1, 0) == 0, "epoll: nothing pending");
    kill(getpid(), SIGUSR2);
    check(epoll_wait(ep, &out, 1, 0) == 1 && out.data.u64 == 42, "epoll: the signalfd is ready");
    read(sfd, &si, sizeof si);
    close(ep);
    close(sfd);
}

static void interval_timer(void) {
    signal(SIGALRM, on_alrm);
    struct itimerval it = {.it_value = {.tv_usec = 20000}}, cur;
    check(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer 20 ms");
    getitimer(ITIMER_REAL, &cur);
    check(cur.it_value.tv_sec == 0 && cur.it_value.tv_usec > 0, "getitimer: armed");
    int ep = epoll_create1(0);
    struct epoll_event out;
    errno = 0;
    int r = epoll_wait(ep, &out, 1, 2000);
    check(r == -1 && errno == EINTR && alrm == 1, "epoll_wait is interrupted by SIGALRM");
    it.it_value.tv_usec = 20000;
    setitimer(ITIMER_REAL, &it, NULL);
    struct timespec two = {.tv_sec = 2}, rem = {0};
    errno = 0;
    r = nanosleep(&two, &rem);
    check(r == -1 && errno == EINTR && alrm == 2 && rem.tv_sec >= 1, "nanosleep is interrupted and says what is left");
    check(alarm(5) == 0 && alarm(0) == 5, "alarm returns what was left");
    close(ep);
}

static void event_fd_and_pipes(void) {
    int e = eventfd(0, EFD_NONBLOCK);
    uint64_t v = 3;
    check(write(e, &v, 8) == 8 && write(e, &v, 8) == 8, "eventfd write");
    check(read(e, &v, 8) == 8 && v == 6, "eventfd read sums");
    errno = 0;
    check(read(e, &v, 8) == -1 && errno == EAGAIN, "eventfd empty: EAGAIN");
    close(e);
    int fds[2];
    pipe2(fds, O_NONBLOCK);
    struct pollfd p[2] = {{.fd = fds[0], .events = POLLIN}, {.fd = fds[1], .events = POLLOUT}};
    check(poll(p, 2, 0) == 1 && p[1].revents == POLLOUT, "empty pipe: only writable");
    write(fds[1], "x", 1);
    check(poll(p, 2, 0) == 2 && p[0].revents == POLLIN, "then readable");
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fds[0], &r);
    struct timeval tv = {0};
    check(select(fds[0] + 1, &r, NULL, NULL, &tv) == 1 && FD_ISSET(fds[0], &r), "select agrees");
    close(fds[1]);
    char c;
    read(fds[0], &c, 1);
    check(poll(p, 1, 0) == 1 && (p[0].revents & POLLHUP), "writer gone: POLLHUP");
    close(fds[0]);
}

static void futex_wait(void) {
    uint32_t word = 7;
    errno = 0;
    check(syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 8, NULL, NULL, 0) == -1 && errno == EAGAIN,
          "futex: value changed, EAGAIN");
    struct timespec ts = {.tv_nsec = 10000000};
    errno = 0;
    check(syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 7, &ts, NULL, 0) == -1 && errno == ETIMEDOUT,
          "futex: times out");
    check(syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) == 0, "futex: nobody to wake");
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    sysv_shm();
    file_mappings();
    pending_signals();
    signal_fd();
    interval_timer();
    event_fd_and_pipes();
    futex_wait();
    printf("%d failed\n", failures);
    return failures != 0;
}
