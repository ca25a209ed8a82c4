/* weft/uv_stream.h: TCP, pipes and Unix domain sockets for fibers. Included
 * by weft_uv.h; see there for the conventions.
 *
 * One opaque type, weft_uv_stream_t, stands for a connection (TCP or pipe)
 * and for a listener. Its libuv handle lives on the bridge's loop thread;
 * fibers only ever hold the pointer. Each connection reads ahead into a
 * buffer of WEFT_UV_READ_AHEAD bytes once its first read was made, and stops
 * reading from the kernel while that buffer is full (backpressure).
 *
 * Ownership: a stream returned by a listen, accept, connect or open belongs
 * to the caller until weft_uv_stream_close(), which must be called exactly
 * once for every stream, even after weft_uv_stop (the bridge closes the
 * libuv handles when it stops, but the memory stays the caller's to free).
 * Several fibers may use one stream at once: reads are served in arrival
 * order, and so are writes (one write's bytes are never interleaved with
 * another's).
 */
#ifndef WEFT_UV_STREAM_H_
#define WEFT_UV_STREAM_H_

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "weft.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_uv_stream_s weft_uv_stream_t;

/* The bound on each connection's read-ahead buffer, in bytes. */
#define WEFT_UV_READ_AHEAD (64 * 1024)

/* ---- listeners ---------------------------------------------------------- */

/* weft_uv_tcp_listen: binds a TCP listener to `addr` (AF_INET or AF_INET6;
 * port 0 picks a free port, see weft_uv_stream_sockname) with SO_REUSEADDR
 * and listens with `backlog` (<= 0: SOMAXCONN). Returns 0 and the listener
 * in *out, or UV_EINVAL (NULL, other families), UV_EADDRINUSE,
 * UV_EADDRNOTAVAIL, UV_EMFILE, ... Fiber only. */
WEFT_EXTERN int weft_uv_tcp_listen(const struct sockaddr* addr, int backlog,
                                   weft_uv_stream_t** out);

/* weft_uv_pipe_listen: binds a Unix domain socket listener to the path
 * `name` (which must not exist; it is unlinked again when the listener
 * closes). Returns 0 and *out, or UV_EINVAL, UV_ENAMETOOLONG, UV_EADDRINUSE,
 * ... Fiber only. */
WEFT_EXTERN int weft_uv_pipe_listen(const char* name, int backlog,
                                    weft_uv_stream_t** out);

/* weft_uv_tcp_accept: waits for the next connection on a TCP listener.
 * Returns 0 and the new connection in *out (the caller's), or UV_EINVAL
 * (NULL, not a TCP listener), UV_ETIMEDOUT, UV_ECANCELED (cancelled,
 * listener closed, bridge stopped). While the process is out of file
 * descriptors (EMFILE, ENFILE) the listener backs off and retries every few
 * milliseconds; the connection stays queued in the kernel and the caller
 * simply keeps waiting. Connections are only taken from the kernel while a
 * fiber waits in accept. Several fibers may accept on one listener. Fiber
 * only. */
WEFT_EXTERN int weft_uv_tcp_accept(weft_uv_stream_t* listener,
                                   weft_uv_stream_t** out, uint64_t deadline);

/* weft_uv_pipe_accept: weft_uv_tcp_accept for a pipe listener (each
 * returns UV_EINVAL for the other kind). Fiber only. */
WEFT_EXTERN int weft_uv_pipe_accept(weft_uv_stream_t* listener,
                                    weft_uv_stream_t** out, uint64_t deadline);

/* ---- connecting ----------------------------------------------------------
 */

/* weft_uv_tcp_connect: connects to `addr` (AF_INET or AF_INET6). Returns 0
 * and the connection in *out, or UV_EINVAL, UV_ECONNREFUSED, UV_ENETUNREACH,
 * UV_ETIMEDOUT (the deadline), UV_ECANCELED, ... Fiber only. */
WEFT_EXTERN int weft_uv_tcp_connect(const struct sockaddr* addr,
                                    weft_uv_stream_t** out, uint64_t deadline);

/* weft_uv_pipe_connect: connects to the Unix domain socket at `name`.
 * Returns 0 and *out, or UV_EINVAL, UV_ENOENT, UV_ECONNREFUSED, UV_ETIMEDOUT,
 * UV_ECANCELED, ... Fiber only. */
WEFT_EXTERN int weft_uv_pipe_connect(const char* name, weft_uv_stream_t** out,
                                     uint64_t deadline);

/* weft_uv_pipe_open: wraps an open file descriptor (a pipe end or a
 * connected socket) in a stream, which then owns it: weft_uv_stream_close
 * closes the fd. Returns 0 and *out, or UV_EINVAL, UV_EBADF, ... Fiber
 * only. */
WEFT_EXTERN int weft_uv_pipe_open(uv_file fd, weft_uv_stream_t** out);

/* ---- connections ---------------------------------------------------------
 */

/* weft_uv_stream_read: reads up to `len` (> 0) bytes into `buf`, waiting
 * until at least one byte is there. Returns the byte count, 0 at end of
 * stream (every later read returns 0 again), or UV_EINVAL (NULL, len 0, a
 * listener), UV_ECONNRESET and other read errors (reported once the bytes
 * read before them are consumed), UV_ETIMEDOUT, UV_ECANCELED (cancelled,
 * stream closed, bridge stopped). `buf` is the caller's; the bridge writes
 * to it only while the call waits. Fiber only. */
WEFT_EXTERN int64_t weft_uv_stream_read(weft_uv_stream_t* s, void* buf,
                                        size_t len, uint64_t deadline);

/* weft_uv_stream_write: writes all `len` bytes of `buf` and returns `len`
 * once the kernel has taken them, or an error: UV_EINVAL, UV_EPIPE,
 * UV_ECONNRESET, UV_ETIMEDOUT, UV_ECANCELED. The call blocks while the
 * peer does not read (kernel buffers full). After an error, an unknown
 * prefix of the bytes was sent; the stream stays usable, and a write cut
 * short by its deadline or a cancel may still send at most
 * WEFT_UV_WRITE_CHUNK more bytes of it (the bridge copies them, so `buf` is
 * the caller's again as soon as the call returns). Fiber only. */
#define WEFT_UV_WRITE_CHUNK (64 * 1024)
WEFT_EXTERN int64_t weft_uv_stream_write(weft_uv_stream_t* s, const void* buf,
                                         size_t len, uint64_t deadline);

/* weft_uv_stream_shutdown: half-closes the write side once the bytes of
 * writes that have returned are sent (the peer then reads end of stream).
 * Returns 0 or UV_EINVAL, UV_ENOTCONN, UV_ETIMEDOUT, UV_ECANCELED. Fiber
 * only. */
WEFT_EXTERN int weft_uv_stream_shutdown(weft_uv_stream_t* s, uint64_t deadline);

/* weft_uv_stream_close: closes a stream (connection or listener): every
 * fiber waiting on it returns UV_ECANCELED, and its memory is freed once
 * libuv's close callback has run and no call still uses it. Call it exactly
 * once per stream, also after the bridge stopped; the pointer is invalid
 * afterwards. Does not suspend; returns 0, UV_EINVAL (NULL) or UV_ENOMEM
 * (nothing happened). Any thread. */
WEFT_EXTERN int weft_uv_stream_close(weft_uv_stream_t* s);

/* weft_uv_stream_sockname / weft_uv_stream_peername: the local / remote
 * address (for pipes a sockaddr_un) in *addr and its length in *len.
 * Returns 0 or UV_EINVAL, UV_ENOTCONN, UV_ECANCELED (closed). Fiber only. */
WEFT_EXTERN int weft_uv_stream_sockname(weft_uv_stream_t* s,
                                        struct sockaddr_storage* addr,
                                        int* len);
WEFT_EXTERN int weft_uv_stream_peername(weft_uv_stream_t* s,
                                        struct sockaddr_storage* addr,
                                        int* len);

/* weft_uv_stream_fileno: the stream's socket or pipe descriptor, for
 * setsockopt and the like (never read or write it directly). Valid until
 * the stream is closed or the bridge stops. Returns 0 or UV_EINVAL. Any
 * thread. */
WEFT_EXTERN int weft_uv_stream_fileno(weft_uv_stream_t* s, uv_os_fd_t* fd);

/* weft_uv_stream_buffered: the bytes read ahead and not yet consumed (at
 * most WEFT_UV_READ_AHEAD), for diagnostics. Returns that count or
 * UV_EINVAL, UV_ECANCELED. Fiber only. */
WEFT_EXTERN int64_t weft_uv_stream_buffered(weft_uv_stream_t* s);

/* weft_uv_tcp_nodelay: turns Nagle's algorithm off (on != 0) or on.
 * weft_uv_tcp_keepalive: turns TCP keep-alive on with the first probe after
 * `delay` seconds (ignored when off). Each returns 0 or UV_EINVAL (NULL,
 * not a TCP connection), UV_ECANCELED, a setsockopt error. Fiber only. */
WEFT_EXTERN int weft_uv_tcp_nodelay(weft_uv_stream_t* s, int on);
WEFT_EXTERN int weft_uv_tcp_keepalive(weft_uv_stream_t* s, int on,
                                      unsigned delay);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_UV_STREAM_H_ */
