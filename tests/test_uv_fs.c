/* test_uv_fs.c: the file family: every operation's results and errors,
 * offsets and short reads, many fibers at once, and deadlines, cancellation
 * and bridge stops, including requests stuck in a saturated threadpool
 * (which must be cancelled for real) and reads stuck in a FIFO (whose late
 * completion must not touch the caller's buffer).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"
#include "weft_uv.h"

/* libuv's threadpool size: main() pins it, so that POOL blocking reads
 * occupy every thread. */
#define POOL 4
/* A descriptor number nobody has open. */
#define BAD_FD INT_MAX

static char tmpdir[PATH_MAX];

/* out (PATH_MAX bytes) = dir/name. */
static void join(char* out, const char* dir, const char* name) {
  int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
  if (n < 0 || n >= PATH_MAX)
    abort();
}

static void tpath(char* out, const char* name) {
  join(out, tmpdir, name);
}

static int exists(const char* path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static void* xmalloc(size_t n) {
  void* p = malloc(n);
  if (p == NULL)
    abort();
  return p;
}

static weft_runtime_t* rt_with_bridge(unsigned workers, weft_uv_t** b) {
  weft_runtime_t* rt = test_runtime(workers);
  assert_int_equal(weft_uv_start(rt, b), 0);
  return rt;
}

/* Runs fn(arg) as one job on a fresh runtime and bridge. */
static void run_job(unsigned workers, weft_job_cb fn, void* arg) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(workers, &b);
  weft_counter_t c;

  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, fn, arg, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(weft_uv_stop(b), 0);
  test_assert_no_live_fibers(rt);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

static void fill(unsigned char* p, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++)
    p[i] = (unsigned char)(i * 7 + (size_t)seed * 13 + 3);
}

/* Creates `path` holding `n` bytes of pattern `seed`, through the bridge. */
static void make_file(const char* path, size_t n, unsigned seed) {
  unsigned char* data = xmalloc(n + 1);
  int fd = weft_uv_fs_open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644,
                           WEFT_UV_FOREVER);
  CHECK(fd >= 0);
  fill(data, n, seed);
  CHECK(weft_uv_fs_write(fd, data, n, 0, WEFT_UV_FOREVER) == (int64_t)n);
  CHECK(weft_uv_fs_close(fd, WEFT_UV_FOREVER) == 0);
  free(data);
}

/* Whether `path` holds exactly `n` bytes of pattern `seed`. */
static int file_matches(const char* path, size_t n, unsigned seed) {
  unsigned char* want = xmalloc(n);
  unsigned char* got = xmalloc(n + 1);
  int fd = weft_uv_fs_open(path, O_RDONLY, 0, WEFT_UV_FOREVER);
  int ok = fd >= 0;

  if (ok) {
    fill(want, n, seed);
    /* One byte more than expected: a regular file's read is whole, so a
     * longer file shows as a longer count. */
    ok = weft_uv_fs_read(fd, got, n + 1, 0, WEFT_UV_FOREVER) == (int64_t)n &&
         memcmp(want, got, n) == 0;
  }
  if (fd >= 0)
    CHECK(weft_uv_fs_close(fd, WEFT_UV_FOREVER) == 0);
  free(want);
  free(got);
  return ok;
}

/* ---- open and close ---------------------------------------------------------
 */

static void open_close_job(void* arg) {
  char p[PATH_MAX];
  char missing[PATH_MAX];
  int fd;
  (void)arg;

  tpath(p, "oc_file");
  tpath(missing, "oc_missing");
  fd = weft_uv_fs_open(p, O_CREAT | O_EXCL | O_RDWR, 0600, WEFT_UV_FOREVER);
  CHECK(fd >= 0);
  CHECK(weft_uv_fs_open(p, O_CREAT | O_EXCL | O_RDWR, 0600, WEFT_UV_FOREVER) ==
        UV_EEXIST);
  CHECK(weft_uv_fs_close(fd, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_close(BAD_FD, WEFT_UV_FOREVER) == UV_EBADF);
  CHECK(weft_uv_fs_open(missing, O_RDONLY, 0, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(weft_uv_fs_open(tmpdir, O_WRONLY, 0, WEFT_UV_FOREVER) == UV_EISDIR);
  CHECK(unlink(p) == 0);
}

static void fs_open_close(void** state) {
  (void)state;
  run_job(2, open_close_job, NULL);
}

/* ---- read and write ---------------------------------------------------------
 */

static void read_write_job(void* arg) {
  char p[PATH_MAX];
  unsigned char want[256];
  unsigned char got[300];
  unsigned char* big;
  unsigned char* big_got;
  size_t big_n = 1 << 20;
  int fd;
  int rfd;
  int dfd;
  (void)arg;

  tpath(p, "rw_file");
  fill(want, sizeof(want), 1);
  fd = weft_uv_fs_open(p, O_CREAT | O_TRUNC | O_RDWR, 0644, WEFT_UV_FOREVER);
  CHECK(fd >= 0);
  /* Offset -1 writes at the current position and moves it... */
  CHECK(weft_uv_fs_write(fd, want, 100, -1, WEFT_UV_FOREVER) == 100);
  CHECK(weft_uv_fs_write(fd, want + 100, 156, -1, WEFT_UV_FOREVER) == 156);
  /* ...an explicit offset neither uses nor moves it. */
  CHECK(weft_uv_fs_write(fd, "XYZ", 3, 10, WEFT_UV_FOREVER) == 3);
  memcpy(want + 10, "XYZ", 3);
  CHECK(weft_uv_fs_read(fd, got, sizeof(got), -1, WEFT_UV_FOREVER) == 0);

  /* Byte-exact read-back; a short read at EOF leaves the rest alone. */
  memset(got, 0xEE, sizeof(got));
  CHECK(weft_uv_fs_read(fd, got, sizeof(got), 0, WEFT_UV_FOREVER) == 256);
  CHECK(memcmp(got, want, 256) == 0);
  CHECK(got[256] == 0xEE && got[299] == 0xEE);
  memset(got, 0xEE, sizeof(got));
  CHECK(weft_uv_fs_read(fd, got, 100, 250, WEFT_UV_FOREVER) == 6);
  CHECK(memcmp(got, want + 250, 6) == 0 && got[6] == 0xEE);
  CHECK(weft_uv_fs_read(fd, got, 100, 256, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_read(fd, got, 100, 100000, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_read(fd, got, 0, 0, WEFT_UV_FOREVER) == 0);

  /* Sequential reads at the current position of a second descriptor. */
  rfd = weft_uv_fs_open(p, O_RDONLY, 0, WEFT_UV_FOREVER);
  CHECK(rfd >= 0);
  CHECK(weft_uv_fs_read(rfd, got, 100, -1, WEFT_UV_FOREVER) == 100);
  CHECK(memcmp(got, want, 100) == 0);
  CHECK(weft_uv_fs_read(rfd, got, 200, -1, WEFT_UV_FOREVER) == 156);
  CHECK(memcmp(got, want + 100, 156) == 0);
  CHECK(weft_uv_fs_read(rfd, got, 200, -1, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_write(rfd, want, 10, 0, WEFT_UV_FOREVER) == UV_EBADF);
  CHECK(weft_uv_fs_close(rfd, WEFT_UV_FOREVER) == 0);

  /* Errors. */
  CHECK(weft_uv_fs_read(BAD_FD, got, 10, 0, WEFT_UV_FOREVER) == UV_EBADF);
  CHECK(weft_uv_fs_write(BAD_FD, got, 10, 0, WEFT_UV_FOREVER) == UV_EBADF);
  dfd = weft_uv_fs_open(tmpdir, O_RDONLY, 0, WEFT_UV_FOREVER);
  CHECK(dfd >= 0);
  CHECK(weft_uv_fs_read(dfd, got, 10, -1, WEFT_UV_FOREVER) == UV_EISDIR);
  CHECK(weft_uv_fs_close(dfd, WEFT_UV_FOREVER) == 0);

  /* A megabyte past a hole: the hole reads as zeros. */
  big = xmalloc(big_n);
  big_got = xmalloc(big_n + 4096);
  fill(big, big_n, 9);
  CHECK(weft_uv_fs_write(fd, big, big_n, 4096, WEFT_UV_FOREVER) ==
        (int64_t)big_n);
  CHECK(weft_uv_fs_read(fd, big_got, big_n + 4096, 0, WEFT_UV_FOREVER) ==
        (int64_t)big_n + 4096);
  CHECK(memcmp(big_got, want, 256) == 0);
  CHECK(big_got[300] == 0 && big_got[4095] == 0);
  CHECK(memcmp(big_got + 4096, big, big_n) == 0);
  free(big);
  free(big_got);
  CHECK(weft_uv_fs_close(fd, WEFT_UV_FOREVER) == 0);
  CHECK(unlink(p) == 0);
}

static void fs_read_write(void** state) {
  (void)state;
  run_job(2, read_write_job, NULL);
}

/* ---- stat, fstat, fsync
 * ------------------------------------------------------- */

static void stat_job(void* arg) {
  char p[PATH_MAX];
  char missing[PATH_MAX];
  char through[PATH_MAX];
  uv_stat_t st;
  int fd;
  (void)arg;

  tpath(p, "st_file");
  tpath(missing, "st_missing");
  tpath(through, "st_file/x");
  make_file(p, 1234, 2);
  memset(&st, 0, sizeof(st));
  CHECK(weft_uv_fs_stat(p, &st, WEFT_UV_FOREVER) == 0);
  CHECK(st.st_size == 1234 && S_ISREG(st.st_mode));
  CHECK((st.st_mode & 0777) == 0644);
  CHECK(weft_uv_fs_stat(tmpdir, &st, WEFT_UV_FOREVER) == 0);
  CHECK(S_ISDIR(st.st_mode));

  fd = weft_uv_fs_open(p, O_RDWR, 0, WEFT_UV_FOREVER);
  CHECK(fd >= 0);
  memset(&st, 0, sizeof(st));
  CHECK(weft_uv_fs_fstat(fd, &st, WEFT_UV_FOREVER) == 0);
  CHECK(st.st_size == 1234 && S_ISREG(st.st_mode));
  CHECK(weft_uv_fs_write(fd, "z", 1, 1234, WEFT_UV_FOREVER) == 1);
  CHECK(weft_uv_fs_fsync(fd, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_fstat(fd, &st, WEFT_UV_FOREVER) == 0);
  CHECK(st.st_size == 1235);
  CHECK(weft_uv_fs_close(fd, WEFT_UV_FOREVER) == 0);

  /* Errors leave *st alone. */
  st.st_size = 77;
  CHECK(weft_uv_fs_stat(missing, &st, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(weft_uv_fs_stat(through, &st, WEFT_UV_FOREVER) == UV_ENOTDIR);
  CHECK(weft_uv_fs_fstat(BAD_FD, &st, WEFT_UV_FOREVER) == UV_EBADF);
  CHECK(st.st_size == 77);
  CHECK(weft_uv_fs_fsync(BAD_FD, WEFT_UV_FOREVER) == UV_EBADF);
  CHECK(unlink(p) == 0);
}

static void fs_stat_fstat_fsync(void** state) {
  (void)state;
  umask(022);
  run_job(2, stat_job, NULL);
}

/* ---- directories, rename, unlink
 * ---------------------------------------------- */

static void dirs_job(void* arg) {
  char d[PATH_MAX];
  char f[PATH_MAX];
  char g[PATH_MAX];
  char orphan[PATH_MAX];
  uv_stat_t st;
  (void)arg;

  tpath(d, "dir");
  tpath(f, "dir/f");
  tpath(g, "dir/g");
  tpath(orphan, "no_parent/child");
  CHECK(weft_uv_fs_mkdir(d, 0755, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_stat(d, &st, WEFT_UV_FOREVER) == 0 && S_ISDIR(st.st_mode));
  CHECK(weft_uv_fs_mkdir(d, 0755, WEFT_UV_FOREVER) == UV_EEXIST);
  CHECK(weft_uv_fs_mkdir(orphan, 0755, WEFT_UV_FOREVER) == UV_ENOENT);
  make_file(f, 10, 3);
  CHECK(weft_uv_fs_rmdir(d, WEFT_UV_FOREVER) == UV_ENOTEMPTY);
  CHECK(weft_uv_fs_rename(f, g, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_stat(f, &st, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(file_matches(g, 10, 3));
  CHECK(weft_uv_fs_rename(f, g, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(weft_uv_fs_unlink(d, WEFT_UV_FOREVER) == UV_EISDIR);
  CHECK(weft_uv_fs_rmdir(g, WEFT_UV_FOREVER) == UV_ENOTDIR);
  CHECK(weft_uv_fs_unlink(g, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_unlink(g, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(weft_uv_fs_rmdir(d, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_rmdir(d, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(!exists(d));
}

static void fs_dirs(void** state) {
  (void)state;
  run_job(2, dirs_job, NULL);
}

/* ---- scandir
 * ------------------------------------------------------------------ */

enum { MANY_ENTRIES = 60 };

static void scandir_job(void* arg) {
  char d[PATH_MAX];
  char p[PATH_MAX];
  char name[300];
  char many[MANY_ENTRIES];
  weft_uv_dirent_t* ents = NULL;
  weft_uv_dirent_t dummy = {"", UV_DIRENT_UNKNOWN};
  const char* names[] = {"alpha", "beta", "sub", NULL};
  int seen[4] = {0, 0, 0, 0};
  int n;
  int i;
  int j;
  (void)arg;

  /* A 200-character name: longer than the block's first guess. */
  memset(name, 'L', 200);
  name[200] = '\0';
  names[3] = name;
  tpath(d, "scan");
  CHECK(weft_uv_fs_mkdir(d, 0755, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_scandir(d, &ents, WEFT_UV_FOREVER) == 0);
  CHECK(ents == NULL);
  for (i = 0; i < 4; i++) {
    join(p, d, names[i]);
    if (i == 2)
      CHECK(weft_uv_fs_mkdir(p, 0755, WEFT_UV_FOREVER) == 0);
    else
      make_file(p, 1, 0);
  }
  n = weft_uv_fs_scandir(d, &ents, WEFT_UV_FOREVER);
  CHECK(n == 4 && ents != NULL);
  for (i = 0; i < n && ents != NULL; i++) {
    for (j = 0; j < 4; j++) {
      if (strcmp(ents[i].name, names[j]) == 0) {
        seen[j]++;
        CHECK(ents[i].type == (j == 2 ? UV_DIRENT_DIR : UV_DIRENT_FILE));
      }
    }
  }
  CHECK(seen[0] == 1 && seen[1] == 1 && seen[2] == 1 && seen[3] == 1);
  weft_uv_dirents_free(ents);

  /* Many entries: the block grows and every name survives the moves. */
  for (i = 0; i < MANY_ENTRIES; i++) {
    char e[64];
    snprintf(e, sizeof(e), "sub/entry_%03d_with_some_padding_to_grow", i);
    join(p, d, e);
    make_file(p, 0, 0);
  }
  join(p, d, "sub");
  memset(many, 0, sizeof(many));
  n = weft_uv_fs_scandir(p, &ents, WEFT_UV_FOREVER);
  CHECK(n == MANY_ENTRIES);
  for (i = 0; i < n && ents != NULL; i++) {
    int k = -1;
    char suffix[64] = "";
    CHECK(sscanf(ents[i].name, "entry_%03d_%63s", &k, suffix) == 2);
    CHECK(strcmp(suffix, "with_some_padding_to_grow") == 0);
    CHECK(k >= 0 && k < MANY_ENTRIES && ents[i].type == UV_DIRENT_FILE);
    if (k >= 0 && k < MANY_ENTRIES)
      many[k]++;
  }
  for (i = 0; i < MANY_ENTRIES; i++)
    CHECK(many[i] == 1);
  weft_uv_dirents_free(ents);

  /* Errors leave *out NULL. */
  ents = &dummy;
  join(p, d, "alpha");
  CHECK(weft_uv_fs_scandir(p, &ents, WEFT_UV_FOREVER) == UV_ENOTDIR);
  CHECK(ents == NULL);
  tpath(p, "scan_missing");
  CHECK(weft_uv_fs_scandir(p, &ents, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(ents == NULL);
  weft_uv_dirents_free(NULL);
}

static void fs_scandir(void** state) {
  (void)state;
  run_job(2, scandir_job, NULL);
}

/* ---- sendfile and copyfile
 * ---------------------------------------------------- */

static void copy_job(void* arg) {
  char src[PATH_MAX];
  char dst[PATH_MAX];
  char part[PATH_MAX];
  char missing[PATH_MAX];
  enum { N = 64 * 1024 };
  unsigned char* want = xmalloc(N);
  unsigned char got[600];
  int64_t sent = 0;
  int in;
  int out;
  (void)arg;

  tpath(src, "cp_src");
  tpath(dst, "cp_dst");
  tpath(part, "cp_part");
  tpath(missing, "cp_missing");
  fill(want, N, 5);
  make_file(src, N, 5);

  /* The whole file; a short count is honest, so loop on it. */
  in = weft_uv_fs_open(src, O_RDONLY, 0, WEFT_UV_FOREVER);
  out =
      weft_uv_fs_open(dst, O_CREAT | O_TRUNC | O_WRONLY, 0644, WEFT_UV_FOREVER);
  CHECK(in >= 0 && out >= 0);
  while (sent < N) {
    int64_t r =
        weft_uv_fs_sendfile(out, in, sent, (size_t)(N - sent), WEFT_UV_FOREVER);
    CHECK(r > 0);
    if (r <= 0)
      break;
    sent += r;
  }
  CHECK(weft_uv_fs_close(out, WEFT_UV_FOREVER) == 0);
  CHECK(file_matches(dst, N, 5));

  /* A slice from an offset, and past the end. */
  out =
      weft_uv_fs_open(part, O_CREAT | O_TRUNC | O_RDWR, 0644, WEFT_UV_FOREVER);
  CHECK(out >= 0);
  CHECK(weft_uv_fs_sendfile(out, in, 1000, 500, WEFT_UV_FOREVER) == 500);
  CHECK(weft_uv_fs_read(out, got, sizeof(got), 0, WEFT_UV_FOREVER) == 500);
  CHECK(memcmp(got, want + 1000, 500) == 0);
  CHECK(weft_uv_fs_sendfile(out, in, N, 10, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_sendfile(out, BAD_FD, 0, 10, WEFT_UV_FOREVER) == UV_EBADF);
  CHECK(weft_uv_fs_sendfile(out, in, -1, 10, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_close(out, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_fs_close(in, WEFT_UV_FOREVER) == 0);

  /* copyfile replaces by default; EXCL refuses an existing target. */
  make_file(dst, 10, 6);
  CHECK(weft_uv_fs_copyfile(src, dst, 0, WEFT_UV_FOREVER) == 0);
  CHECK(file_matches(dst, N, 5));
  CHECK(weft_uv_fs_copyfile(src, dst, UV_FS_COPYFILE_EXCL, WEFT_UV_FOREVER) ==
        UV_EEXIST);
  CHECK(weft_uv_fs_copyfile(missing, part, 0, WEFT_UV_FOREVER) == UV_ENOENT);
  CHECK(weft_uv_fs_copyfile(src, dst, 0x7f00, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(file_matches(dst, N, 5));
  CHECK(unlink(src) == 0 && unlink(dst) == 0 && unlink(part) == 0);
  free(want);
}

static void fs_sendfile_copyfile(void** state) {
  (void)state;
  run_job(2, copy_job, NULL);
}

/* ---- bad arguments and contexts
 * ----------------------------------------------- */

static void calls_all(int* rc, const char* path, int fd, void* buf,
                      uv_stat_t* st, weft_uv_dirent_t** ents) {
  rc[0] = weft_uv_fs_open(path, O_RDONLY, 0, WEFT_UV_FOREVER);
  rc[1] = weft_uv_fs_close(fd, WEFT_UV_FOREVER);
  rc[2] = (int)weft_uv_fs_read(fd, buf, 1, 0, WEFT_UV_FOREVER);
  rc[3] = (int)weft_uv_fs_write(fd, buf, 1, 0, WEFT_UV_FOREVER);
  rc[4] = weft_uv_fs_stat(path, st, WEFT_UV_FOREVER);
  rc[5] = weft_uv_fs_fstat(fd, st, WEFT_UV_FOREVER);
  rc[6] = weft_uv_fs_fsync(fd, WEFT_UV_FOREVER);
  rc[7] = weft_uv_fs_unlink(path, WEFT_UV_FOREVER);
  rc[8] = weft_uv_fs_rename(path, path, WEFT_UV_FOREVER);
  rc[9] = weft_uv_fs_mkdir(path, 0755, WEFT_UV_FOREVER);
  rc[10] = weft_uv_fs_rmdir(path, WEFT_UV_FOREVER);
  rc[11] = weft_uv_fs_scandir(path, ents, WEFT_UV_FOREVER);
  rc[12] = (int)weft_uv_fs_sendfile(fd, fd, 0, 1, WEFT_UV_FOREVER);
  rc[13] = weft_uv_fs_copyfile(path, path, 0, WEFT_UV_FOREVER);
}

enum { NCALLS = 14 };

static void check_all(const int* rc, int want) {
  int i;
  for (i = 0; i < NCALLS; i++) {
    if (rc[i] != want)
      fprintf(stderr, "call %d returned %d, want %d\n", i, rc[i], want);
    CHECK(rc[i] == want);
  }
}

static void bad_args_job(void* arg) {
  char buf[4] = {0};
  uv_stat_t st;
  weft_uv_dirent_t* ents;
  int rc[NCALLS];
  char p[PATH_MAX];
  int i;
  (void)arg;

  tpath(p, "ba_file");
  /* NULL paths. */
  calls_all(rc, NULL, BAD_FD, buf, &st, &ents);
  for (i = 0; i < NCALLS; i++) {
    if (i == 0 || i == 4 || (i >= 7 && i <= 11) || i == 13)
      CHECK(rc[i] == UV_EINVAL);
  }
  CHECK(weft_uv_fs_rename(p, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_copyfile(p, NULL, 0, WEFT_UV_FOREVER) == UV_EINVAL);
  /* NULL buffers and results, bad offsets. */
  CHECK(weft_uv_fs_read(0, NULL, 1, 0, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_write(1, NULL, 1, 0, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_read(BAD_FD, buf, 1, -2, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_write(BAD_FD, buf, 1, -2, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_stat(p, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_fstat(BAD_FD, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_fs_scandir(tmpdir, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(!exists(p));
}

static void no_bridge_job(void* arg) {
  int* rc = arg;
  char buf[4] = {0};
  uv_stat_t st;
  weft_uv_dirent_t* ents;
  calls_all(rc, tmpdir, BAD_FD, buf, &st, &ents);
}

static void fs_bad_args(void** state) {
  weft_runtime_t* rt;
  weft_counter_t c;
  int rc[NCALLS];
  char buf[4] = {0};
  uv_stat_t st;
  weft_uv_dirent_t* ents;
  (void)state;

  /* Off a fiber: EPERM, with valid arguments... */
  calls_all(rc, tmpdir, BAD_FD, buf, &st, &ents);
  check_all(rc, UV_EPERM);
  /* ...while bad arguments are refused before the context is looked at. */
  assert_int_equal(weft_uv_fs_stat(NULL, &st, WEFT_UV_FOREVER), UV_EINVAL);
  /* On a fiber of a runtime without a bridge. */
  rt = test_runtime(1);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, no_bridge_job, rc, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  check_all(rc, UV_EINVAL);
  run_job(1, bad_args_job, NULL);
}

/* ---- many fibers at once
 * ------------------------------------------------------ */

static atomic_int many_ok;

static void many_job(void* arg) {
  unsigned i = (unsigned)(uintptr_t)arg;
  enum { N = 4096 };
  unsigned char want[N];
  unsigned char got[N + 1];
  char p[PATH_MAX];
  char name[64];
  uv_stat_t st;
  int fd;
  int ok = 1;

  snprintf(name, sizeof(name), "many_%u", i);
  tpath(p, name);
  fill(want, N, i);
  fd = weft_uv_fs_open(p, O_CREAT | O_EXCL | O_RDWR, 0600, WEFT_UV_FOREVER);
  ok &= fd >= 0;
  ok &= weft_uv_fs_write(fd, want, N / 2, -1, WEFT_UV_FOREVER) == N / 2;
  ok &= weft_uv_fs_write(fd, want + N / 2, N / 2, N / 2, WEFT_UV_FOREVER) ==
        N / 2;
  ok &= weft_uv_fs_fstat(fd, &st, WEFT_UV_FOREVER) == 0 && st.st_size == N;
  ok &= weft_uv_fs_read(fd, got, N + 1, 0, WEFT_UV_FOREVER) == N;
  ok &= memcmp(got, want, N) == 0;
  ok &= weft_uv_fs_close(fd, WEFT_UV_FOREVER) == 0;
  ok &= weft_uv_fs_unlink(p, WEFT_UV_FOREVER) == 0;
  CHECK(ok);
  if (ok)
    atomic_fetch_add(&many_ok, 1);
}

static void fs_many_fibers(void** state) {
  long n = test_size(200);
  size_t k;
  (void)state;

  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_uv_t* b;
    weft_runtime_t* rt = rt_with_bridge(test_worker_counts[k], &b);
    weft_counter_t c;
    long i;

    atomic_store(&many_ok, 0);
    weft_counter_init(&c, 0);
    for (i = 0; i < n; i++)
      assert_int_equal(weft_spawn(rt, many_job, (void*)(uintptr_t)i, &c), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    assert_int_equal(atomic_load(&many_ok), n);
    assert_int_equal(weft_uv_stop(b), 0);
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* ---- a saturated threadpool
 * ----------------------------------------------------- */

/* POOL blocking reads on FIFOs, submitted from a loop of the test's own:
 * every libuv threadpool thread is stuck in one until pool_unblock, so
 * every request queued after them waits, cancellable, in the queue. */
typedef struct {
  uv_loop_t loop;
  uv_fs_t reqs[POOL];
  char paths[POOL][PATH_MAX];
  char bytes[POOL];
  int fds[POOL];
  int done;
} pool_block_t;

static void pool_read_cb(uv_fs_t* req) {
  pool_block_t* p = req->data;
  if (req->result == 1)
    p->done++;
  uv_fs_req_cleanup(req);
}

static void pool_block(pool_block_t* p) {
  int i;

  memset(p, 0, sizeof(*p));
  assert_int_equal(uv_loop_init(&p->loop), 0);
  for (i = 0; i < POOL; i++) {
    char name[32];
    uv_buf_t buf = uv_buf_init(&p->bytes[i], 1);
    snprintf(name, sizeof(name), "pool_fifo_%d", i);
    tpath(p->paths[i], name);
    assert_int_equal(mkfifo(p->paths[i], 0600), 0);
    /* O_RDWR: the open does not wait for a writer. */
    p->fds[i] = open(p->paths[i], O_RDWR);
    assert_true(p->fds[i] >= 0);
    p->reqs[i].data = p;
    /* uv_fs_read queues the work before it returns: whatever is submitted
     * later is behind it. */
    assert_int_equal(
        uv_fs_read(&p->loop, &p->reqs[i], p->fds[i], &buf, 1, -1, pool_read_cb),
        0);
  }
}

static void pool_unblock(pool_block_t* p) {
  int i;

  for (i = 0; i < POOL; i++)
    assert_int_equal(write(p->fds[i], "u", 1), 1);
  assert_int_equal(uv_run(&p->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(p->done, POOL);
  for (i = 0; i < POOL; i++) {
    assert_int_equal(close(p->fds[i]), 0);
    assert_int_equal(unlink(p->paths[i]), 0);
  }
  assert_int_equal(uv_loop_close(&p->loop), 0);
}

typedef struct {
  char late[PATH_MAX];
  char queued[PATH_MAX];
  char opened[PATH_MAX];
} deadline_t;

static void deadline_job(void* arg) {
  deadline_t* d = arg;
  uv_stat_t st;

  /* A deadline already past: the request never starts. */
  CHECK(weft_uv_fs_mkdir(d->late, 0755, 1) == UV_ETIMEDOUT);
  /* Stuck in the queue: the deadline wins and uv_cancel dequeues it. */
  CHECK(weft_uv_fs_mkdir(d->queued, 0755, weft_uv_deadline_in(20)) ==
        UV_ETIMEDOUT);
  CHECK(weft_uv_fs_open(d->opened, O_CREAT | O_WRONLY, 0644,
                        weft_uv_deadline_in(5)) == UV_ETIMEDOUT);
  CHECK(weft_uv_fs_stat(d->late, &st, weft_uv_deadline_in(5)) == UV_ETIMEDOUT);
}

static void fs_deadline_queued(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(2, &b);
  weft_counter_t c;
  pool_block_t pool;
  deadline_t d;
  (void)state;

  tpath(d.late, "dl_late");
  tpath(d.queued, "dl_queued");
  tpath(d.opened, "dl_opened");
  pool_block(&pool);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, deadline_job, &d, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  pool_unblock(&pool);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
  /* Cancelled for real: none of them ever ran. */
  assert_false(exists(d.late));
  assert_false(exists(d.queued));
  assert_false(exists(d.opened));
}

/* ---- cancellation
 * ------------------------------------------------------------ */

typedef struct {
  char path[PATH_MAX];
  int fd;
  char buf[8];
  weft_uv_job_t self;
  atomic_int ready;
  atomic_int done;
  int64_t rc;
} victim_t;

static void mkdir_victim(void* arg) {
  victim_t* v = arg;
  v->self = weft_uv_job_self();
  atomic_store(&v->ready, 1);
  v->rc = weft_uv_fs_mkdir(v->path, 0755, WEFT_UV_FOREVER);
  atomic_store(&v->done, 1);
}

static void read_victim(void* arg) {
  victim_t* v = arg;
  v->self = weft_uv_job_self();
  atomic_store(&v->ready, 1);
  v->rc = weft_uv_fs_read(v->fd, v->buf, sizeof(v->buf), -1, WEFT_UV_FOREVER);
  atomic_store(&v->done, 1);
}

/* Cancels until the victim's call returns: a cancel that arrives before
 * the request is pending is (rightly) a no-op. */
static void cancel_until_done(weft_uv_t* b, victim_t* v) {
  while (!atomic_load(&v->ready))
    test_sleep_ms(1);
  while (!atomic_load(&v->done)) {
    assert_int_equal(weft_uv_cancel(b, v->self), 0);
    test_sleep_ms(2);
  }
}

static void fs_cancel_queued(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(2, &b);
  weft_counter_t c;
  pool_block_t pool;
  victim_t v;
  (void)state;

  memset(&v, 0, sizeof(v));
  tpath(v.path, "cancel_dir");
  pool_block(&pool);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, mkdir_victim, &v, &c), 0);
  cancel_until_done(b, &v);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(v.rc, UV_ECANCELED);
  pool_unblock(&pool);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  assert_false(exists(v.path));
}

static int fifo_open(const char* name, char* path) {
  int fd;
  tpath(path, name);
  assert_int_equal(mkfifo(path, 0600), 0);
  fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  return fd;
}

static void fifo_close(int fd, const char* path) {
  assert_int_equal(close(fd), 0);
  assert_int_equal(unlink(path), 0);
}

static void deadline_reader(void* arg) {
  victim_t* v = arg;
  v->rc = weft_uv_fs_read(v->fd, v->buf, sizeof(v->buf), -1,
                          weft_uv_deadline_in(30));
}

static void deadline_opener(void* arg) {
  victim_t* v = arg;
  /* Opening a FIFO for reading blocks until a writer comes. */
  v->rc = weft_uv_fs_open(v->path, O_RDONLY, 0, weft_uv_deadline_in(30));
}

/* A read a threadpool thread is already blocked in cannot be dequeued: the
 * fiber still gets its error at once, and the read's late data goes to the
 * operation's own buffer, never to the caller's. An open that succeeds
 * after its fiber gave up is closed, not leaked. */
static void fs_abandon_running_read(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(2, &b);
  weft_counter_t c;
  victim_t timed;
  victim_t cancelled;
  victim_t opener;
  static const char zero[8];
  int fd;
  (void)state;

  memset(&timed, 0, sizeof(timed));
  memset(&cancelled, 0, sizeof(cancelled));
  timed.fd = fifo_open("run_fifo_timed", timed.path);
  cancelled.fd = fifo_open("run_fifo_cancelled", cancelled.path);
  memset(&opener, 0, sizeof(opener));
  tpath(opener.path, "run_fifo_open");
  assert_int_equal(mkfifo(opener.path, 0600), 0);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, deadline_opener, &opener, &c), 0);
  assert_int_equal(weft_spawn(rt, deadline_reader, &timed, &c), 0);
  assert_int_equal(weft_spawn(rt, read_victim, &cancelled, &c), 0);
  cancel_until_done(b, &cancelled);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(timed.rc, UV_ETIMEDOUT);
  assert_int_equal(cancelled.rc, UV_ECANCELED);
  assert_int_equal(opener.rc, UV_ETIMEDOUT);
  /* A writer lets the abandoned open (if it was running) succeed. */
  fd = open(opener.path, O_RDWR);
  assert_true(fd >= 0);
  /* Release the reads (if they were running); stop waits for every
   * request the loop still has. */
  assert_int_equal(write(timed.fd, "late", 4), 4);
  assert_int_equal(write(cancelled.fd, "late", 4), 4);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_memory_equal(timed.buf, zero, sizeof(zero));
  assert_memory_equal(cancelled.buf, zero, sizeof(zero));
  assert_int_equal(weft_runtime_destroy(rt), 0);
  fifo_close(timed.fd, timed.path);
  fifo_close(cancelled.fd, cancelled.path);
  /* With our writer gone, a non-blocking writer finds no reader: the
   * descriptor the abandoned open got, if any, was closed. */
  assert_int_equal(close(fd), 0);
  errno = 0;
  fd = open(opener.path, O_WRONLY | O_NONBLOCK);
  assert_int_equal(fd, -1);
  assert_int_equal(errno, ENXIO);
  assert_int_equal(unlink(opener.path), 0);
}

/* ---- stopping the bridge
 * ------------------------------------------------------ */

typedef struct {
  int i;
  int fd;
  char path[PATH_MAX];
  char buf[16];
  int64_t rc;
} pending_t;

static void pending_job(void* arg) {
  pending_t* p = arg;
  uv_stat_t st;

  switch (p->i % 4) {
    case 0:
      p->rc = weft_uv_fs_mkdir(p->path, 0755, WEFT_UV_FOREVER);
      break;
    case 1:
      p->rc =
          weft_uv_fs_open(p->path, O_CREAT | O_WRONLY, 0644, WEFT_UV_FOREVER);
      break;
    case 2:
      p->rc =
          weft_uv_fs_read(p->fd, p->buf, sizeof(p->buf), 0, WEFT_UV_FOREVER);
      break;
    default:
      p->rc = weft_uv_fs_stat(tmpdir, &st, WEFT_UV_FOREVER);
      break;
  }
}

static void late_job(void* arg) {
  int* rc = arg;
  uv_stat_t st;
  *rc = weft_uv_fs_stat(tmpdir, &st, WEFT_UV_FOREVER);
}

static void fs_stop_pending(void** state) {
  long n = test_size(100);
  pending_t* p = calloc((size_t)n, sizeof(*p));
  char src[PATH_MAX];
  int fd;
  size_t k;
  (void)state;

  assert_non_null(p);
  tpath(src, "stop_src");
  fd = open(src, O_CREAT | O_TRUNC | O_RDWR, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "data", 4), 4);
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_uv_t* b;
    weft_runtime_t* rt = rt_with_bridge(test_worker_counts[k], &b);
    weft_counter_t c;
    weft_stats_t s;
    pool_block_t pool;
    int late_rc = 0;
    long i;

    pool_block(&pool);
    weft_counter_init(&c, 0);
    for (i = 0; i < n; i++) {
      char name[64];
      snprintf(name, sizeof(name), "stop_%zu_%ld", k, i);
      p[i].i = (int)i;
      p[i].fd = fd;
      p[i].rc = 1;
      tpath(p[i].path, name);
      assert_int_equal(weft_spawn(rt, pending_job, &p[i], &c), 0);
    }
    /* Let (most of) them block; any still unposted gets ECANCELED too. */
    for (i = 0; i < 5000; i++) {
      weft_stats(rt, &s);
      if (s.fibers_created >= (uint64_t)n)
        break;
      test_sleep_ms(1);
    }
    test_sleep_ms(10);
    assert_int_equal(weft_uv_stop(b), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    for (i = 0; i < n; i++)
      assert_int_equal(p[i].rc, UV_ECANCELED);
    /* Later calls are cancelled at once. */
    weft_counter_init(&c, 0);
    assert_int_equal(weft_spawn(rt, late_job, &late_rc, &c), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    assert_int_equal(late_rc, UV_ECANCELED);
    pool_unblock(&pool);
    assert_int_equal(weft_runtime_destroy(rt), 0);
    /* Cancelled for real: nothing was created, nothing was read. */
    for (i = 0; i < n; i++) {
      assert_false(exists(p[i].path));
      assert_int_equal(p[i].buf[0], 0);
    }
  }
  assert_int_equal(close(fd), 0);
  assert_int_equal(unlink(src), 0);
  free(p);
}

/* ---- setup
 * -------------------------------------------------------------------- */

static int rm_entry(const char* path, const struct stat* st, int flag,
                    struct FTW* ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int group_setup(void** state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/weft_test_fs_XXXXXX");
  return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int group_teardown(void** state) {
  (void)state;
  return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fs_open_close),
      cmocka_unit_test(fs_read_write),
      cmocka_unit_test(fs_stat_fstat_fsync),
      cmocka_unit_test(fs_dirs),
      cmocka_unit_test(fs_scandir),
      cmocka_unit_test(fs_sendfile_copyfile),
      cmocka_unit_test(fs_bad_args),
      cmocka_unit_test(fs_many_fibers),
      cmocka_unit_test(fs_deadline_queued),
      cmocka_unit_test(fs_cancel_queued),
      cmocka_unit_test(fs_abandon_running_read),
      cmocka_unit_test(fs_stop_pending),
  };
  /* Before libuv starts its threadpool: POOL threads exactly. */
  setenv("UV_THREADPOOL_SIZE", "4", 1);
  return cmocka_run_group_tests_name("uv_fs", tests, group_setup,
                                     group_teardown);
}
