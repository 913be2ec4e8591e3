/* Exercises every path the system-call patch changes (the C entry and each
 * patched assembly file) and prints only what must be the same for stock
 * musl on Linux and patched musl on the host shim. tests/musl.rs runs both
 * and compares. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t got_signal;

static void on_usr1(int sig)
{
	got_signal = sig;
}

static void *add_one(void *p)
{
	return (void *)((long)p + 1);
}

static sem_t detached_done;

static void *detached(void *p)
{
	(void)p;
	sem_post(&detached_done);
	return 0;
}

static sem_t cancel_ready, cancel_go;

static void *cancelled(void *p)
{
	char c;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, 0);
	sem_post(&cancel_ready);
	sem_wait(&cancel_go);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, 0);
	read(((int *)p)[0], &c, 1);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "spawned"))
		return 5;

	/* The C entry, and __set_thread_area before main. */
	printf("hello from musl\n");
	fflush(stdout);

	errno = 0;
	int fd = open("/nonexistent/pgkraft", O_RDONLY);
	printf("open missing: %d %s\n", fd, strerror(errno));

	struct timespec ts;
	printf("clock_gettime: %d\n", clock_gettime(CLOCK_MONOTONIC, &ts) == 0 && ts.tv_sec + ts.tv_nsec > 0);

	void *big = malloc(8 << 20);
	memset(big, 1, 8 << 20);
	printf("malloc 8 MiB: %d\n", big != 0);
	free(big);

	/* __restore_rt: the handler must return into main. */
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigaction(SIGUSR1, &sa, 0);
	raise(SIGUSR1);
	printf("signal handled: %d\n", got_signal == SIGUSR1);

	pid_t pid = fork();
	if (pid == 0)
		_exit(7);
	int status = 0;
	waitpid(pid, &status, 0);
	printf("fork child exit: %d\n", WEXITSTATUS(status));

	pid = vfork();
	if (pid == 0)
		_exit(8);
	waitpid(pid, &status, 0);
	printf("vfork child exit: %d\n", WEXITSTATUS(status));

	/* posix_spawn goes through __clone with a stack of its own. */
	char *child_argv[] = { argv[0], "spawned", 0 };
	int err = posix_spawn(&pid, argv[0], 0, 0, child_argv, environ);
	if (!err)
		waitpid(pid, &status, 0);
	printf("posix_spawn: %d exit %d\n", err, WEXITSTATUS(status));

	/* Threads: __clone for the start, __syscall_cp_asm in the join wait. */
	pthread_t t;
	void *res = 0;
	pthread_create(&t, 0, add_one, (void *)41);
	pthread_join(t, &res);
	printf("thread result: %ld\n", (long)res);

	/* Detached threads free their own stacks through __unmapself. Creating
	 * threads afterwards waits on the thread list lock, which each exiting
	 * thread holds until it is gone, so all of them have run it. */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sem_init(&detached_done, 0, 0);
	for (int i = 0; i < 8; i++) {
		if (pthread_create(&t, &attr, detached, 0))
			printf("detached create failed\n");
	}
	for (int i = 0; i < 8; i++)
		sem_wait(&detached_done);
	for (int i = 0; i < 4; i++) {
		pthread_create(&t, 0, add_one, (void *)(long)i);
		pthread_join(t, &res);
	}
	printf("detached threads: done, last %ld\n", (long)res);

	/* Linking pthread_cancel routes cancellation points through
	 * __syscall_cp_asm: one that sees a pending cancel and never makes its
	 * call, then one that completes. (Cancelling a thread blocked inside
	 * the call is left out: see the host shim's limitations.) */
	int p[2];
	char c = 0;
	pipe(p);
	sem_init(&cancel_ready, 0, 0);
	sem_init(&cancel_go, 0, 0);
	pthread_create(&t, 0, cancelled, p);
	sem_wait(&cancel_ready);
	pthread_cancel(t);
	sem_post(&cancel_go);
	pthread_join(t, &res);
	printf("cancelled: %d\n", res == PTHREAD_CANCELED);
	write(p[1], "x", 1);
	ssize_t n = read(p[0], &c, 1);
	printf("read: %zd %c\n", n, c);
	return 3;
}
