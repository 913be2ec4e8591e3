/* Processes as PostgreSQL's server uses them, checked the same way natively
 * and in the image: spawning a copy of this program (posix_spawn, as the
 * postmaster's EXEC_BACKEND start-up does), exit statuses through waitpid,
 * signals between processes (SIGTERM's default action, a handler for
 * SIGUSR1, SIGCHLD), pipes and System V shared memory across processes,
 * close-on-exec, sessions, several children at once, and CPU time kept per
 * process. Prints only what does not depend on the machine (no pids,
 * addresses or times). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int failures;
static char self[4096];

static void check(int ok, const char *what) {
    printf("%s: %s\n", what, ok ? "ok" : "FAILED");
    fflush(stdout);
    if (!ok)
        failures++;
}

/* Start a copy of this program as `procs <role> [arg]`, with fd 3 being
 * `fd3` if it is not -1. */
static pid_t spawn(const char *role, const char *arg, int fd3) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (fd3 >= 0)
        posix_spawn_file_actions_adddup2(&fa, fd3, 3);
    char *argv[] = {"procs", (char *)role, (char *)arg, NULL};
    pid_t pid;
    int err = posix_spawn(&pid, self, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        errno = err;
        return -1;
    }
    return pid;
}

static volatile sig_atomic_t got_usr1, got_chld;
static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }
static void on_chld(int sig) { (void)sig; got_chld++; }

/* This process's CPU time, ns. */
static long long cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long timeval_ns(struct timeval tv) {
    return tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
}

/* ---- the children ---- */

static int child(const char *role, const char *arg) {
    if (strcmp(role, "exit") == 0)
        return atoi(arg);
    if (strcmp(role, "write") == 0) {
        const char *msg = "hello through a pipe";
        return write(3, msg, strlen(msg)) == (ssize_t)strlen(msg) ? 0 : 1;
    }
    if (strcmp(role, "wait-for-term") == 0) {
        /* Blocks in read until SIGTERM's default action ends it. */
        char c;
        write(3, "r", 1);
        int fds[2];
        pipe(fds);
        read(fds[0], &c, 1);
        return 3;
    }
    if (strcmp(role, "signal-parent") == 0)
        return kill(getppid(), SIGUSR1) == 0 ? 0 : 1;
    if (strcmp(role, "ppid") == 0)
        return getppid() == atoi(arg) ? 0 : 1;
    if (strcmp(role, "shm") == 0) {
        char *p = shmat(atoi(arg), NULL, 0);
        if (p == (void *)-1)
            return 1;
        strcpy(p, "written by the child");
        return shmdt(p) == 0 ? 0 : 2;
    }
    if (strcmp(role, "cloexec") == 0) {
        /* fd 4 was open in the parent with FD_CLOEXEC. */
        return fcntl(atoi(arg), F_GETFD) == -1 && errno == EBADF ? 0 : 1;
    }
    if (strcmp(role, "setsid") == 0) {
        pid_t sid = setsid();
        if (!(sid == getpid() && getsid(0) == getpid() && getpgrp() == getpid()))
            return 1;
        /* Now a group leader: a second setsid is refused. */
        return setsid() == -1 && errno == EPERM ? 0 : 2;
    }
    if (strcmp(role, "echo") == 0) {
        /* Answers each byte on fd 3 with the byte + 1, until end of file. */
        unsigned char c;
        while (read(3, &c, 1) == 1) {
            c++;
            if (write(3, &c, 1) != 1)
                return 1;
        }
        return 0;
    }
    if (strcmp(role, "spin") == 0) {
        /* Uses arg milliseconds of CPU time. */
        long long want = atoll(arg) * 1000000LL;
        while (cpu_ns() < want)
            ;
        return 0;
    }
    fprintf(stderr, "unknown role %s\n", role);
    return 99;
}

/* ---- the parent ---- */

static int wait_status(pid_t pid) {
    int st = -1;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r == -1 && errno == EINTR);
    return r == pid ? st : -1;
}

static void exit_statuses(void) {
    pid_t pid = spawn("exit", "7", -1);
    check(pid > 0, "posix_spawn a copy of this program");
    int st = wait_status(pid);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 7, "waitpid reports exit status 7");
    errno = 0;
    check(waitpid(pid, &st, 0) == -1 && errno == ECHILD, "a reaped child is gone (ECHILD)");
    errno = 0;
    check(waitpid(-1, &st, WNOHANG) == -1 && errno == ECHILD, "no children at all: ECHILD");
    char arg[32];
    snprintf(arg, sizeof arg, "%d", (int)getpid());
    pid = spawn("ppid", arg, -1);
    st = wait_status(pid);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's getppid is the parent");
    errno = 0;
    char *argv[] = {"nothing", NULL};
    pid_t none;
    int err = posix_spawn(&none, "/nonexistent/program", NULL, NULL, argv, environ);
    check(err == ENOENT, "posix_spawn of a missing file: ENOENT");
}

static void pipes_across_processes(void) {
    int fds[2];
    check(pipe(fds) == 0, "pipe");
    pid_t pid = spawn("write", NULL, fds[1]);
    close(fds[1]);
    char buf[64] = {0};
    ssize_t n = 0, r;
    while ((r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += r;
    check(strcmp(buf, "hello through a pipe") == 0, "the parent reads what the child wrote");
    check(r == 0, "end of file once the child has exited");
    close(fds[0]);
    int st = wait_status(pid);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the writer exits 0");

    int keep[2];
    pipe2(keep, O_CLOEXEC);
    dup2(keep[0], 4);
    fcntl(4, F_SETFD, FD_CLOEXEC);
    pid = spawn("cloexec", "4", -1);
    st = wait_status(pid);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "close-on-exec descriptors are closed in the child");
    close(4);
    close(keep[0]);
    close(keep[1]);
}

static void signals_across_processes(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    got_chld = 0;
    pid_t pid = spawn("signal-parent", NULL, -1);
    while (!got_usr1)
        sigsuspend(&old);
    sigprocmask(SIG_SETMASK, &old, NULL);
    check(got_usr1, "a child's kill(getppid(), SIGUSR1) runs the parent's handler");
    int st = wait_status(pid);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the signalling child exits 0");
    check(got_chld >= 1, "SIGCHLD reaches the parent's handler");

    int ready[2];
    pipe(ready);
    pid = spawn("wait-for-term", NULL, ready[1]);
    close(ready[1]);
    char c;
    check(read(ready[0], &c, 1) == 1, "the child is waiting");
    close(ready[0]);
    check(waitpid(pid, &st, WNOHANG) == 0, "WNOHANG on a live child returns 0");
    check(kill(pid, SIGTERM) == 0, "kill(child, SIGTERM)");
    st = wait_status(pid);
    check(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "the child was ended by SIGTERM");
    errno = 0;
    check(kill(pid, 0) == -1 && errno == ESRCH, "a reaped child's pid is gone (ESRCH)");
    signal(SIGCHLD, SIG_DFL);
}

static void shared_memory(void) {
    int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
    char *p = shmat(id, NULL, 0);
    check(id >= 0 && p != (void *)-1, "shmget and shmat in the parent");
    char arg[32];
    snprintf(arg, sizeof arg, "%d", id);
    pid_t pid = spawn("shm", arg, -1);
    int st = wait_status(pid);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child attached, wrote and detached");
    check(strcmp(p, "written by the child") == 0, "the parent sees the child's write");
    struct shmid_ds ds;
    shmctl(id, IPC_STAT, &ds);
    check(ds.shm_nattch == 1, "attach count is the parent's alone again");
    shmdt(p);
    shmctl(id, IPC_RMID, NULL);
}

static void sessions(void) {
    pid_t pid = spawn("setsid", NULL, -1);
    int st = wait_status(pid);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a child's setsid makes it session and group leader");
}

#define N 5
static void many_children(void) {
    int fds[N][2];
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds[i]);
        pids[i] = spawn("echo", NULL, fds[i][1]);
        close(fds[i][1]);
    }
    int ok = 1;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < N; i++) {
            unsigned char c = (unsigned char)(round + i);
            write(fds[i][0], &c, 1);
        }
        for (int i = 0; i < N; i++) {
            unsigned char c;
            if (read(fds[i][0], &c, 1) != 1 || c != (unsigned char)(round + i + 1))
                ok = 0;
        }
    }
    check(ok, "five children answer 50 rounds each over socket pairs");
    for (int i = 0; i < N; i++)
        close(fds[i][0]);
    int all = 1;
    for (int i = 0; i < N; i++) {
        int st = wait_status(pids[i]);
        all &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    check(all, "all five exit 0 at end of file");
}

static void cpu_time(void) {
    /* A child uses 100 ms of CPU while its parent waits for it: the time
     * is the child's (wait4's rusage, RUSAGE_CHILDREN), not the parent's. */
    struct rusage before, after, ru;
    getrusage(RUSAGE_CHILDREN, &before);
    long long mine = cpu_ns();
    pid_t pid = spawn("spin", "100", -1);
    int st = -1;
    pid_t r;
    do
        r = wait4(pid, &st, 0, &ru);
    while (r == -1 && errno == EINTR);
    long long waited = cpu_ns() - mine;
    check(r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "a child spins for 100 ms of CPU");
    long long child = timeval_ns(ru.ru_utime) + timeval_ns(ru.ru_stime);
    check(child >= 90000000LL, "wait4's rusage holds the child's CPU time");
    getrusage(RUSAGE_CHILDREN, &after);
    long long children = timeval_ns(after.ru_utime) + timeval_ns(after.ru_stime) -
                         timeval_ns(before.ru_utime) - timeval_ns(before.ru_stime);
    check(children >= 90000000LL, "RUSAGE_CHILDREN grows by it");
    check(waited < 50000000LL, "the waiting parent's own CPU time does not");
    struct rusage self;
    check(getrusage(RUSAGE_SELF, &self) == 0 && timeval_ns(self.ru_utime) + timeval_ns(self.ru_stime) > 0,
          "RUSAGE_SELF counts this process's time");
}

int main(int argc, char **argv) {
    if (argc >= 2)
        return child(argv[1], argc >= 3 ? argv[2] : "");
    /* This program's own file: /proc/self/exe on Linux; in the image,
     * argv[0] names the image's program. */
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0)
        self[n] = 0;
    else
        snprintf(self, sizeof self, "%s", argv[0]);
    exit_statuses();
    pipes_across_processes();
    signals_across_processes();
    shared_memory();
    sessions();
    many_children();
    cpu_time();
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
