/* weft/uv_extra.h: UDP, DNS, child processes and signals for fibers.
 * Included by weft_uv.h; see there for the conventions. */
#ifndef WEFT_UV_EXTRA_H_
#define WEFT_UV_EXTRA_H_

#ifdef __cplusplus
extern "C" {
#endif

/* ---- UDP --------------------------------------------------------------------
 */

typedef struct weft_uv_udp_s weft_uv_udp_t;

/* Datagrams a socket keeps while no fiber waits in weft_uv_udp_recv. When
 * one more arrives the oldest kept one is dropped (see
 * weft_uv_udp_dropped). */
#define WEFT_UV_UDP_BACKLOG 32

/* weft_uv_udp_bind: opens a UDP socket bound to `addr` (IPv4 or IPv6; port
 * 0 picks one, see weft_uv_udp_sockname) with uv_udp_bind's `flags`
 * (UV_UDP_IPV6ONLY, UV_UDP_REUSEADDR). The socket receives from then on.
 * Returns 0 and the socket in *out, or UV_EINVAL, UV_ENOMEM, UV_ECANCELED
 * (bridge stopped), a bind error (UV_EADDRINUSE, ...). Fiber only; suspends.
 * Close it with weft_uv_udp_close, which frees it; the bridge stopping
 * closes the socket but not the memory. */
WEFT_EXTERN int weft_uv_udp_bind(const struct sockaddr* addr, unsigned flags,
                                 weft_uv_udp_t** out);

/* weft_uv_udp_send: sends one datagram of `len` bytes to `to`. The data is
 * copied: `buf` may be reused once the call returns, even after a
 * deadline. Returns len, or UV_EINVAL, UV_EBADF (socket closed), a send
 * error, UV_ETIMEDOUT, UV_ECANCELED. Fiber only; suspends. */
WEFT_EXTERN int weft_uv_udp_send(weft_uv_udp_t* u, const void* buf, size_t len,
                                 const struct sockaddr* to, uint64_t deadline);

/* weft_uv_udp_recv: the next datagram: the oldest kept in the backlog, or
 * else the next to arrive (fibers waiting on one socket are served in
 * order). Copies at most `len` bytes into buf (the rest of a longer
 * datagram is lost) and, unless `from` is NULL, the sender's address.
 * Returns the bytes copied, or UV_EINVAL, UV_EBADF (socket closed), a
 * socket error, UV_ETIMEDOUT, UV_ECANCELED (cancelled, bridge stopped, or
 * the socket closed while waiting). Fiber only; suspends. */
WEFT_EXTERN int weft_uv_udp_recv(weft_uv_udp_t* u, void* buf, size_t len,
                                 struct sockaddr_storage* from,
                                 uint64_t deadline);

/* weft_uv_udp_sockname: the address the socket is bound to (with the port
 * the system chose). Returns 0 or UV_EINVAL. Any thread. */
WEFT_EXTERN int weft_uv_udp_sockname(const weft_uv_udp_t* u,
                                     struct sockaddr_storage* name);

/* weft_uv_udp_dropped: how many datagrams arrived while the backlog was
 * full (the oldest was dropped) or memory was short. Any thread; a
 * snapshot. */
WEFT_EXTERN uint64_t weft_uv_udp_dropped(const weft_uv_udp_t* u);

/* weft_uv_udp_close: closes the socket and frees it: fibers waiting in
 * recv on it return UV_ECANCELED, and calls that start afterwards on
 * another fiber UV_EBADF; `u` must not be passed to any call once close has
 * returned. Returns 0 (also when the bridge had stopped and closed it
 * already), or UV_EPERM, UV_EINVAL, UV_ENOMEM, which leave u open. Fiber
 * only; suspends. */
WEFT_EXTERN int weft_uv_udp_close(weft_uv_udp_t* u);

/* ---- DNS --------------------------------------------------------------------
 */

/* weft_uv_getaddrinfo: resolves `node` and/or `service` like
 * getaddrinfo(3) (on libuv's threadpool); of `hints` (may be NULL) only
 * ai_flags, ai_family, ai_socktype and ai_protocol are read. Returns 0 and
 * the list in *res, to free with weft_uv_freeaddrinfo; or UV_EINVAL (res
 * NULL, or both names NULL), UV_ENOMEM, a UV_EAI_* code (UV_EAI_NONAME: no
 * such name), UV_ETIMEDOUT, UV_ECANCELED, with *res NULL. The strings are
 * copied. Fiber only; suspends. */
WEFT_EXTERN int weft_uv_getaddrinfo(const char* node, const char* service,
                                    const struct addrinfo* hints,
                                    struct addrinfo** res, uint64_t deadline);

/* weft_uv_freeaddrinfo: frees a list from weft_uv_getaddrinfo (NULL is
 * fine). Any thread. */
WEFT_EXTERN void weft_uv_freeaddrinfo(struct addrinfo* ai);

/* weft_uv_getnameinfo: the host and service names of an IPv4 or IPv6
 * address, like getnameinfo(3) with `flags` (NI_NUMERICHOST, ...). Either
 * buffer may be NULL when not wanted (not both); each gets a
 * NUL-terminated string. Returns 0, or UV_EINVAL, UV_ENOMEM, UV_ENOSPC (a
 * buffer too small), a UV_EAI_* code, UV_ETIMEDOUT, UV_ECANCELED. Fiber
 * only; suspends. */
WEFT_EXTERN int weft_uv_getnameinfo(const struct sockaddr* addr, int flags,
                                    char* host, size_t hostlen, char* service,
                                    size_t servlen, uint64_t deadline);

/* ---- child processes --------------------------------------------------------
 */

typedef struct weft_uv_process_s weft_uv_process_t;

/* What a child's fd 0, 1 or 2 is. */
typedef enum {
  WEFT_UV_STDIO_INHERIT = 0, /* the parent's same fd */
  WEFT_UV_STDIO_IGNORE,      /* /dev/null */
  WEFT_UV_STDIO_PIPE         /* a pipe: see weft_uv_process_stdio */
} weft_uv_stdio_t;

/* What weft_uv_spawn runs. Zero it, then fill it in. */
typedef struct weft_uv_process_options_s {
  const char* file;  /* the program, looked up in PATH like execvp */
  const char** args; /* NULL-terminated argv (=NULL: {file, NULL}) */
  const char** env;  /* NULL-terminated "NAME=value"s (=NULL: ours) */
  const char* cwd;   /* (=NULL: ours) */
  weft_uv_stdio_t stdio[3];
} weft_uv_process_options_t;

/* weft_uv_spawn: starts a child process as `opts` describes (copied: the
 * caller's strings are its own again when the call returns). Returns 0
 * and the process in *out, or UV_EINVAL (NULL opts, file or out, a bad
 * stdio value), UV_ENOMEM, UV_ECANCELED (bridge stopped), UV_ENOENT (no
 * such program), UV_EACCES, ... with *out NULL. Fiber only; suspends.
 * Close it with weft_uv_process_close, which frees it; the pipes are
 * streams of their own (weft_uv_process_stdio). */
WEFT_EXTERN int weft_uv_spawn(const weft_uv_process_options_t* opts,
                              weft_uv_process_t** out);

/* weft_uv_process_stdio: the stream of the child's fd (0: write to its
 * stdin; 1, 2: read its stdout, stderr) if opts made it a pipe, else NULL.
 * The stream is the caller's: use it with weft_uv_stream_read/write/
 * shutdown, and close it with weft_uv_stream_close exactly once, before or
 * after the process. Any thread. */
WEFT_EXTERN weft_uv_stream_t* weft_uv_process_stdio(const weft_uv_process_t* p,
                                                    int fd);

/* weft_uv_process_wait: waits until the child exits (returns at once if
 * it has) and stores its exit status and the signal that ended it (0 if
 * none), either pointer may be NULL. Several fibers may wait. Returns 0, or
 * UV_EINVAL, UV_EBADF (closed before it exited), UV_ETIMEDOUT, UV_ECANCELED
 * (cancelled, bridge stopped, or the process closed while waiting). Fiber
 * only; suspends. */
WEFT_EXTERN int weft_uv_process_wait(weft_uv_process_t* p, int64_t* exit_status,
                                     int* term_signal, uint64_t deadline);

/* weft_uv_process_kill: sends signal `signum` to the child. Returns 0, or
 * UV_EINVAL, UV_ESRCH (it has exited, or the process is closed: a pid
 * reaped may be reused, so weft never signals one), a kill(2) error.
 * Fiber only; suspends briefly. */
WEFT_EXTERN int weft_uv_process_kill(weft_uv_process_t* p, int signum);

/* weft_uv_process_pid: the child's pid, or UV_EINVAL. Any thread. */
WEFT_EXTERN int weft_uv_process_pid(const weft_uv_process_t* p);

/* weft_uv_process_close: frees the process: fibers waiting in
 * weft_uv_process_wait on it return UV_ECANCELED. It neither kills nor
 * waits for the child: a child still running keeps running and is no
 * longer reaped by libuv, so kill and wait first. `p` must not be passed to
 * any call once close has returned. Returns 0 (also after the bridge
 * stopped), or UV_EPERM, UV_EINVAL, UV_ENOMEM, which leave p open. Fiber
 * only; suspends. */
WEFT_EXTERN int weft_uv_process_close(weft_uv_process_t* p);

/* ---- signals ----------------------------------------------------------------
 */

/* weft_uv_signal_wait: waits until signal `signum` is delivered to the
 * process. Every fiber waiting on signum when it arrives returns 0. While
 * any fiber waits, libuv's handler replaces the signal's disposition; when
 * the last waiter returns, libuv restores the default one (SIG_DFL, not a
 * handler the program had installed), so a signal arriving while nobody
 * waits takes its default action. Returns 0, or UV_EINVAL (not a signal
 * number, or one that cannot be caught), UV_ENOMEM, UV_ETIMEDOUT,
 * UV_ECANCELED. Fiber only; suspends. */
WEFT_EXTERN int weft_uv_signal_wait(int signum, uint64_t deadline);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_UV_EXTRA_H_ */
