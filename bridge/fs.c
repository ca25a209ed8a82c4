/* fs.c: the file family. Each weft_uv_fs_* call is one uv_fs_t request on
 * libuv's threadpool, wrapped in one bridge operation that owns everything
 * the request touches: copies of the paths and, for read and write, a bounce
 * buffer. libuv may still be using them after a deadline or cancellation
 * has made the fiber's wait return, and uv_cancel cannot stop a request a
 * threadpool thread has already picked up. Results land in the caller's
 * memory on the loop thread, only while the fiber still waits for them.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

/* Linux moves at most this many bytes in one read, write or sendfile
 * (MAX_RW_COUNT): clamping to it changes no result there, and it bounds the
 * bounce buffer. */
#define FS_IO_MAX ((size_t)INT_MAX & ~(size_t)4095)

typedef struct {
  weft__uv_op_t op; /* first: the bridge casts between the two */
  uv_fs_t req;
  uv_fs_type type;
  uv_file fd;  /* out_fd for sendfile */
  uv_file fd2; /* in_fd for sendfile */
  int flags;
  int mode;
  int64_t offset;
  size_t len;
  void* out; /* the caller's memory: read data, uv_stat_t, dirent list */
  char* path;
  char* path2;
  char* data;
  char mem[]; /* path, path2 and data: freed with the op */
} fs_op_t;

static void fs_done(uv_fs_t* req);

/* ---- the loop side ----------------------------------------------------------
 */

static int fs_submit(fs_op_t* f, uv_loop_t* loop) {
  uv_fs_t* req = &f->req;
  /* uv_fs_read and uv_fs_write copy the uv_buf_t itself. */
  uv_buf_t buf = uv_buf_init(f->data, (unsigned int)f->len);

  switch (f->type) {
    case UV_FS_OPEN:
      return uv_fs_open(loop, req, f->path, f->flags, f->mode, fs_done);
    case UV_FS_CLOSE:
      return uv_fs_close(loop, req, f->fd, fs_done);
    case UV_FS_READ:
      return uv_fs_read(loop, req, f->fd, &buf, 1, f->offset, fs_done);
    case UV_FS_WRITE:
      return uv_fs_write(loop, req, f->fd, &buf, 1, f->offset, fs_done);
    case UV_FS_STAT:
      return uv_fs_stat(loop, req, f->path, fs_done);
    case UV_FS_FSTAT:
      return uv_fs_fstat(loop, req, f->fd, fs_done);
    case UV_FS_FSYNC:
      return uv_fs_fsync(loop, req, f->fd, fs_done);
    case UV_FS_UNLINK:
      return uv_fs_unlink(loop, req, f->path, fs_done);
    case UV_FS_RENAME:
      return uv_fs_rename(loop, req, f->path, f->path2, fs_done);
    case UV_FS_MKDIR:
      return uv_fs_mkdir(loop, req, f->path, f->mode, fs_done);
    case UV_FS_RMDIR:
      return uv_fs_rmdir(loop, req, f->path, fs_done);
    case UV_FS_SCANDIR:
      return uv_fs_scandir(loop, req, f->path, 0, fs_done);
    case UV_FS_SENDFILE:
      return uv_fs_sendfile(loop, req, f->fd, f->fd2, f->offset, f->len,
                            fs_done);
    case UV_FS_COPYFILE:
      return uv_fs_copyfile(loop, req, f->path, f->path2, f->flags, fs_done);
    default:
      return UV_EINVAL;
  }
}

/* scandir: one block, the array followed by the names in the same order.
 * uv_fs_scandir_next frees each entry as it goes, so the names are copied in
 * one pass into a block that may move as it grows; the pointers are set once
 * it has stopped moving. The loop runs on to UV_EOF: libuv 1.44's
 * uv_fs_req_cleanup leaks the last entry if iteration stops right after it.
 */
static int64_t dirents_copy(uv_fs_t* req, weft_uv_dirent_t** out) {
  size_t n = (size_t)req->result;
  size_t used = n * sizeof(weft_uv_dirent_t);
  size_t cap = used + n * 16;
  size_t i;
  size_t k;
  char* name;
  weft_uv_dirent_t* ents;
  uv_dirent_t ent;

  if (n == 0)
    return 0;
  ents = malloc(cap);
  if (ents == NULL)
    return UV_ENOMEM;
  for (i = 0; uv_fs_scandir_next(req, &ent) == 0 && i < n; i++) {
    size_t len = strlen(ent.name) + 1;
    if (used + len > cap) {
      weft_uv_dirent_t* grown = realloc(ents, 2 * (used + len));
      if (grown == NULL) {
        free(ents);
        return UV_ENOMEM;
      }
      ents = grown;
      cap = 2 * (used + len);
    }
    ents[i].type = ent.type;
    memcpy((char*)ents + used, ent.name, len);
    used += len;
  }
  name = (char*)(ents + n);
  for (k = 0; k < i; k++) {
    ents[k].name = name;
    name += strlen(name) + 1;
  }
  *out = ents;
  return (int64_t)i;
}

/* Moves a successful result into the caller's memory. Only while the fiber
 * still waits: it cannot return (and free that memory) before finish. */
static int64_t fs_copy_out(fs_op_t* f, int64_t result) {
  switch (f->type) {
    case UV_FS_READ:
      memcpy(f->out, f->data, (size_t)result);
      return result;
    case UV_FS_STAT:
    case UV_FS_FSTAT:
      memcpy(f->out, &f->req.statbuf, sizeof(uv_stat_t));
      return result;
    case UV_FS_SCANDIR:
      return dirents_copy(&f->req, f->out);
    default:
      return result;
  }
}

static void fs_done(uv_fs_t* req) {
  fs_op_t* f = req->data;
  uv_loop_t* loop = req->loop;
  int64_t result = req->result;
  bool live = weft__uv_op_live(&f->op);

  if (live) {
    if (result >= 0)
      result = fs_copy_out(f, result);
    weft__uv_op_finish(&f->op, result);
  }
  uv_fs_req_cleanup(req);
  if (!live && f->type == UV_FS_OPEN && result >= 0) {
    /* The fiber gave up on an open that then succeeded: nobody will ever
     * see this descriptor, so close it. That callback releases. */
    f->type = UV_FS_CLOSE;
    if (uv_fs_close(loop, req, (uv_file)result, fs_done) == 0)
      return;
  }
  weft__uv_op_release(&f->op);
}

static void fs_start(weft__uv_op_t* op, uv_loop_t* loop) {
  fs_op_t* f = (fs_op_t*)op;
  int err;

  f->req.data = f;
  err = fs_submit(f, loop);
  if (err < 0) {
    weft__uv_op_finish(op, err);
    uv_fs_req_cleanup(&f->req);
    weft__uv_op_release(op);
  }
}

static void fs_abort(weft__uv_op_t* op) {
  fs_op_t* f = (fs_op_t*)op;
  /* Succeeds only while the request still waits in the threadpool's queue;
   * either way its callback comes (UV_ECANCELED when this won) and drops
   * the loop's reference. */
  uv_cancel((uv_req_t*)&f->req);
}

static const weft__uv_ops_t fs_ops = {.start = fs_start, .abort = fs_abort};

/* ---- the fiber side ---------------------------------------------------------
 */

/* Checks the paths (`npaths` of them are required), then the calling
 * context, and allocates an operation holding copies of the paths and a
 * `data_len`-byte buffer. */
static int fs_new(uv_fs_type type, int npaths, const char* path,
                  const char* path2, size_t data_len, fs_op_t** out) {
  weft_uv_t* b;
  fs_op_t* f;
  size_t n1 = 0;
  size_t n2 = 0;
  int err;

  if ((npaths >= 1 && path == NULL) || (npaths >= 2 && path2 == NULL))
    return UV_EINVAL;
  err = weft__uv_current(&b);
  if (err != 0)
    return err;
  if (npaths >= 1)
    n1 = strlen(path) + 1;
  if (npaths >= 2)
    n2 = strlen(path2) + 1;
  f = weft__uv_op_new(b, sizeof(*f) + n1 + n2 + data_len, &fs_ops);
  if (f == NULL)
    return UV_ENOMEM;
  f->type = type;
  f->path = npaths >= 1 ? memcpy(f->mem, path, n1) : NULL;
  f->path2 = npaths >= 2 ? memcpy(f->mem + n1, path2, n2) : NULL;
  f->data = f->mem + n1 + n2;
  *out = f;
  return 0;
}

static int64_t fs_path_run(uv_fs_type type, int npaths, const char* path,
                           const char* path2, int flags, int mode, void* out,
                           uint64_t deadline) {
  fs_op_t* f;
  int err = fs_new(type, npaths, path, path2, 0, &f);

  if (err != 0)
    return err;
  f->flags = flags;
  f->mode = mode;
  f->out = out;
  return weft__uv_op_await(&f->op, deadline);
}

static int64_t fs_fd_run(uv_fs_type type, uv_file fd, void* out,
                         uint64_t deadline) {
  fs_op_t* f;
  int err = fs_new(type, 0, NULL, NULL, 0, &f);

  if (err != 0)
    return err;
  f->fd = fd;
  f->out = out;
  return weft__uv_op_await(&f->op, deadline);
}

/* read and write go through the op's own buffer: a write's data is copied
 * in now, a read's is copied out on success. */
static int64_t fs_io(uv_fs_type type, uv_file fd, const void* buf, size_t len,
                     int64_t offset, uint64_t deadline) {
  fs_op_t* f;
  int err;

  if (buf == NULL || offset < -1)
    return UV_EINVAL;
  if (len > FS_IO_MAX)
    len = FS_IO_MAX;
  err = fs_new(type, 0, NULL, NULL, len, &f);
  if (err != 0)
    return err;
  f->fd = fd;
  f->len = len;
  f->offset = offset;
  if (type == UV_FS_WRITE)
    memcpy(f->data, buf, len);
  else
    f->out = (void*)buf;
  return weft__uv_op_await(&f->op, deadline);
}

int weft_uv_fs_open(const char* path, int flags, int mode, uint64_t deadline) {
  return (int)fs_path_run(UV_FS_OPEN, 1, path, NULL, flags, mode, NULL,
                          deadline);
}

int weft_uv_fs_close(uv_file fd, uint64_t deadline) {
  return (int)fs_fd_run(UV_FS_CLOSE, fd, NULL, deadline);
}

int64_t weft_uv_fs_read(uv_file fd, void* buf, size_t len, int64_t offset,
                        uint64_t deadline) {
  return fs_io(UV_FS_READ, fd, buf, len, offset, deadline);
}

int64_t weft_uv_fs_write(uv_file fd, const void* buf, size_t len,
                         int64_t offset, uint64_t deadline) {
  return fs_io(UV_FS_WRITE, fd, buf, len, offset, deadline);
}

int weft_uv_fs_stat(const char* path, uv_stat_t* st, uint64_t deadline) {
  if (st == NULL)
    return UV_EINVAL;
  return (int)fs_path_run(UV_FS_STAT, 1, path, NULL, 0, 0, st, deadline);
}

int weft_uv_fs_fstat(uv_file fd, uv_stat_t* st, uint64_t deadline) {
  if (st == NULL)
    return UV_EINVAL;
  return (int)fs_fd_run(UV_FS_FSTAT, fd, st, deadline);
}

int weft_uv_fs_fsync(uv_file fd, uint64_t deadline) {
  return (int)fs_fd_run(UV_FS_FSYNC, fd, NULL, deadline);
}

int weft_uv_fs_unlink(const char* path, uint64_t deadline) {
  return (int)fs_path_run(UV_FS_UNLINK, 1, path, NULL, 0, 0, NULL, deadline);
}

int weft_uv_fs_rename(const char* from, const char* to, uint64_t deadline) {
  return (int)fs_path_run(UV_FS_RENAME, 2, from, to, 0, 0, NULL, deadline);
}

int weft_uv_fs_mkdir(const char* path, int mode, uint64_t deadline) {
  return (int)fs_path_run(UV_FS_MKDIR, 1, path, NULL, 0, mode, NULL, deadline);
}

int weft_uv_fs_rmdir(const char* path, uint64_t deadline) {
  return (int)fs_path_run(UV_FS_RMDIR, 1, path, NULL, 0, 0, NULL, deadline);
}

int weft_uv_fs_scandir(const char* path, weft_uv_dirent_t** out,
                       uint64_t deadline) {
  if (out == NULL)
    return UV_EINVAL;
  /* Stays NULL on error and for an empty directory. */
  *out = NULL;
  return (int)fs_path_run(UV_FS_SCANDIR, 1, path, NULL, 0, 0, out, deadline);
}

void weft_uv_dirents_free(weft_uv_dirent_t* ents) {
  free(ents);
}

/* libuv's sendfile has no "current position": in_offset -1 (like any
 * negative offset) is UV_EINVAL, as uv_fs_sendfile itself would report. */
int64_t weft_uv_fs_sendfile(uv_file out_fd, uv_file in_fd, int64_t in_offset,
                            size_t len, uint64_t deadline) {
  fs_op_t* f;
  int err;

  if (in_offset < 0)
    return UV_EINVAL;
  err = fs_new(UV_FS_SENDFILE, 0, NULL, NULL, 0, &f);
  if (err != 0)
    return err;
  f->fd = out_fd;
  f->fd2 = in_fd;
  f->offset = in_offset;
  f->len = len > FS_IO_MAX ? FS_IO_MAX : len;
  return weft__uv_op_await(&f->op, deadline);
}

int weft_uv_fs_copyfile(const char* from, const char* to, int flags,
                        uint64_t deadline) {
  return (int)fs_path_run(UV_FS_COPYFILE, 2, from, to, flags, 0, NULL,
                          deadline);
}
