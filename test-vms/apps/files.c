/*
 * files: the file system and file descriptors. Works in a fresh directory
 * it makes under /tmp and removes at the end: regular files (read, write,
 * pread/pwrite, lseek past the end making a hole, SEEK_DATA/SEEK_HOLE,
 * ftruncate, O_APPEND, O_TRUNC, readv/writev), names (rename over a file and
 * of directories, unlink of an open file, hard links, mkdir/rmdir, symlinks
 * and readlink, the errno of many wrong calls), directory listings, stat
 * fields, the working directory, dup/dup2/fcntl, pipes, locks, access,
 * /dev/null and /dev/zero, sync calls, fallocate and utimensat.
 * Only what is the same on any Linux file system is printed: no inode
 * numbers, current times, directory sizes or directory link counts, and
 * directory listings are sorted first. Nothing depends on permission
 * checks (the native run may be root).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *ename(int e)
{
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ESPIPE: return "ESPIPE";
    case EPIPE: return "EPIPE";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ELOOP: return "ELOOP";
    case ENXIO: return "ENXIO";
    case EFAULT: return "EFAULT";
    default: {
        static char other[16];
        snprintf(other, sizeof other, "E%d", e);
        return other;
    }
    }
}

/* "what: result" or "what: -1 ERRNO". */
static long show(const char *what, long rc)
{
    if (rc < 0)
        printf("%s: %ld %s\n", what, rc, ename(errno));
    else
        printf("%s: %ld\n", what, rc);
    return rc;
}
#define SHOW(what, expr) (errno = 0, show(what, (long)(expr)))

static const char *ftype(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISLNK(m)) return "symlink";
    if (S_ISCHR(m)) return "chardev";
    if (S_ISFIFO(m)) return "fifo";
    return "other";
}

/* Only the fields every Linux file system reports the same way. */
static void show_stat(const char *what, int rc, const struct stat *st)
{
    if (rc < 0) {
        printf("%s: -1 %s\n", what, ename(errno));
        return;
    }
    printf("%s: %s mode %04o", what, ftype(st->st_mode), (unsigned)(st->st_mode & 07777));
    if (!S_ISDIR(st->st_mode))
        printf(" size %lld nlink %lu", (long long)st->st_size, (unsigned long)st->st_nlink);
    printf("\n");
}

static void stat_path(const char *path)
{
    struct stat st;
    errno = 0;
    int rc = stat(path, &st);
    char what[300];
    snprintf(what, sizeof what, "stat %s", path);
    show_stat(what, rc, &st);
}

static void lstat_path(const char *path)
{
    struct stat st;
    errno = 0;
    int rc = lstat(path, &st);
    char what[300];
    snprintf(what, sizeof what, "lstat %s", path);
    show_stat(what, rc, &st);
}

static void put_file(const char *path, const char *text)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0666);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        printf("put_file %s failed: %s\n", path, ename(errno));
        exit(1);
    }
    close(fd);
}

static void show_file(const char *path)
{
    char buf[256];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("read %s: -1 %s\n", path, ename(errno));
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        printf("read %s: -1 %s\n", path, ename(errno));
        return;
    }
    buf[n] = 0;
    printf("read %s: \"%s\"\n", path, buf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A sorted listing with d_type, as "name/type" words. */
static void list_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        printf("list %s: %s\n", path, ename(errno));
        return;
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        const char *t = e->d_type == DT_DIR ? "d" : e->d_type == DT_REG ? "f" : e->d_type == DT_LNK ? "l" : "?";
        size_t len = strlen(e->d_name) + 3;
        names[n] = malloc(len);
        snprintf(names[n], len, "%s/%s", e->d_name, t);
        n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    printf("list %s:", path);
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

static char base[4096];

/* The working directory relative to the test directory. */
static void show_cwd(void)
{
    char buf[4096];
    if (!getcwd(buf, sizeof buf)) {
        printf("getcwd: %s\n", ename(errno));
        return;
    }
    size_t n = strlen(base);
    if (strncmp(buf, base, n) == 0)
        printf("cwd: .%s\n", buf + n);
    else
        printf("cwd: outside the test directory\n");
}

static int rm_rf(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0)
        return unlinkat(dirfd, name, 0);
    DIR *d = fdopendir(fd);
    struct dirent *e;
    int ok = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (e->d_type == DT_DIR)
            ok |= rm_rf(fd, e->d_name);
        else
            ok |= unlinkat(fd, e->d_name, 0);
    }
    closedir(d);
    return ok | unlinkat(dirfd, name, AT_REMOVEDIR);
}

static void regular_files(void)
{
    printf("-- regular files\n");
    char buf[64];
    int fd = SHOW("open a O_CREAT|O_EXCL", open("a", O_CREAT | O_EXCL | O_RDWR, 0666));
    SHOW("write", write(fd, "hello world\n", 12));
    SHOW("lseek cur", lseek(fd, 0, SEEK_CUR));
    SHOW("read at end", read(fd, buf, sizeof buf));
    SHOW("lseek set 0", lseek(fd, 0, SEEK_SET));
    ssize_t n = SHOW("read", read(fd, buf, sizeof buf));
    printf("data: \"%.*s\"\n", (int)(n > 0 ? n - 1 : 0), buf);
    SHOW("pwrite HELLO at 0", pwrite(fd, "HELLO", 5, 0));
    memset(buf, 0, sizeof buf);
    SHOW("pread 5 at 6", pread(fd, buf, 5, 6));
    printf("pread data: \"%s\"\n", buf);
    SHOW("offset unchanged", lseek(fd, 0, SEEK_CUR));

    struct stat st;
    show_stat("fstat a", fstat(fd, &st), &st);

    /* A hole: 1 MiB past the data. */
    SHOW("lseek 1 MiB", lseek(fd, 1 << 20, SEEK_SET));
    SHOW("write at 1 MiB", write(fd, "end", 3));
    fstat(fd, &st);
    printf("size %lld, sparse: %s\n", (long long)st.st_size, st.st_blocks * 512 < 65536 ? "yes" : "no");
    char zeros[4096];
    memset(zeros, 1, sizeof zeros);
    SHOW("pread in the hole", pread(fd, zeros, sizeof zeros, 500000));
    int allzero = 1;
    for (size_t i = 0; i < sizeof zeros; i++)
        allzero &= zeros[i] == 0;
    printf("hole reads as zeros: %s\n", allzero ? "yes" : "no");
    SHOW("SEEK_HOLE from 0", lseek(fd, 0, SEEK_HOLE));
    SHOW("SEEK_DATA from 4096", lseek(fd, 4096, SEEK_DATA));
    SHOW("SEEK_DATA past the end", lseek(fd, st.st_size, SEEK_DATA));
    SHOW("SEEK_END -3", lseek(fd, -3, SEEK_END));
    SHOW("lseek to negative", lseek(fd, -10, SEEK_SET));
    SHOW("lseek bad whence", lseek(fd, 0, 17));

    /* Shrink into the first page, grow again: the tail reads as zeros. */
    SHOW("ftruncate 5", ftruncate(fd, 5));
    SHOW("ftruncate 10", ftruncate(fd, 10));
    memset(buf, 'x', sizeof buf);
    n = SHOW("pread 64 at 0", pread(fd, buf, sizeof buf, 0));
    printf("bytes:");
    for (ssize_t i = 0; i < n; i++)
        printf(" %02x", (unsigned char)buf[i]);
    printf("\n");
    SHOW("ftruncate -1", ftruncate(fd, -1));
    close(fd);

    fd = SHOW("open a O_RDONLY", open("a", O_RDONLY));
    SHOW("write to O_RDONLY", write(fd, "x", 1));
    SHOW("ftruncate O_RDONLY", ftruncate(fd, 0));
    close(fd);

    fd = SHOW("open a O_WRONLY|O_APPEND", open("a", O_WRONLY | O_APPEND));
    SHOW("read from O_WRONLY", read(fd, buf, 1));
    SHOW("append ++", write(fd, "++", 2));
    SHOW("pwrite at 0 appends", pwrite(fd, "!!", 2, 0));
    fstat(fd, &st);
    printf("size after appends: %lld\n", (long long)st.st_size);
    close(fd);

    fd = SHOW("open a O_RDWR|O_TRUNC", open("a", O_RDWR | O_TRUNC));
    fstat(fd, &st);
    printf("size after O_TRUNC: %lld\n", (long long)st.st_size);
    struct iovec iov[3] = {{"one ", 4}, {"two ", 4}, {"three", 5}};
    SHOW("writev", writev(fd, iov, 3));
    char b1[5] = {0}, b2[4] = {0}, b3[16] = {0};
    struct iovec riov[3] = {{b1, 4}, {b2, 3}, {b3, 15}};
    SHOW("preadv at 0", preadv(fd, riov, 3, 0));
    printf("preadv: \"%s\" \"%s\" \"%s\"\n", b1, b2, b3);
    close(fd);
    SHOW("truncate a 3", truncate("a", 3));
    show_file("a");
    SHOW("truncate .", truncate(".", 0));

    /* A file bigger than a few pages, written in odd-sized pieces. */
    fd = open("big", O_CREAT | O_RDWR | O_TRUNC, 0600);
    unsigned char *blk = malloc(100000);
    for (int i = 0; i < 100000; i++)
        blk[i] = (unsigned char)(i * 7 + i / 251);
    long total = 0;
    for (int k = 0; k < 30; k++)
        total += write(fd, blk, 100000 - (size_t)k * 13);
    printf("big: wrote %ld\n", total);
    lseek(fd, 0, SEEK_SET);
    unsigned long sum = 0;
    long got = 0;
    for (;;) {
        ssize_t r = read(fd, blk, 65536);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            sum = sum * 31 + blk[i];
        got += r;
    }
    printf("big: read %ld, checksum %lu\n", got, sum);
    free(blk);
    close(fd);
}

static void open_errors(void)
{
    printf("-- open errors\n");
    SHOW("O_EXCL on existing", open("a", O_CREAT | O_EXCL | O_RDWR, 0666));
    SHOW("missing", open("missing", O_RDONLY));
    SHOW("file with slash", open("a/", O_RDONLY));
    SHOW("O_DIRECTORY on file", open("a", O_RDONLY | O_DIRECTORY));
    SHOW("file as directory", open("a/x", O_CREAT | O_RDWR, 0666));
    SHOW("missing/x", open("missing/x", O_RDONLY));
    SHOW("directory O_WRONLY", open(".", O_WRONLY));
    SHOW("O_CREAT with slash", open("newdir/", O_CREAT | O_RDWR, 0666));
    SHOW("O_CREAT on directory", open(".", O_CREAT | O_RDONLY, 0666));
    SHOW("empty path", open("", O_RDONLY));
    char name[300];
    memset(name, 'n', sizeof name);
    name[sizeof name - 1] = 0;
    SHOW("name of 299 bytes", open(name, O_RDONLY));
    char *path = malloc(5000);
    for (int i = 0; i < 4999; i++)
        path[i] = i % 2 ? '/' : 'p';
    path[4999] = 0;
    SHOW("path of 4999 bytes", open(path, O_RDONLY));
    free(path);
    SHOW("bad dirfd", openat(999, "a", O_RDONLY));
    SHOW("bad dirfd, absolute path", close(openat(999, "/tmp", O_RDONLY)));
    int fd = open("a", O_RDONLY);
    SHOW("file as dirfd", openat(fd, "x", O_RDONLY));
    close(fd);
    fd = SHOW("O_PATH", open("a", O_PATH));
    char c;
    SHOW("read O_PATH", read(fd, &c, 1));
    struct stat st;
    show_stat("fstat O_PATH", fstat(fd, &st), &st);
    close(fd);
}

static void names(void)
{
    printf("-- names\n");
    put_file("b", "bbb");
    SHOW("rename a over b", rename("a", "b"));
    show_file("b");
    stat_path("a");
    SHOW("rename missing", rename("nothing", "b"));
    SHOW("rename to itself", rename("b", "b"));

    SHOW("mkdir d1", mkdir("d1", 0777));
    put_file("d1/f", "in d1");
    SHOW("rename d1 d2", rename("d1", "d2"));
    show_file("d2/f");
    SHOW("rename d2 into itself", rename("d2", "d2/sub"));
    SHOW("mkdir full", mkdir("full", 0777));
    put_file("full/x", "x");
    SHOW("rename d2 over non-empty", rename("d2", "full"));
    SHOW("mkdir empty", mkdir("empty", 0777));
    SHOW("rename d2 over empty dir", rename("d2", "empty"));
    show_file("empty/f");
    SHOW("rename file over dir", rename("b", "full"));
    SHOW("rename dir over file", rename("empty", "b"));
    SHOW("rename file with slash", rename("b", "c/"));
    SHOW("rename .", rename(".", "z"));
    SHOW("renameat2 NOREPLACE", syscall(SYS_renameat2, AT_FDCWD, "b", AT_FDCWD, "full/x", 1));
    SHOW("renameat2 EXCHANGE", syscall(SYS_renameat2, AT_FDCWD, "b", AT_FDCWD, "full/x", 2));
    show_file("b");
    show_file("full/x");

    /* An unlinked file lives on while it is open. */
    int fd = open("u", O_CREAT | O_RDWR, 0666);
    SHOW("write u", write(fd, "still here", 10));
    SHOW("unlink u", unlink("u"));
    stat_path("u");
    char buf[32] = {0};
    SHOW("pread unlinked", pread(fd, buf, sizeof buf - 1, 0));
    printf("unlinked data: \"%s\"\n", buf);
    struct stat st;
    show_stat("fstat unlinked", fstat(fd, &st), &st);
    close(fd);

    SHOW("link b c", link("b", "c"));
    stat_path("b");
    SHOW("link to existing", link("b", "c"));
    SHOW("link a directory", link("full", "full2"));
    SHOW("link missing", link("nothing", "n2"));
    SHOW("unlink c", unlink("c"));
    stat_path("b");

    SHOW("mkdir d", mkdir("d", 0777));
    SHOW("mkdir d again", mkdir("d", 0777));
    SHOW("mkdir with slash", mkdir("m/", 0777));
    SHOW("mkdir missing/x", mkdir("missing/x", 0777));
    SHOW("mkdir .", mkdir(".", 0777));
    put_file("d/x", "x");
    SHOW("rmdir non-empty", rmdir("d"));
    SHOW("unlink a directory", unlink("d"));
    SHOW("unlink dir with slash", unlink("d/"));
    SHOW("unlink file with slash", unlink("b/"));
    SHOW("rmdir a file", rmdir("b"));
    SHOW("rmdir .", rmdir("."));
    SHOW("rmdir d/..", rmdir("d/.."));
    SHOW("rmdir missing", rmdir("missing"));
    SHOW("unlinkat d/x", unlinkat(AT_FDCWD, "d/x", 0));
    SHOW("unlinkat AT_REMOVEDIR", unlinkat(AT_FDCWD, "d", AT_REMOVEDIR));
    SHOW("unlinkat bad flag", unlinkat(AT_FDCWD, "m", 0x1));
    SHOW("rmdir m", rmdir("m"));
    SHOW("mknod regular", mknod("node", S_IFREG | 0600, 0));
    stat_path("node");
    unlink("node");

    printf("-- symlinks\n");
    SHOW("symlink b lnk", symlink("b", "lnk"));
    char target[64] = {0};
    SHOW("readlink lnk", readlink("lnk", target, sizeof target));
    printf("target: \"%s\"\n", target);
    memset(target, 0, sizeof target);
    SHOW("readlink into 0 bytes", readlink("lnk", target, 0));
    SHOW("readlink a file", readlink("b", target, sizeof target));
    SHOW("symlink over existing", symlink("x", "lnk"));
    SHOW("symlink empty target", symlink("", "lnk2"));
    stat_path("lnk");
    lstat_path("lnk");
    SHOW("open O_NOFOLLOW", open("lnk", O_RDONLY | O_NOFOLLOW));
    SHOW("symlink loop1", symlink("loop2", "loop1"));
    SHOW("symlink loop2", symlink("loop1", "loop2"));
    SHOW("open a loop", open("loop1", O_RDONLY));
    stat_path("loop1");
    SHOW("symlink dangle", symlink("made-through-link", "dangle"));
    SHOW("open dangling", open("dangle", O_RDONLY));
    SHOW("O_EXCL on dangling", open("dangle", O_CREAT | O_EXCL | O_WRONLY, 0666));
    fd = SHOW("O_CREAT through dangling", open("dangle", O_CREAT | O_WRONLY, 0600));
    close(fd);
    stat_path("made-through-link");
    SHOW("symlink to dir", symlink("full", "sl"));
    stat_path("sl/");
    lstat_path("sl/");
    lstat_path("sl");
    show_file("sl/x");
    SHOW("rmdir a dir symlink", rmdir("sl"));
    SHOW("unlink symlink with slash", unlink("sl/"));
    SHOW("symlink with absolute target", symlink(base, "abs"));
    lstat_path("abs/b");
    SHOW("unlink sl", unlink("sl"));
}

static void listings(void)
{
    printf("-- listings\n");
    mkdir("list", 0777);
    put_file("list/c3", "");
    put_file("list/a1", "");
    put_file("list/b2", "");
    mkdir("list/sub", 0777);
    symlink("a1", "list/ln");
    list_dir("list");
    list_dir("list/sub");

    /* Many entries, read in several getdents64 calls, unlinked while read. */
    mkdir("many", 0777);
    char name[64];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "many/entry-with-a-longish-name-%03d", i);
        put_file(name, "");
    }
    int dfd = open("many", O_RDONLY | O_DIRECTORY);
    DIR *d = fdopendir(dfd);
    int seen = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        seen++;
        if (unlinkat(dfd, e->d_name, 0) != 0)
            printf("unlinkat %s: %s\n", e->d_name, ename(errno));
    }
    printf("many: saw %d entries while removing them\n", seen);
    rewinddir(d);
    seen = 0;
    while ((e = readdir(d)))
        seen++;
    printf("many: %d entries left (. and ..)\n", seen);
    closedir(d);
    SHOW("rmdir many", rmdir("many"));

    int fd = open("list", O_RDONLY | O_DIRECTORY);
    char buf[16];
    SHOW("getdents64 tiny buffer", syscall(SYS_getdents64, fd, buf, sizeof buf));
    close(fd);
    fd = open("b", O_RDONLY);
    char big[1024];
    SHOW("getdents64 on a file", syscall(SYS_getdents64, fd, big, sizeof big));
    close(fd);
    fd = open("list", O_RDONLY);
    SHOW("read a directory", read(fd, big, sizeof big));
    close(fd);
}

static void working_directory(void)
{
    printf("-- working directory\n");
    mkdir("p", 0777);
    mkdir("p/q", 0777);
    int here = open(".", O_RDONLY | O_DIRECTORY);
    show_cwd();
    SHOW("chdir p/q", chdir("p/q"));
    show_cwd();
    put_file("inq", "in q");
    SHOW("chdir ..", chdir(".."));
    show_cwd();
    show_file("q/inq");
    show_file("../b");
    SHOW("chdir a file", chdir("../b"));
    SHOW("chdir missing", chdir("missing"));
    SHOW("fchdir back", fchdir(here));
    show_cwd();
    char small[4];
    errno = 0;
    const char *got = getcwd(small, sizeof small) ? "ok" : "NULL";
    printf("getcwd small buffer: %s %s\n", got, ename(errno));
    int pfd = open("p", O_RDONLY | O_DIRECTORY);
    SHOW("openat relative to p", close(openat(pfd, "q/inq", O_RDONLY)));
    SHOW("mkdirat", mkdirat(pfd, "r", 0777));
    struct stat st;
    show_stat("fstatat p/r", fstatat(pfd, "r", &st, 0), &st);
    show_stat("fstatat AT_EMPTY_PATH", fstatat(pfd, "", &st, AT_EMPTY_PATH), &st);
    show_stat("fstatat empty path", fstatat(pfd, "", &st, 0), &st);
    close(pfd);

    mkdir("gone", 0777);
    SHOW("chdir gone", chdir("gone"));
    SHOW("rmdir the cwd", rmdir("../gone"));
    char cwdbuf[4096];
    errno = 0;
    got = getcwd(cwdbuf, sizeof cwdbuf) ? "ok" : "NULL";
    printf("getcwd in a removed directory: %s %s\n", got, ename(errno));
    SHOW("create in a removed directory", open("x", O_CREAT | O_RDWR, 0666));
    show_stat("stat . in a removed directory", stat(".", &st), &st);
    fchdir(here);
    close(here);
    show_cwd();
}

static void descriptors(void)
{
    printf("-- descriptors\n");
    put_file("f", "0123456789");
    int fd = open("f", O_RDWR);
    int fd2 = (int)SHOW("dup", dup(fd));
    char c;
    SHOW("read 1 via fd", read(fd, &c, 1));
    SHOW("offset via dup", lseek(fd2, 0, SEEK_CUR));
    SHOW("dup2 to 50", dup2(fd, 50));
    SHOW("read 1 via 50", read(50, &c, 1));
    SHOW("offset via fd", lseek(fd, 0, SEEK_CUR));
    SHOW("F_GETFD of 50", fcntl(50, F_GETFD));
    SHOW("dup3 O_CLOEXEC to 51", dup3(fd, 51, O_CLOEXEC));
    SHOW("F_GETFD of 51", fcntl(51, F_GETFD));
    SHOW("F_SETFD 0", fcntl(51, F_SETFD, 0));
    SHOW("F_GETFD of 51", fcntl(51, F_GETFD));
    SHOW("dup3 same fd", dup3(fd, fd, 0));
    SHOW("dup2 same fd", dup2(fd, fd) == fd);
    SHOW("F_DUPFD 100", fcntl(fd, F_DUPFD, 100));
    SHOW("F_DUPFD_CLOEXEC 100", fcntl(fd, F_DUPFD_CLOEXEC, 100));
    SHOW("F_GETFD of 101", fcntl(101, F_GETFD));
    SHOW("access mode", fcntl(fd, F_GETFL) & O_ACCMODE);
    SHOW("F_SETFL O_APPEND", fcntl(fd, F_SETFL, O_APPEND));
    SHOW("O_APPEND via dup", (fcntl(fd2, F_GETFL) & O_APPEND) != 0);
    SHOW("append via 50", write(50, "AB", 2));
    show_file("f");
    SHOW("close 50", close(50));
    SHOW("read closed", read(50, &c, 1));
    SHOW("close closed", close(50));
    SHOW("close -1", close(-1));
    SHOW("dup2 to huge", dup2(fd, 1 << 30));
    SHOW("fcntl bad cmd", fcntl(fd, 12345));
    int left = -1;
    SHOW("FIONREAD on file", ioctl(fd2, FIONREAD, &left));
    printf("bytes left to read: %d\n", left);
    close(51);
    close(100);
    close(101);
    close(fd2);
    close(fd);
}

static void pipes(void)
{
    printf("-- pipes\n");
    signal(SIGPIPE, SIG_IGN);
    int p[2];
    SHOW("pipe", pipe(p));
    SHOW("write ping", write(p[1], "ping", 4));
    int avail = -1;
    ioctl(p[0], FIONREAD, &avail);
    printf("FIONREAD: %d\n", avail);
    char buf[16] = {0};
    SHOW("read", read(p[0], buf, sizeof buf));
    printf("got \"%s\"\n", buf);
    SHOW("lseek a pipe", lseek(p[0], 0, SEEK_SET));
    SHOW("pread a pipe", pread(p[0], buf, 1, 0));
    SHOW("write to read end", write(p[0], "x", 1));
    SHOW("set O_NONBLOCK", fcntl(p[0], F_SETFL, O_NONBLOCK));
    SHOW("read empty non-blocking", read(p[0], buf, sizeof buf));
    struct stat st;
    show_stat("fstat pipe", fstat(p[0], &st), &st);
    SHOW("close write end", close(p[1]));
    SHOW("read at EOF", read(p[0], buf, sizeof buf));
    close(p[0]);

    SHOW("pipe2 O_NONBLOCK|O_CLOEXEC", pipe2(p, O_NONBLOCK | O_CLOEXEC));
    SHOW("F_GETFD", fcntl(p[0], F_GETFD));
    SHOW("O_NONBLOCK set", (fcntl(p[1], F_GETFL) & O_NONBLOCK) != 0);
    SHOW("F_GETPIPE_SZ", fcntl(p[1], F_GETPIPE_SZ));
    char chunk[4096];
    memset(chunk, 'z', sizeof chunk);
    long total = 0;
    for (int i = 0; i < 100; i++) {
        ssize_t n = write(p[1], chunk, sizeof chunk);
        if (n < 0) {
            printf("filled after %ld bytes: %s\n", total, ename(errno));
            break;
        }
        total += n;
    }
    long drained = 0;
    for (;;) {
        ssize_t n = read(p[0], chunk, sizeof chunk);
        if (n <= 0)
            break;
        drained += n;
    }
    printf("drained %ld, then %s\n", drained, ename(errno));
    SHOW("close read end", close(p[0]));
    SHOW("write without reader", write(p[1], "x", 1));
    close(p[1]);
    SHOW("pipe2 bad flags", pipe2(p, 0x1));
}

static void locks_and_access(void)
{
    printf("-- locks\n");
    int fd = open("f", O_RDWR);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    SHOW("F_SETLK write lock", fcntl(fd, F_SETLK, &fl));
    fl.l_type = F_WRLCK;
    SHOW("F_GETLK", fcntl(fd, F_GETLK, &fl));
    printf("F_GETLK says %s\n", fl.l_type == F_UNLCK ? "F_UNLCK" : "locked");
    fl.l_type = F_UNLCK;
    SHOW("F_SETLKW unlock", fcntl(fd, F_SETLKW, &fl));
    fl.l_type = 7;
    SHOW("F_SETLK bad type", fcntl(fd, F_SETLK, &fl));
    fl.l_type = F_RDLCK;
    fl.l_whence = 9;
    SHOW("F_SETLK bad whence", fcntl(fd, F_SETLK, &fl));
    struct flock ofd = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    SHOW("F_OFD_SETLK", fcntl(fd, F_OFD_SETLK, &ofd));
    SHOW("flock LOCK_EX", flock(fd, LOCK_EX));
    SHOW("flock LOCK_UN", flock(fd, LOCK_UN));
    SHOW("flock bad op", flock(fd, 0));
    close(fd);
    fd = open("f", O_RDONLY);
    struct flock wl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    SHOW("write lock on O_RDONLY", fcntl(fd, F_SETLK, &wl));
    close(fd);

    printf("-- access and modes\n");
    SHOW("access F_OK", access("f", F_OK));
    SHOW("access missing", access("missing", F_OK));
    SHOW("access X_OK on 0644", access("f", X_OK));
    SHOW("access bad mode", access("f", 8));
    SHOW("chmod 0755", chmod("f", 0755));
    SHOW("access X_OK on 0755", access("f", X_OK));
    stat_path("f");
    fd = open("f", O_RDONLY);
    SHOW("fchmod 0640", fchmod(fd, 0640));
    close(fd);
    stat_path("f");
    SHOW("fchmodat 0600", fchmodat(AT_FDCWD, "f", 0600, 0));
    stat_path("f");
    SHOW("chmod missing", chmod("missing", 0600));
    SHOW("faccessat", faccessat(AT_FDCWD, "f", R_OK | W_OK, 0));
    SHOW("umask", umask(027));
    SHOW("umask again", umask(022));
    SHOW("chown to self", chown("f", getuid(), getgid()));
    SHOW("lchown missing", lchown("missing", getuid(), getgid()));
}

static void devices_and_sync(void)
{
    printf("-- devices\n");
    int fd = SHOW("open /dev/null", open("/dev/null", O_RDWR));
    SHOW("write /dev/null", write(fd, "discarded", 9));
    char buf[16];
    SHOW("read /dev/null", read(fd, buf, sizeof buf));
    struct stat st;
    fstat(fd, &st);
    printf("/dev/null: %s rdev %u,%u\n", ftype(st.st_mode), major(st.st_rdev), minor(st.st_rdev));
    close(fd);
    fd = open("/dev/zero", O_RDONLY);
    memset(buf, 0x55, sizeof buf);
    SHOW("read /dev/zero", read(fd, buf, sizeof buf));
    int z = 1;
    for (size_t i = 0; i < sizeof buf; i++)
        z &= buf[i] == 0;
    printf("/dev/zero gives zeros: %s\n", z ? "yes" : "no");
    close(fd);
    fd = open("/dev/urandom", O_RDONLY);
    SHOW("read /dev/urandom", read(fd, buf, sizeof buf));
    close(fd);

    printf("-- sync, fallocate, times, statfs\n");
    fd = open("f", O_RDWR);
    SHOW("fsync", fsync(fd));
    SHOW("fdatasync", fdatasync(fd));
    SHOW("sync_file_range", sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE));
    SHOW("sync_file_range bad flags", sync_file_range(fd, 0, 0, 0x100));
    SHOW("syncfs", syncfs(fd));
    SHOW("posix_fadvise", posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED));
    SHOW("posix_fallocate 8192", posix_fallocate(fd, 0, 8192));
    fstat(fd, &st);
    printf("size after fallocate: %lld\n", (long long)st.st_size);
    SHOW("fallocate KEEP_SIZE", fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 100000));
    fstat(fd, &st);
    printf("size after KEEP_SIZE: %lld\n", (long long)st.st_size);
    SHOW("fallocate len 0", fallocate(fd, 0, 0, 0));
    sync();
    int dfd = open(".", O_RDONLY | O_DIRECTORY);
    SHOW("fsync a directory", fsync(dfd));
    close(dfd);

    struct timespec ts[2] = {{1000000000, 0}, {1234567890, 500}};
    SHOW("utimensat", utimensat(AT_FDCWD, "f", ts, 0));
    stat("f", &st);
    printf("atime %lld.%09ld mtime %lld.%09ld\n", (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {42, 0}};
    SHOW("futimens omitting atime", futimens(fd, omit));
    fstat(fd, &st);
    printf("atime %lld mtime %lld\n", (long long)st.st_atim.tv_sec, (long long)st.st_mtim.tv_sec);
    struct timespec bad[2] = {{0, 2000000000}, {0, 0}};
    SHOW("utimensat bad nsec", utimensat(AT_FDCWD, "f", bad, 0));
    SHOW("utimensat missing", utimensat(AT_FDCWD, "missing", NULL, 0));
    close(fd);

    struct statfs sf;
    SHOW("statfs", statfs(".", &sf));
    printf("namelen %ld\n", (long)sf.f_namelen);
    SHOW("statfs missing", statfs("missing", &sf));
}

int main(void)
{
    umask(022);
    char tmpl[] = "/tmp/pgkraft-files-XXXXXX";
    if (!mkdtemp(tmpl)) {
        printf("mkdtemp: %s\n", ename(errno));
        return 1;
    }
    if (chdir(tmpl) != 0 || !getcwd(base, sizeof base)) {
        printf("chdir: %s\n", ename(errno));
        return 1;
    }
    regular_files();
    open_errors();
    names();
    listings();
    working_directory();
    descriptors();
    pipes();
    locks_and_access();
    devices_and_sync();

    printf("-- cleanup\n");
    list_dir(".");
    SHOW("chdir /", chdir("/"));
    SHOW("remove the test directory", rm_rf(AT_FDCWD, base));
    SHOW("it is gone", access(base, F_OK));
    return 0;
}
