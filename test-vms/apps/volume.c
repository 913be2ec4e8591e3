/*
 * volume: file operations PostgreSQL makes on its data directory, in the
 * directory argv[1] (default /data: in the image, the 9p volume). Natively
 * it runs on a fresh temporary directory; in the image on the volume, and
 * the output must be the same. Covers O_CREAT|O_EXCL, write/pwrite/pread,
 * lseek, fsync/fdatasync (files and directories), O_SYNC/O_DSYNC/O_APPEND/
 * O_TRUNC, ftruncate up and down, stat/lstat/fstatat, rename over a file and
 * of a directory, readdir (sorted), unlink of an open file, rmdir and
 * unlinkat(AT_REMOVEDIR), access, statfs, mkdir errors, getcwd under it.
 * Only what any Linux file system reports alike is printed: no inode
 * numbers, times, directory sizes or file system type.
 *
 * It leaves `kept.txt` ("durable\n" then 8 KiB of 'p') and `keepdir/inner`
 * ("inner\n") behind, for the host to check after the VM is gone.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <limits.h>
#include <unistd.h>

static int failures;

static const char *ename(int e)
{
    switch (e) {
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENOTEMPTY: return "ENOTEMPTY";
    case EBADF: return "EBADF";
    default: {
        static char other[16];
        snprintf(other, sizeof other, "E%d", e);
        return other;
    }
    }
}

/* A call that must succeed. */
#define OK(call)                                                              \
    do {                                                                      \
        if ((call) < 0) {                                                     \
            printf("FAIL line %d: %s: %s\n", __LINE__, #call, ename(errno)); \
            failures++;                                                       \
        }                                                                     \
    } while (0)

/* A call that must fail: prints which errno it got. */
#define ERR(what, call)                                                     \
    do {                                                                    \
        errno = 0;                                                          \
        long r_ = (long)(call);                                             \
        printf("%s: %s\n", what, r_ < 0 ? ename(errno) : "succeeded");      \
    } while (0)

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The directory's entries, sorted, with their d_type. */
static void list(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        printf("FAIL opendir %s: %s\n", path, ename(errno));
        failures++;
        return;
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        char *s = malloc(strlen(e->d_name) + 4);
        sprintf(s, "%s/%c", e->d_name,
                e->d_type == DT_DIR ? 'd' : e->d_type == DT_REG ? 'f' : '?');
        names[n++] = s;
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp);
    printf("ls %s:", path);
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

static void show(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        printf("stat %s: %s\n", path, ename(errno));
        return;
    }
    printf("stat %s: %s size=%lld mode=%o nlink=%ld\n", path,
           S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other",
           S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size, st.st_mode & 07777,
           S_ISDIR(st.st_mode) ? 0L : (long)st.st_nlink);
}

static void contents(const char *path)
{
    char buf[64];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("open %s: %s\n", path, ename(errno));
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        printf("read %s: %s\n", path, ename(errno));
        return;
    }
    buf[n] = 0;
    printf("%s holds %zd bytes: \"%s\"\n", path, n, buf);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/data";
    umask(022);
    if (chdir(dir) < 0) {
        printf("chdir %s: %s\n", dir, ename(errno));
        return 2;
    }
    /* Start from an empty directory (a rerun on the same volume). */
    unlink("kept.txt");
    unlink("keepdir/inner");
    rmdir("keepdir");

    /* Create, write, sync. */
    int fd = open("a.dat", O_CREAT | O_EXCL | O_RDWR, 0600);
    OK(fd);
    ERR("O_EXCL again", open("a.dat", O_CREAT | O_EXCL | O_RDWR, 0600));
    char page[8192];
    memset(page, 'x', sizeof page);
    printf("write: %zd\n", write(fd, page, sizeof page));
    memset(page, 'y', sizeof page);
    printf("pwrite: %zd\n", pwrite(fd, page, 100, 8000));
    OK(fsync(fd));
    OK(fdatasync(fd));
    printf("lseek end: %lld\n", (long long)lseek(fd, 0, SEEK_END));
    char back[200] = {0};
    printf("pread: %zd\n", pread(fd, back, 200, 7990));
    printf("bytes: %.12s...%.4s\n", back, back + 106);
    printf("read at end: %zd\n", read(fd, back, 10));
    struct stat st;
    OK(fstat(fd, &st));
    printf("fstat: size=%lld mode=%o regular=%d\n", (long long)st.st_size,
           st.st_mode & 07777, S_ISREG(st.st_mode));

    /* ftruncate down and up (a hole reads as zeros). */
    OK(ftruncate(fd, 10));
    OK(fstat(fd, &st));
    printf("ftruncate down: %lld\n", (long long)st.st_size);
    OK(ftruncate(fd, 20000));
    memset(back, 1, sizeof back);
    ssize_t got = pread(fd, back, 16, 19984);
    printf("hole pread: %zd first=%d last=%d\n", got, back[0], back[15]);
    OK(close(fd));
    show("a.dat");
    ERR("ftruncate of O_RDONLY", ({
            int r = open("a.dat", O_RDONLY);
            int e = ftruncate(r, 0);
            int saved = errno;
            close(r);
            errno = saved;
            e;
        }));

    /* O_TRUNC, O_APPEND, O_SYNC, O_DSYNC. */
    fd = open("a.dat", O_WRONLY | O_TRUNC | O_APPEND);
    OK(fd);
    OK(write(fd, "one ", 4));
    OK(lseek(fd, 0, SEEK_SET));
    OK(write(fd, "two\n", 4));
    printf("append offset: %lld\n", (long long)lseek(fd, 0, SEEK_CUR));
    OK(close(fd));
    contents("a.dat");
    fd = open("sync.dat", O_CREAT | O_WRONLY | O_SYNC, 0644);
    OK(fd);
    printf("O_SYNC write: %zd\n", write(fd, "synced\n", 7));
    OK(close(fd));
    fd = open("sync.dat", O_WRONLY | O_DSYNC | O_APPEND);
    OK(fd);
    printf("O_DSYNC write: %zd\n", write(fd, "dsynced\n", 8));
    OK(close(fd));
    contents("sync.dat");

    /* Directories: mkdir, errors, fsync of a directory. */
    OK(mkdir("sub", 0700));
    ERR("mkdir existing", mkdir("sub", 0700));
    ERR("mkdir under a file", mkdir("a.dat/x", 0700));
    ERR("open missing", open("sub/none", O_RDONLY));
    ERR("O_DIRECTORY of a file", open("a.dat", O_RDONLY | O_DIRECTORY));
    ERR("write open of a directory", open("sub", O_RDWR));
    fd = open("sub/f1", O_CREAT | O_WRONLY, 0644);
    OK(fd);
    OK(write(fd, "f1\n", 3));
    OK(fsync(fd));
    OK(close(fd));
    int dfd = open("sub", O_RDONLY | O_DIRECTORY);
    OK(dfd);
    OK(fsync(dfd));
    fd = openat(dfd, "f2", O_CREAT | O_RDWR | O_EXCL, 0640);
    OK(fd);
    OK(close(fd));
    struct stat at;
    OK(fstatat(dfd, "f2", &at, 0));
    printf("fstatat: size=%lld mode=%o\n", (long long)at.st_size, at.st_mode & 07777);
    OK(lstat("sub/f1", &at));
    printf("lstat: regular=%d size=%lld\n", S_ISREG(at.st_mode), (long long)at.st_size);
    list("sub");

    /* getcwd below the mount point. */
    char cwd[4096];
    OK(chdir("sub"));
    printf("getcwd ends in /sub: %d\n",
           getcwd(cwd, sizeof cwd) && strlen(cwd) >= 4 &&
               strcmp(cwd + strlen(cwd) - 4, "/sub") == 0);
    OK(chdir(".."));

    /* rename: over a file, a directory, into a directory. */
    OK(rename("sub/f1", "sub/f2"));
    contents("sub/f2");
    ERR("rename of a missing file", rename("sub/f1", "sub/f3"));
    OK(rename("sub", "moved"));
    show("sub");
    OK(rename("moved/f2", "f2.top"));
    /* realpath (musl reads /proc/self/fd/N) of a file that was renamed. */
    char *rp = realpath("f2.top", NULL);
    printf("realpath ends in /f2.top: %d\n",
           rp && strlen(rp) > 7 && strcmp(rp + strlen(rp) - 7, "/f2.top") == 0 &&
               strncmp(rp, dir, strlen(dir)) == 0);
    free(rp);
    list("moved");
    list(".");
    ERR("rename a directory over a file", rename("moved", "f2.top"));
    fd = creat("moved/again", 0600);
    OK(fd);
    OK(close(fd));
    ERR("rmdir of a non-empty directory", rmdir("moved"));

    /* unlink of an open file: it stays readable until closed. */
    fd = open("f2.top", O_RDONLY);
    OK(fd);
    OK(unlink("f2.top"));
    ERR("stat unlinked", stat("f2.top", &at));
    char two[8] = {0};
    printf("read unlinked: %zd \"%.3s\"\n", read(fd, two, 3), two);
    OK(close(fd));

    /* unlinkat and AT_REMOVEDIR. */
    ERR("unlinkat of a directory without AT_REMOVEDIR", unlinkat(AT_FDCWD, "moved", 0));
    ERR("AT_REMOVEDIR of a non-empty directory", unlinkat(AT_FDCWD, "moved", AT_REMOVEDIR));
    DIR *d = opendir("moved");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            OK(unlinkat(dirfd(d), e->d_name, 0));
    if (d)
        closedir(d);
    OK(unlinkat(AT_FDCWD, "moved", AT_REMOVEDIR));
    ERR("rmdir again", rmdir("moved"));
    OK(close(dfd));

    /* access and statfs. */
    printf("access a.dat: %d\n", access("a.dat", R_OK | W_OK));
    ERR("access missing", access("nope", F_OK));
    struct statfs sf;
    OK(statfs(".", &sf));
    printf("statfs: blocks>0 %d bsize>0 %d\n", sf.f_blocks > 0, sf.f_bsize > 0);

    /* Many files in one directory: readdir across several answers. */
    OK(mkdir("many", 0755));
    for (int i = 0; i < 300; i++) {
        char name[64];
        snprintf(name, sizeof name, "many/file-with-a-longish-name-%03d", i);
        int f = open(name, O_CREAT | O_WRONLY, 0644);
        OK(f);
        OK(close(f));
    }
    int count = 0;
    d = opendir("many");
    while (d && (e = readdir(d)))
        count++;
    if (d)
        closedir(d);
    printf("many: %d entries\n", count);
    for (int i = 0; i < 300; i++) {
        char name[64];
        snprintf(name, sizeof name, "many/file-with-a-longish-name-%03d", i);
        OK(unlink(name));
    }
    OK(rmdir("many"));

    /* A large write and read back: more than one request's worth. */
    fd = open("big.dat", O_CREAT | O_RDWR | O_TRUNC, 0600);
    OK(fd);
    static char big[1 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7 + i / 4096);
    printf("big write: %zd\n", write(fd, big, sizeof big));
    static char bigback[1 << 20];
    printf("big read: %zd\n", pread(fd, bigback, sizeof bigback, 0));
    printf("big same: %d\n", memcmp(big, bigback, sizeof big) == 0);
    OK(close(fd));
    OK(unlink("big.dat"));
    OK(unlink("a.dat"));
    OK(unlink("sync.dat"));

    /* What stays for the host. */
    fd = open("kept.txt", O_CREAT | O_EXCL | O_WRONLY, 0644);
    OK(fd);
    OK(write(fd, "durable\n", 8));
    memset(page, 'p', sizeof page);
    OK(write(fd, page, sizeof page));
    OK(fdatasync(fd));
    OK(close(fd));
    OK(mkdir("keepdir", 0755));
    fd = open("keepdir/inner", O_CREAT | O_WRONLY, 0644);
    OK(fd);
    OK(write(fd, "inner\n", 6));
    OK(fsync(fd));
    OK(close(fd));
    dfd = open(".", O_RDONLY | O_DIRECTORY);
    OK(fsync(dfd));
    OK(close(dfd));
    list(".");

    printf("failures: %d\n", failures);
    return failures ? 1 : 0;
}
