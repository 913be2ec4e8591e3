/*
 * pgkraft: a cluster made at first boot (docs/ARCHITECTURE.md §3, "First
 * boot"). Linked into images built with `cluster.preinit: false`.
 *
 * At build time pgkraft ran the host's initdb and recorded what it asked of
 * `postgres`: the bootstrap run and the single-user run with their
 * arguments and input, and the files initdb wrote before, between and after
 * them. The image carries that as a plan (build/postgres/first_boot/plan.rs
 * writes it). Here, in the image's first process, the plan is carried out
 * when the data directory holds no cluster yet: the same steps initdb takes,
 * with this very program as `postgres`, started by posix_spawn (there is no
 * shell to popen through, and fork is not available).
 *
 * It runs as a constructor, before PostgreSQL's own main, so PostgreSQL's
 * sources stay as they are and every way the image starts (the postmaster,
 * single-user mode) finds a cluster. The plan's directory is named by the
 * environment variable below, which is removed before anything is spawned:
 * the children (the bootstrap and single-user runs, later the postmaster's
 * backends) start with it gone and skip all this.
 *
 * Plan lines, fields separated by one space (the build checks that no field
 * holds a space):
 *   exec PATH             the program to spawn (the image's argv[0])
 *   data DIR              the data directory
 *   mkdir REL             a directory under DIR, mode 0700
 *   write REL FILE        a file under DIR, mode 0600, from FILE in the plan
 *   run FILE ARG...       `exec ARG...` with stdin from FILE in the plan,
 *                         stdout to /dev/null (as initdb does); must exit 0
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PLAN_ENV "PGKRAFT_FIRST_BOOT"
/* Left in the data directory until the cluster is complete and synced: a
 * first boot that stopped half way is then told apart from a cluster. */
#define MARKER "pgkraft-first-boot.incomplete"
#define MAX_FIELDS 64
#define MAX_PATH 4096

static const char *plan_dir;
static char exec_path[MAX_PATH];
static char data_dir[MAX_PATH];

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void
fail(const char *fmt, ...)
{
	va_list		ap;

	fputs("pgkraft first boot: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	_exit(1);
}

static void
join(char *out, const char *dir, const char *rel)
{
	if (snprintf(out, MAX_PATH, "%s/%s", dir, rel) >= MAX_PATH)
		fail("path too long: %s/%s", dir, rel);
}

static char *
read_all(const char *path, size_t *len)
{
	int			fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char	   *buf;
	size_t		got = 0;

	if (fd < 0 || fstat(fd, &st) != 0)
		fail("cannot open %s: %s", path, strerror(errno));
	buf = malloc((size_t) st.st_size + 1);
	if (buf == NULL)
		fail("out of memory reading %s", path);
	while (got < (size_t) st.st_size)
	{
		ssize_t		n = read(fd, buf + got, (size_t) st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fail("cannot read %s: %s", path, n < 0 ? strerror(errno) : "short file");
		got += (size_t) n;
	}
	close(fd);
	buf[got] = '\0';
	*len = got;
	return buf;
}

static void
write_file(const char *path, const char *data, size_t len)
{
	int			fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t		done = 0;

	if (fd < 0)
		fail("cannot create %s: %s", path, strerror(errno));
	while (done < len)
	{
		ssize_t		n = write(fd, data + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fail("cannot write %s: %s", path, strerror(errno));
		done += (size_t) n;
	}
	if (close(fd) != 0)
		fail("cannot write %s: %s", path, strerror(errno));
}

/* Whether `dir` holds anything but dot files. Dot files are allowed, as a
 * host may keep its own bookkeeping beside the cluster. */
static int
has_entries(const char *dir)
{
	DIR		   *d = opendir(dir);
	struct dirent *e;
	int			found = 0;

	if (d == NULL)
		fail("cannot read directory %s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			found = 1;
	closedir(d);
	return found;
}

static void
sync_one(const char *path)
{
	int			fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) != 0)
		fail("cannot fsync %s: %s", path, strerror(errno));
	close(fd);
}

/* fsync every file and directory under `path`, as initdb does before it
 * reports success: on a volume the cluster must be on the host's disk
 * before the marker goes. */
static void
sync_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) != 0)
		fail("cannot stat %s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
	{
		DIR		   *d = opendir(path);
		struct dirent *e;

		if (d == NULL)
			fail("cannot read directory %s: %s", path, strerror(errno));
		while ((e = readdir(d)) != NULL)
		{
			char		child[MAX_PATH];

			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			join(child, path, e->d_name);
			sync_tree(child);
		}
		closedir(d);
	}
	else if (!S_ISREG(st.st_mode))
		return;
	sync_one(path);
}

static void
run(char **fields, int n)
{
	char		input[MAX_PATH];
	char	   *argv[MAX_FIELDS + 1];
	posix_spawn_file_actions_t actions;
	pid_t		pid;
	int			status;
	int			err;

	join(input, plan_dir, fields[1]);
	argv[0] = exec_path;
	for (int i = 2; i < n; i++)
		argv[i - 1] = fields[i];
	argv[n - 1] = NULL;
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_addopen(&actions, 0, input, O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
	fflush(NULL);
	err = posix_spawn(&pid, exec_path, &actions, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&actions);
	if (err != 0)
		fail("cannot start %s %s: %s", exec_path, fields[2], strerror(err));
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			fail("cannot wait for %s %s: %s", exec_path, fields[2], strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("`postgres %s` (input %s) failed (wait status %d); its messages are above",
			 fields[2], input, status);
}

/* Carries out one plan line, already split into fields. */
static void
step(char **fields, int n)
{
	char		path[MAX_PATH];
	char		from[MAX_PATH];
	const char *op = fields[0];

	if (strcmp(op, "mkdir") == 0 && n == 2)
	{
		join(path, data_dir, fields[1]);
		if (mkdir(path, 0700) != 0)
			fail("cannot create directory %s: %s", path, strerror(errno));
	}
	else if (strcmp(op, "write") == 0 && n == 3)
	{
		size_t		len;
		char	   *bytes;

		join(from, plan_dir, fields[2]);
		join(path, data_dir, fields[1]);
		bytes = read_all(from, &len);
		write_file(path, bytes, len);
		free(bytes);
	}
	else if (strcmp(op, "run") == 0 && n >= 3)
		run(fields, n);
	else
		fail("plan line `%s` (%d fields) is not one this program knows", op, n);
}

/* Splits `line` in place at spaces; returns the number of fields. */
static int
split(char *line, char **fields)
{
	int			n = 0;
	char	   *save = NULL;

	for (char *f = strtok_r(line, " ", &save); f != NULL; f = strtok_r(NULL, " ", &save))
	{
		if (n == MAX_FIELDS)
			fail("a plan line has more than %d fields", MAX_FIELDS);
		fields[n++] = f;
	}
	return n;
}

/* Reads the header lines (`exec`, `data`) and returns the rest. */
static char *
header(char *text)
{
	for (int i = 0; i < 2; i++)
	{
		char	   *end = strchr(text, '\n');
		char	   *value;

		if (end == NULL)
			fail("the plan %s/plan has no header", plan_dir);
		*end = '\0';
		value = strchr(text, ' ');
		if (value == NULL)
			fail("plan header line `%s` has no value", text);
		*value++ = '\0';
		if (strcmp(text, "exec") == 0)
			snprintf(exec_path, sizeof(exec_path), "%s", value);
		else if (strcmp(text, "data") == 0)
			snprintf(data_dir, sizeof(data_dir), "%s", value);
		else
			fail("plan header line `%s` is not exec or data", text);
		text = end + 1;
	}
	if (exec_path[0] == '\0' || data_dir[0] == '\0')
		fail("the plan %s/plan does not name both exec and data", plan_dir);
	return text;
}

/*
 * Whether the data directory needs a cluster: it is missing, or empty. A
 * cluster (PG_VERSION) is left alone; anything else is refused, since
 * initializing over it could destroy someone's files.
 */
static int
needs_cluster(void)
{
	char		path[MAX_PATH];
	struct stat st;

	join(path, data_dir, MARKER);
	if (stat(path, &st) == 0)
		fail("%s holds a cluster whose first boot stopped before it was complete "
			 "(%s is still there); empty the directory (or the volume) and boot again",
			 data_dir, MARKER);
	if (stat(data_dir, &st) != 0)
	{
		if (errno != ENOENT)
			fail("cannot stat %s: %s", data_dir, strerror(errno));
		if (mkdir(data_dir, 0700) != 0)
			fail("cannot create %s: %s", data_dir, strerror(errno));
		return 1;
	}
	join(path, data_dir, "PG_VERSION");
	if (stat(path, &st) == 0)
		return 0;
	if (has_entries(data_dir))
		fail("%s is neither empty nor a cluster (no PG_VERSION); give the image an "
			 "empty directory to initialize, or one that holds its cluster", data_dir);
	/* A mount point or a directory made by someone else: PostgreSQL wants
	 * its data directory to be the owner's alone. */
	if (chmod(data_dir, 0700) != 0)
		fail("cannot change the mode of %s to 0700: %s", data_dir, strerror(errno));
	return 1;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
first_boot(void)
{
	char		plan_path[MAX_PATH];
	char		marker[MAX_PATH];
	size_t		len;
	char	   *text;
	char	   *line;
	char	   *saved;
	double		t0 = now_ms();

	join(plan_path, plan_dir, "plan");
	text = read_all(plan_path, &len);
	line = header(text);
	if (!needs_cluster())
	{
		free(text);
		return;
	}
	fprintf(stderr, "pgkraft first boot: initializing a cluster in %s\n", data_dir);
	join(marker, data_dir, MARKER);
	write_file(marker, "", 0);
	/* On the host's disk before any of the cluster: a crash of the host
	 * then leaves either nothing or a directory that says what it is. */
	sync_one(marker);
	sync_one(data_dir);
	/* The runs find the data directory as initdb's do, in PGDATA. */
	saved = getenv("PGDATA");
	if (saved != NULL && (saved = strdup(saved)) == NULL)
		fail("out of memory");
	if (setenv("PGDATA", data_dir, 1) != 0)
		fail("cannot set PGDATA: %s", strerror(errno));
	while (*line != '\0')
	{
		char	   *end = strchr(line, '\n');
		char	   *fields[MAX_FIELDS];
		int			n;

		if (end == NULL)
			fail("the plan %s ends without a newline", plan_path);
		*end = '\0';
		n = split(line, fields);
		if (n > 0)
			step(fields, n);
		line = end + 1;
	}
	free(text);
	if (saved != NULL)
		setenv("PGDATA", saved, 1);
	else
		unsetenv("PGDATA");
	free(saved);
	sync_tree(data_dir);
	if (unlink(marker) != 0)
		fail("cannot remove %s: %s", marker, strerror(errno));
	sync_one(data_dir);
	fprintf(stderr, "pgkraft first boot: cluster ready in %.0f ms\n", now_ms() - t0);
}

__attribute__((constructor))
static void
pgkraft_first_boot(void)
{
	const char *dir = getenv(PLAN_ENV);
	static char copy[MAX_PATH];

	if (dir == NULL)
		return;
	snprintf(copy, sizeof(copy), "%s", dir);
	plan_dir = copy;
	unsetenv(PLAN_ENV);
	first_boot();
}
