/* weft_uv: fibers await libuv I/O; weft embeds in libuv servers.
 *
 * A bridge gives a runtime one libuv loop thread: its own (weft_uv_start)
 * or a host server's (weft_uv_attach). A fiber that calls one of the
 * awaitable functions below posts an operation to the loop thread and
 * suspends; the libuv callback makes it ready again on the workers. Only the
 * loop thread touches libuv handles, and it never runs fiber code.
 *
 * Conventions: awaitable functions ("fiber only") return a byte count or 0
 * on success and libuv's negative error code (UV_E*) on failure; called off
 * a weft fiber they return UV_EPERM, and with no bridge started UV_EINVAL.
 * Each takes an absolute deadline (weft_uv_deadline_in(), or
 * WEFT_UV_FOREVER) and returns UV_ETIMEDOUT when it passes; weft_uv_cancel()
 * makes it return UV_ECANCELED, as does stopping the bridge.
 */
#ifndef WEFT_UV_H_
#define WEFT_UV_H_

#include <uv.h>

#include "weft.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_uv_s weft_uv_t;

/* Deadlines are absolute times on uv_hrtime()'s clock, in nanoseconds. */
#define WEFT_UV_FOREVER ((uint64_t)0)

/* weft_uv_deadline_in: the deadline `ms` milliseconds from now. Any
 * thread. */
WEFT_EXTERN uint64_t weft_uv_deadline_in(uint64_t ms);

/* ---- bridges ------------------------------------------------------------ */

/* weft_uv_start: gives `rt` a loop thread of its own running a new
 * uv_loop_t. One bridge per runtime. Returns 0 and the bridge in *out, or
 * UV_EINVAL (NULL, or rt already has a bridge), UV_ENOMEM, or a uv_loop_init
 * error. Any plain thread. */
WEFT_EXTERN int weft_uv_start(weft_runtime_t* rt, weft_uv_t** out);

/* weft_uv_attach: installs the bridge into a host's `loop` (embedded
 * mode). Must be called on the loop's thread. The bridge's handles are
 * unref'd, so they never keep the host's uv_run alive, and weft never calls
 * uv_run, uv_walk or uv_loop_close on it. Returns 0 or UV_EINVAL,
 * UV_ENOMEM. */
WEFT_EXTERN int weft_uv_attach(weft_runtime_t* rt, uv_loop_t* loop,
                               weft_uv_t** out);

/* weft_uv_stop: cancels every pending operation (its fiber gets
 * UV_ECANCELED), closes the bridge's handles and, in owned mode, stops and
 * joins the loop thread and closes its loop. In embedded mode call it on
 * the loop thread; the host's loop then finishes the handles' close
 * callbacks on its next turn. Later operations return UV_ECANCELED. The
 * bridge's memory lives until the runtime is destroyed, which also stops a
 * bridge still running. Returns 0 or UV_EINVAL (NULL, not on the loop
 * thread in embedded mode, from a fiber in owned mode). */
WEFT_EXTERN int weft_uv_stop(weft_uv_t* b);

/* weft_uv_loop: the bridge's loop (for the loop thread's own use). */
WEFT_EXTERN uv_loop_t* weft_uv_loop(weft_uv_t* b);

/* weft_uv_self: the bridge of the runtime running the calling fiber, or
 * NULL. */
WEFT_EXTERN weft_uv_t* weft_uv_self(void);

/* ---- offloading work from a libuv server ----------------------------------
 */

/* Called on the loop thread once a submitted job has returned; status is 0,
 * or UV_ECANCELED if the bridge stopped first (the job still ran). */
typedef void (*weft_uv_after_cb)(void* arg, int status);

/* weft_uv_submit: runs fn(arg) as a weft job (it may spawn jobs and await
 * I/O), then after_cb(arg, status) on the loop thread: a work-stealing
 * replacement for uv_queue_work. Loop thread only. Returns 0, UV_EINVAL,
 * UV_ENOMEM or UV_ECANCELED (bridge stopped; nothing runs). */
WEFT_EXTERN int weft_uv_submit(weft_uv_t* b, weft_job_cb fn, void* arg,
                               weft_uv_after_cb after_cb);

/* ---- cancellation -----------------------------------------------------------
 */

/* Names one job's fiber for weft_uv_cancel, for as long as that job runs. */
typedef struct weft_uv_job_s {
  void* fiber_;
  uint64_t gen_;
} weft_uv_job_t;

/* weft_uv_job_self: the calling job's name (fiber only; zeroed elsewhere).
 */
WEFT_EXTERN weft_uv_job_t weft_uv_job_self(void);

/* weft_uv_cancel: if that job is blocked in a bridge operation, makes the
 * operation return UV_ECANCELED. Any thread. Returns 0 when the request was
 * posted (a job no longer blocked is left alone), UV_EINVAL. */
WEFT_EXTERN int weft_uv_cancel(weft_uv_t* b, weft_uv_job_t job);

/* ---- timers ---------------------------------------------------------------
 */

/* weft_uv_sleep: suspends the fiber for `ms` milliseconds (the deadline
 * cuts it short with UV_ETIMEDOUT). Fiber only. Returns 0 or an error. */
WEFT_EXTERN int weft_uv_sleep(uint64_t ms, uint64_t deadline);

/* ---- the escape hatch: any other libuv operation ----------------------------
 */

typedef struct weft_uv_req_s weft_uv_req_t;

/* Runs on the loop thread: start an operation on `loop` and return 0, then
 * call weft_uv_complete(req, result) from its callback (also on the loop
 * thread); or return a negative error to fail at once. */
typedef int (*weft_uv_start_cb)(uv_loop_t* loop, weft_uv_req_t* req, void* arg);
/* Runs on the loop thread when the waiting fiber gave up (deadline, cancel,
 * bridge stop): make the operation end soon (uv_cancel, uv_close, ...). It
 * must still call weft_uv_complete, whose result is then dropped. May be
 * NULL when the operation ends on its own. */
typedef void (*weft_uv_abort_cb)(weft_uv_req_t* req, void* arg);

/* weft_uv_call: runs start(loop, req, arg) on the loop thread and suspends
 * until weft_uv_complete(req, result); returns that result (or
 * UV_ETIMEDOUT, UV_ECANCELED). `arg` must stay valid until complete is
 * called, which may be after a deadline made weft_uv_call return: keep it
 * on the heap when a deadline or cancellation is possible. Fiber only. */
WEFT_EXTERN int64_t weft_uv_call(weft_uv_start_cb start,
                                 weft_uv_abort_cb abort_cb, void* arg,
                                 uint64_t deadline);

/* weft_uv_complete: ends an operation started by weft_uv_call. Loop thread
 * only; exactly once per started operation. */
WEFT_EXTERN void weft_uv_complete(weft_uv_req_t* req, int64_t result);

/* ---- files ------------------------------------------------------------------
 */

/* Each returns what the matching uv_fs_* request's result would be: a file
 * descriptor for open, a byte count for read/write/sendfile (short counts
 * are returned as they are), 0 otherwise, or a UV_E* error. For read and
 * write, `offset` -1 means the current position; sendfile needs a real
 * offset (libuv has no current-position form). Reads and writes go through
 * a buffer the operation owns, so libuv never touches the caller's memory
 * after a deadline or cancellation made the call return. Fiber only. */
WEFT_EXTERN int weft_uv_fs_open(const char* path, int flags, int mode,
                                uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_close(uv_file fd, uint64_t deadline);
WEFT_EXTERN int64_t weft_uv_fs_read(uv_file fd, void* buf, size_t len,
                                    int64_t offset, uint64_t deadline);
WEFT_EXTERN int64_t weft_uv_fs_write(uv_file fd, const void* buf, size_t len,
                                     int64_t offset, uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_stat(const char* path, uv_stat_t* st,
                                uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_fstat(uv_file fd, uv_stat_t* st, uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_fsync(uv_file fd, uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_unlink(const char* path, uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_rename(const char* from, const char* to,
                                  uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_mkdir(const char* path, int mode, uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_rmdir(const char* path, uint64_t deadline);
/* weft_uv_fs_scandir: the names in a directory (not "." and ".."), and
 * their types, as one malloc'd block freed with weft_uv_dirents_free.
 * Returns the number of entries or an error. */
typedef struct weft_uv_dirent_s {
  const char* name;
  uv_dirent_type_t type;
} weft_uv_dirent_t;
WEFT_EXTERN int weft_uv_fs_scandir(const char* path, weft_uv_dirent_t** out,
                                   uint64_t deadline);
WEFT_EXTERN void weft_uv_dirents_free(weft_uv_dirent_t* ents);
WEFT_EXTERN int64_t weft_uv_fs_sendfile(uv_file out_fd, uv_file in_fd,
                                        int64_t in_offset, size_t len,
                                        uint64_t deadline);
WEFT_EXTERN int weft_uv_fs_copyfile(const char* from, const char* to, int flags,
                                    uint64_t deadline);

#ifdef __cplusplus
}
#endif

/* The other families, one header each. */
#include "weft/uv_stream.h" /* TCP, pipes and Unix domain sockets */
#include "weft/uv_extra.h"  /* UDP, DNS, child processes, signals */

#endif /* WEFT_UV_H_ */
