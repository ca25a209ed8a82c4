/* parallel_hash.c: walk a directory tree with file-system fibers and hash
 * every file in parallel jobs.
 *
 * Each directory is a job that lists itself with weft_uv_fs_scandir and
 * spawns a job per entry: subdirectories walk on, files are read in 64 KiB
 * chunks with weft_uv_fs_read (the fiber suspends on each read, the worker
 * runs other jobs) and hashed with 64-bit FNV-1a. Prints one line per file
 * and a digest of the whole tree; --verify hashes everything again with
 * plain blocking reads on one thread and checks that both agree.
 *
 *   parallel_hash DIR [--verify]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft_uv.h"

#define CHUNK (64 * 1024)

typedef struct {
  weft_counter_t done;
  atomic_uint_fast64_t digest; /* sum of (path hash ^ content hash) */
  atomic_long files;
  atomic_long bytes;
  atomic_int errors;
} walk_t;

typedef struct {
  walk_t* walk;
  char* path;
} item_t;

static uint64_t fnv1a(uint64_t h, const void* data, size_t len) {
  const unsigned char* p = data;
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

#define FNV_START 14695981039346656037ull

static void record(walk_t* w, const char* path, uint64_t h, long size) {
  uint64_t tag = fnv1a(FNV_START, path, strlen(path));
  atomic_fetch_add(&w->digest, tag ^ h);
  atomic_fetch_add(&w->files, 1);
  atomic_fetch_add(&w->bytes, size);
  printf("%016" PRIx64 "  %s\n", h, path);
}

static void hash_file(void* arg) {
  item_t* it = arg;
  char* buf = malloc(CHUNK);
  uint64_t h = FNV_START;
  int64_t off = 0;
  int64_t n;
  int fd;

  fd = weft_uv_fs_open(it->path, O_RDONLY, 0, WEFT_UV_FOREVER);
  if (fd < 0 || buf == NULL) {
    fprintf(stderr, "%s: %s\n", it->path, uv_strerror(fd < 0 ? fd : -12));
    atomic_fetch_add(&it->walk->errors, 1);
  } else {
    while ((n = weft_uv_fs_read(fd, buf, CHUNK, off, WEFT_UV_FOREVER)) > 0) {
      h = fnv1a(h, buf, (size_t)n);
      off += n;
    }
    if (n < 0) {
      fprintf(stderr, "%s: %s\n", it->path, uv_strerror((int)n));
      atomic_fetch_add(&it->walk->errors, 1);
    } else {
      record(it->walk, it->path, h, (long)off);
    }
    weft_uv_fs_close(fd, WEFT_UV_FOREVER);
  }
  free(buf);
  free(it->path);
  free(it);
}

static void walk_dir(void* arg);

static void spawn_item(walk_t* w, const char* dir, const char* name,
                       weft_job_cb fn) {
  item_t* it = malloc(sizeof(*it));
  size_t len = strlen(dir) + strlen(name) + 2;
  if (it == NULL || (it->path = malloc(len)) == NULL) {
    free(it);
    atomic_fetch_add(&w->errors, 1);
    return;
  }
  snprintf(it->path, len, "%s/%s", dir, name);
  it->walk = w;
  if (weft_spawn(NULL, fn, it, &w->done) != 0) {
    free(it->path);
    free(it);
    atomic_fetch_add(&w->errors, 1);
  }
}

static void walk_dir(void* arg) {
  item_t* it = arg;
  weft_uv_dirent_t* ents;
  int n = weft_uv_fs_scandir(it->path, &ents, WEFT_UV_FOREVER);
  int i;

  if (n < 0) {
    fprintf(stderr, "%s: %s\n", it->path, uv_strerror(n));
    atomic_fetch_add(&it->walk->errors, 1);
  } else {
    for (i = 0; i < n; i++) {
      if (ents[i].type == UV_DIRENT_DIR)
        spawn_item(it->walk, it->path, ents[i].name, walk_dir);
      else if (ents[i].type == UV_DIRENT_FILE)
        spawn_item(it->walk, it->path, ents[i].name, hash_file);
    }
    weft_uv_dirents_free(ents);
  }
  free(it->path);
  free(it);
}

/* ---- the serial check ------------------------------------------------------
 */

static uint64_t serial_digest(const char* dir, long* files) {
  DIR* d = opendir(dir);
  struct dirent* e;
  uint64_t sum = 0;
  char path[4096];
  char* buf = malloc(CHUNK);

  while (d != NULL && buf != NULL && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    if (e->d_type == DT_DIR) {
      sum += serial_digest(path, files);
    } else if (e->d_type == DT_REG) {
      uint64_t h = FNV_START;
      ssize_t n;
      int fd = open(path, O_RDONLY);
      if (fd < 0)
        continue;
      while ((n = read(fd, buf, CHUNK)) > 0)
        h = fnv1a(h, buf, (size_t)n);
      close(fd);
      sum += fnv1a(FNV_START, path, strlen(path)) ^ h;
      (*files)++;
    }
  }
  if (d != NULL)
    closedir(d);
  free(buf);
  return sum;
}

typedef struct {
  const char* root;
  walk_t walk;
} main_arg_t;

static void main_job(void* arg) {
  main_arg_t* m = arg;
  weft_uv_t* b;
  item_t* root = malloc(sizeof(*root));

  if (weft_uv_start(weft_runtime_self(), &b) != 0 || root == NULL) {
    atomic_fetch_add(&m->walk.errors, 1);
    free(root);
    return;
  }
  root->walk = &m->walk;
  root->path = strdup(m->root);
  weft_spawn(NULL, walk_dir, root, &m->walk.done);
  weft_counter_wait(&m->walk.done, 0);
  weft_uv_stop(b);
}

int main(int argc, char** argv) {
  main_arg_t m;
  int verify = argc > 2 && strcmp(argv[2], "--verify") == 0;
  int err;

  if (argc < 2) {
    fprintf(stderr, "usage: parallel_hash DIR [--verify]\n");
    return 2;
  }
  memset(&m, 0, sizeof(m));
  m.root = argv[1];
  weft_counter_init(&m.walk.done, 0);
  err = weft_run(NULL, main_job, &m);
  if (err != 0) {
    fprintf(stderr, "weft_run: %s\n", weft_strerror(err));
    return 1;
  }
  printf("%ld files, %ld bytes, digest %016" PRIx64 ", %d errors\n",
         (long)atomic_load(&m.walk.files), (long)atomic_load(&m.walk.bytes),
         (uint64_t)atomic_load(&m.walk.digest), atomic_load(&m.walk.errors));
  if (verify) {
    long files = 0;
    uint64_t d = serial_digest(argv[1], &files);
    int ok =
        d == atomic_load(&m.walk.digest) && files == atomic_load(&m.walk.files);
    printf("verify: %s\n", ok ? "ok" : "MISMATCH");
    return ok && atomic_load(&m.walk.errors) == 0 ? 0 : 1;
  }
  return atomic_load(&m.walk.errors) == 0 ? 0 : 1;
}
